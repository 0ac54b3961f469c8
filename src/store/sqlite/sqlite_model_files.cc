#include "store/sqlite/sqlite_model_files.h"

#include <algorithm>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "store/sqlite/sqlite_util.h"

namespace segma::store {

namespace {

using StmtPtr = SqliteStmt;

Status Error(sqlite3* db, std::string_view what) {
  if (sqlite3_extended_errcode(db) == SQLITE_CONSTRAINT_FOREIGNKEY) {
    return NotFoundError("worker not found");
  }
  return SqliteError(db, what);
}

Result<StmtPtr> Prepare(sqlite3* db, const std::string& sql) {
  return SqlitePrepare(db, sql, "prepare model-files statement");
}

constexpr const char* kCols =
    "f.id, f.worker_id, COALESCE(w.name, ''), f.source, f.source_key, f.backend, f.local_path, "
    "f.state, f.state_message, f.size_bytes, f.downloaded_bytes, f.created_at, f.updated_at";
constexpr const char* kFrom = "model_files f LEFT JOIN workers w ON w.id = f.worker_id";

Result<types::ModelFile> Decode(sqlite3_stmt* s) {
  types::ModelFile f;
  f.id = sqlite3_column_int64(s, 0);
  f.worker_id = sqlite3_column_int64(s, 1);
  f.worker_name = SqliteColumnText(s, 2);
  ASSIGN_OR_RETURN(json::value source, ParseJson(SqliteColumnText(s, 3)));
  if (!source.is_object()) return InternalError(fmt::format("model file {}: bad source", f.id));
  Result<types::ModelSource> src = types::ModelSourceFromJson(source.as_object());
  if (!src.ok())
    return InternalError(fmt::format("model file {}: {}", f.id, src.status().message()));
  f.source = std::move(src).value();
  f.source_key = SqliteColumnText(s, 4);
  f.backend = SqliteColumnText(s, 5);
  f.local_path = SqliteColumnText(s, 6);
  std::optional<types::ModelFileState> state = types::ParseModelFileState(SqliteColumnText(s, 7));
  if (!state) return InternalError(fmt::format("model file {}: bad state", f.id));
  f.state = *state;
  f.state_message = SqliteColumnText(s, 8);
  f.size_bytes = sqlite3_column_int64(s, 9);
  f.downloaded_bytes = sqlite3_column_int64(s, 10);
  f.created_at = FromUnixMillis(sqlite3_column_int64(s, 11));
  f.updated_at = FromUnixMillis(sqlite3_column_int64(s, 12));
  return f;
}

}  // namespace

Result<types::ModelFile> SqliteGetModelFile(sqlite3* db, int64_t id) {
  ASSIGN_OR_RETURN(StmtPtr s,
                   Prepare(db, fmt::format("SELECT {} FROM {} WHERE f.id = ?", kCols, kFrom)));
  sqlite3_bind_int64(s.get(), 1, id);
  const int rc = sqlite3_step(s.get());
  if (rc == SQLITE_DONE) return NotFoundError(fmt::format("model file {} not found", id));
  if (rc != SQLITE_ROW) return Error(db, "read model file");
  return Decode(s.get());
}

Result<types::ModelFile> SqliteUpsertModelFile(sqlite3* db, const types::ModelFile& file,
                                               Timestamp now) {
  // A row an admin marked for deletion stays so until the worker deletes it.
  ASSIGN_OR_RETURN(
      StmtPtr s,
      Prepare(db,
              "INSERT INTO model_files (worker_id, source_key, backend, source, local_path, "
              "state, state_message, size_bytes, downloaded_bytes, created_at, updated_at) "
              "VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (worker_id, source_key, backend) DO "
              "UPDATE SET source = excluded.source, local_path = excluded.local_path, "
              "state = CASE WHEN model_files.state = 'deleting' THEN 'deleting' "
              "ELSE excluded.state END, "
              "state_message = CASE WHEN model_files.state = 'deleting' "
              "THEN model_files.state_message ELSE excluded.state_message END, "
              "size_bytes = excluded.size_bytes, downloaded_bytes = excluded.downloaded_bytes, "
              "updated_at = excluded.updated_at RETURNING id"));
  sqlite3_stmt* st = s.get();
  sqlite3_bind_int64(st, 1, file.worker_id);
  SqliteBindText(st, 2, file.source_key);
  SqliteBindText(st, 3, file.backend);
  SqliteBindText(st, 4, json::serialize(types::ToJson(file.source)));
  SqliteBindText(st, 5, file.local_path);
  SqliteBindText(st, 6, types::ModelFileStateName(file.state));
  SqliteBindText(st, 7, file.state_message);
  sqlite3_bind_int64(st, 8, file.size_bytes);
  sqlite3_bind_int64(st, 9, file.downloaded_bytes);
  sqlite3_bind_int64(st, 10, ToUnixMillis(now));
  sqlite3_bind_int64(st, 11, ToUnixMillis(now));
  if (sqlite3_step(st) != SQLITE_ROW) return Error(db, "write model file");
  const int64_t id = sqlite3_column_int64(st, 0);
  s.reset();
  return SqliteGetModelFile(db, id);
}

Result<ListResult<types::ModelFile>> SqliteListModelFiles(sqlite3* db, const ListOptions& options,
                                                          std::optional<int64_t> worker_id) {
  ASSIGN_OR_RETURN(SqlitePage page, SqlitePageOf(options, {"id", "worker_id", "state", "size_bytes",
                                                           "created_at", "updated_at"}));
  std::string where = " WHERE 1 = 1";
  if (worker_id) where += " AND f.worker_id = ?1";
  if (!options.q.empty()) where += " AND lower(f.source_key) LIKE ?2 ESCAPE '\\'";
  auto bind = [&](sqlite3_stmt* s) {
    if (worker_id) sqlite3_bind_int64(s, 1, *worker_id);
    if (!options.q.empty()) SqliteBindText(s, 2, SqliteLikePattern(options.q));
  };
  ListResult<types::ModelFile> out;
  ASSIGN_OR_RETURN(StmtPtr count,
                   Prepare(db, fmt::format("SELECT COUNT(*) FROM {}{}", kFrom, where)));
  bind(count.get());
  ASSIGN_OR_RETURN(out.total, SqliteCount(db, count.get(), "count model files"));
  ASSIGN_OR_RETURN(StmtPtr s, Prepare(db, fmt::format("SELECT {} FROM {}{}{}", kCols, kFrom, where,
                                                      page.OrderAndLimit("f"))));
  bind(s.get());
  for (;;) {
    const int rc = sqlite3_step(s.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return Error(db, "list model files");
    ASSIGN_OR_RETURN(types::ModelFile f, Decode(s.get()));
    out.items.push_back(std::move(f));
  }
  return out;
}

Result<types::ModelFile> SqliteSetModelFileState(sqlite3* db, int64_t id,
                                                 types::ModelFileState state,
                                                 const std::string& message, Timestamp now) {
  ASSIGN_OR_RETURN(StmtPtr s, Prepare(db,
                                      "UPDATE model_files SET state = ?, state_message = ?, "
                                      "updated_at = ? WHERE id = ?"));
  SqliteBindText(s.get(), 1, types::ModelFileStateName(state));
  SqliteBindText(s.get(), 2, message);
  sqlite3_bind_int64(s.get(), 3, ToUnixMillis(now));
  sqlite3_bind_int64(s.get(), 4, id);
  if (sqlite3_step(s.get()) != SQLITE_DONE) return Error(db, "update model file");
  if (sqlite3_changes(db) == 0) return NotFoundError(fmt::format("model file {} not found", id));
  s.reset();
  return SqliteGetModelFile(db, id);
}

Status SqliteDeleteModelFile(sqlite3* db, int64_t id) {
  ASSIGN_OR_RETURN(StmtPtr s, Prepare(db, "DELETE FROM model_files WHERE id = ?"));
  sqlite3_bind_int64(s.get(), 1, id);
  if (sqlite3_step(s.get()) != SQLITE_DONE) return Error(db, "delete model file");
  if (sqlite3_changes(db) == 0) return NotFoundError(fmt::format("model file {} not found", id));
  return OkStatus();
}

}  // namespace segma::store
