#pragma once

// Small helpers shared by the SQLite store's translation units.

#include <sqlite3.h>

#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace segma::store {

using SqliteStmt = std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)>;

// The connection's last error as a Status: busy, locked, I/O, full or read-only database →
// kUnavailable (worth a retry), anything else → kInternal. "<what>: <sqlite message>".
Status SqliteError(sqlite3* db, std::string_view what);

// Prepares `sql`; on failure SqliteError(db, what).
Result<SqliteStmt> SqlitePrepare(sqlite3* db, std::string_view sql, std::string_view what);

// Binds `v` as UTF-8 text (copied by SQLite).
void SqliteBindText(sqlite3_stmt* s, int i, std::string_view v);

// Column `i` of the current row as a string ("" for NULL).
std::string SqliteColumnText(sqlite3_stmt* s, int i);

}  // namespace segma::store
