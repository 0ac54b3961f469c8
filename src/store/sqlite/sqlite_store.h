#pragma once

#include <memory>
#include <string>

#include "common/clock.h"
#include "common/event_bus.h"
#include "common/status.h"
#include "store/store.h"

namespace segma::store {

// Opens (creating it with mode 0600 if absent) the SQLite database at `path` (":memory:" for a
// private in-memory one), turns on WAL, foreign keys and a busy timeout, and applies every
// embedded migration the database lacks, each in its own transaction.
// Returns kFailedPrecondition if the database's schema version is newer than this binary knows
// ("database schema version 7 is newer than this segma (5)"), kUnavailable if the file cannot be
// opened or a migration fails (nothing of that migration is applied).
// `bus` and `clock` must outlive the store. The store is thread-safe (one connection, one mutex).
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, EventBus& bus,
                                               const Clock& clock = SystemClock::Get());

// The highest migration version compiled into this binary.
int LatestSchemaVersion();

}  // namespace segma::store
