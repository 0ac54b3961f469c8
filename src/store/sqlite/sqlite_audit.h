#pragma once

// The audit-trail part of the SQLite store (section "audit trail" of store.h), kept apart from
// sqlite_store.cc. Internal to the store: SqliteStore calls these with its mutex held, inside its
// transactions where noted.

#include <sqlite3.h>

#include <cstdint>

#include "common/status.h"
#include "store/store.h"

namespace segma::store {

// Store::AppendAuditEvent at time `now`. Must run inside a transaction (the caller's), so that
// reading the last hash and inserting the row are one step.
Result<AuditEvent> SqliteAppendAuditEvent(sqlite3* db, const AuditEvent& event, Timestamp now);
Result<ListResult<AuditEvent>> SqliteListAuditEvents(sqlite3* db, const ListOptions& options,
                                                     const AuditFilter& filter);
Result<AuditVerification> SqliteVerifyAuditChain(sqlite3* db);
// Store::PruneAuditEvents. Must run inside a transaction (the caller's).
Result<int64_t> SqlitePruneAuditEvents(sqlite3* db, Timestamp before);

}  // namespace segma::store
