#pragma once

// The model-files part of the SQLite store (section "model files" of store.h), kept apart from
// sqlite_store.cc. Internal to the store: SqliteStore calls these with its mutex held and
// publishes the events.

#include <sqlite3.h>

#include <optional>

#include "common/status.h"
#include "store/store.h"
#include "types/model_file.h"

namespace segma::store {

Result<types::ModelFile> SqliteUpsertModelFile(sqlite3* db, const types::ModelFile& file,
                                               Timestamp now);
Result<types::ModelFile> SqliteGetModelFile(sqlite3* db, int64_t id);
Result<ListResult<types::ModelFile>> SqliteListModelFiles(sqlite3* db, const ListOptions& options,
                                                          std::optional<int64_t> worker_id);
Result<types::ModelFile> SqliteSetModelFileState(sqlite3* db, int64_t id,
                                                 types::ModelFileState state,
                                                 const std::string& message, Timestamp now);
Status SqliteDeleteModelFile(sqlite3* db, int64_t id);

}  // namespace segma::store
