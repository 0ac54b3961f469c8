#pragma once

// Small helpers shared by the SQLite store's translation units.

#include <sqlite3.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "store/store.h"

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

// The page and order of a list request, checked against a resource's sortable fields.
struct SqlitePage {
  std::string sort;  // one of the sortable fields; "id" when the request names none
  bool descending = false;
  int64_t limit = 0;  // per_page, clamped to ListOptions::kMaxPerPage
  int64_t offset = 0;

  // " ORDER BY <alias>.<sort> ASC|DESC, <alias>.id LIMIT <limit> OFFSET <offset>" (ties by id).
  std::string OrderAndLimit(std::string_view alias) const;
};

// kInvalidArgument when page or per_page is below 1, or when the sort field is not one of
// `sortable` ("sort must be one of <sortable>").
Result<SqlitePage> SqlitePageOf(const ListOptions& options,
                                std::initializer_list<std::string_view> sortable);

// Steps `s`, a bound SELECT COUNT(*), and returns the count; on failure SqliteError(db, what).
Result<int64_t> SqliteCount(sqlite3* db, sqlite3_stmt* s, std::string_view what);

// The pattern for `LOWER(column) LIKE ? ESCAPE '\'` that matches rows containing `q`: "%q%" with q
// lower-cased (ASCII letters) and its %, _ and \ escaped.
std::string SqliteLikePattern(std::string_view q);

}  // namespace segma::store
