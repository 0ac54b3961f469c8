#pragma once

// The price table of the SQLite store (tables prices and price_settings; Store "prices"), kept
// apart from sqlite_store.cc. Internal to the store: SqliteStore calls these with its mutex held.

#include <sqlite3.h>

#include "common/clock.h"
#include "common/status.h"
#include "store/store.h"

namespace segma::store {

// Store::GetPrices on `db`.
Result<PriceTable> SqliteGetPrices(sqlite3* db);
// Store::ReplacePrices on `db`, stamping updated_at = `now`, in one transaction.
Result<PriceTable> SqliteReplacePrices(sqlite3* db, const PriceTable& table, Timestamp now);

}  // namespace segma::store
