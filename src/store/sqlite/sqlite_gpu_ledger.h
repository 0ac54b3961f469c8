#pragma once

// The GPU-time ledger of the SQLite store (table gpu_intervals; Store "GPU-time ledger"), kept
// apart from sqlite_store.cc. Internal to the store: SqliteStore calls these with its mutex held,
// inside the transaction that wrote the instance or worker row, so the ledger and the rows it
// follows never disagree.

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "store/store.h"

namespace segma::store {

// How an interval that must close is closed.
enum class LedgerClose {
  kNow,       // at `now`: the instance left RUNNING (or was deleted) while its worker was heard
  kLastSeen,  // at its last_seen: the worker was lost, or the server did not see the end
};

// Brings the open intervals of instance `instance_id` in line with its stored row (read after
// the caller wrote or deleted it): one open interval per worker it holds GPUs on while it is
// RUNNING there and that worker is not lost; an interval whose worker, GPUs or VRAM changed is
// closed and a new one opened. Intervals that must end close as `how` says.
Status SqliteLedgerSyncInstance(sqlite3* db, int64_t instance_id, Timestamp now,
                                LedgerClose how = LedgerClose::kNow);

// After worker `worker_id`'s row was written or deleted: a NOT_READY, UNREACHABLE or deleted
// worker's open intervals close at their last_seen; otherwise their last_seen becomes the
// worker's last heartbeat, and its RUNNING instances that lack an open interval on it get one.
Status SqliteLedgerSyncWorker(sqlite3* db, int64_t worker_id, Timestamp now);

// At store open: closes at last_seen the open intervals whose instance is gone or no longer
// RUNNING; the others keep counting.
Status SqliteLedgerRecover(sqlite3* db, Timestamp now);

// Store::ListGpuIntervals on `db`.
Result<std::vector<GpuInterval>> SqliteListGpuIntervals(
    sqlite3* db, Timestamp from, Timestamp to,
    const std::optional<std::vector<int64_t>>& project_ids);

}  // namespace segma::store
