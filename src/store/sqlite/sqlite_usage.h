#pragma once

// The usage-records and usage-report part of the SQLite store (section "usage records" of store.h),
// kept apart from sqlite_store.cc. Internal to the store: SqliteStore calls these with its mutex
// held.

#include <sqlite3.h>

#include <vector>

#include "common/status.h"
#include "store/store.h"

namespace segma::store {

// Store::InsertUsageRecords on `db`. The caller serialises access to `db`.
Status SqliteInsertUsageRecords(sqlite3* db, const std::vector<UsageRecord>& batch);
// Store::QueryUsage on `db`; open GPU intervals count up to `now`. The caller serialises access
// to `db`.
Result<std::vector<UsageSummary>> SqliteQueryUsage(sqlite3* db, const UsageQuery& query,
                                                   Timestamp now);

}  // namespace segma::store
