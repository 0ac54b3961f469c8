#include "store/sqlite/sqlite_model_routes.h"

#include <algorithm>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "store/sqlite/sqlite_util.h"

namespace segma::store {

namespace {

using StmtPtr = SqliteStmt;

Status Error(sqlite3* db, std::string_view what) {
  const int rc = sqlite3_extended_errcode(db);
  if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
    return AlreadyExistsError(fmt::format("{}: {}", what, sqlite3_errmsg(db)));
  }
  return SqliteError(db, what);
}

Result<StmtPtr> Prepare(sqlite3* db, const std::string& sql) {
  return SqlitePrepare(db, sql, "prepare model-routes statement");
}

// Runs a statement that returns no rows.
Status Run(sqlite3* db, sqlite3_stmt* s, std::string_view what) {
  if (sqlite3_step(s) != SQLITE_DONE) return Error(db, what);
  return OkStatus();
}

// Whether a one-row existence query (already bound) found a row.
Result<bool> Exists(sqlite3* db, sqlite3_stmt* s, std::string_view what) {
  const int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return Error(db, what);
}

constexpr const char* kCols =
    "r.id, r.project_id, r.name, r.description, r.created_at, r.updated_at";

types::ModelRoute DecodeRow(sqlite3_stmt* s) {
  types::ModelRoute r;
  r.id = sqlite3_column_int64(s, 0);
  r.project_id = sqlite3_column_int64(s, 1);
  r.name = SqliteColumnText(s, 2);
  r.description = SqliteColumnText(s, 3);
  r.created_at = FromUnixMillis(sqlite3_column_int64(s, 4));
  r.updated_at = FromUnixMillis(sqlite3_column_int64(s, 5));
  return r;
}

Status LoadTargets(sqlite3* db, types::ModelRoute& r) {
  ASSIGN_OR_RETURN(StmtPtr s, Prepare(db,
                                      "SELECT model_id, weight FROM model_route_targets WHERE "
                                      "route_id = ? ORDER BY position, model_id"));
  sqlite3_bind_int64(s.get(), 1, r.id);
  r.targets.clear();
  for (;;) {
    const int rc = sqlite3_step(s.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return Error(db, "read model route targets");
    r.targets.push_back(types::ModelRouteTarget{sqlite3_column_int64(s.get(), 0),
                                                sqlite3_column_int64(s.get(), 1)});
  }
  return OkStatus();
}

// Rows of a query with one integer parameter, with their targets.
Result<std::vector<types::ModelRoute>> LoadRoutes(sqlite3* db, const std::string& sql,
                                                  int64_t arg) {
  std::vector<types::ModelRoute> out;
  {
    ASSIGN_OR_RETURN(StmtPtr s, Prepare(db, sql));
    sqlite3_bind_int64(s.get(), 1, arg);
    for (;;) {
      const int rc = sqlite3_step(s.get());
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return Error(db, "read model routes");
      out.push_back(DecodeRow(s.get()));
    }
  }
  for (types::ModelRoute& r : out) RETURN_IF_ERROR(LoadTargets(db, r));
  return out;
}

}  // namespace

Result<types::ModelRoute> SqliteGetModelRoute(sqlite3* db, int64_t id) {
  ASSIGN_OR_RETURN(
      std::vector<types::ModelRoute> rows,
      LoadRoutes(db, fmt::format("SELECT {} FROM model_routes r WHERE r.id = ?", kCols), id));
  if (rows.empty()) return NotFoundError(fmt::format("model route {} not found", id));
  return std::move(rows.front());
}

Result<ListResult<types::ModelRoute>> SqliteListModelRoutes(sqlite3* db,
                                                            const ListOptions& options) {
  ASSIGN_OR_RETURN(SqlitePage page,
                   SqlitePageOf(options, {"id", "name", "created_at", "updated_at"}));
  std::string where = " WHERE 1 = 1";
  if (options.project_id) where += " AND r.project_id = ?1";
  if (options.member_user_id) {
    where += " AND r.project_id IN (SELECT project_id FROM project_members WHERE user_id = ?2)";
  }
  if (!options.q.empty()) where += " AND lower(r.name) LIKE ?3 ESCAPE '\\'";
  auto bind = [&](sqlite3_stmt* s) {
    if (options.project_id) sqlite3_bind_int64(s, 1, *options.project_id);
    if (options.member_user_id) sqlite3_bind_int64(s, 2, *options.member_user_id);
    if (!options.q.empty()) SqliteBindText(s, 3, SqliteLikePattern(options.q));
  };
  ListResult<types::ModelRoute> out;
  {
    ASSIGN_OR_RETURN(StmtPtr count,
                     Prepare(db, fmt::format("SELECT COUNT(*) FROM model_routes r{}", where)));
    bind(count.get());
    ASSIGN_OR_RETURN(out.total, SqliteCount(db, count.get(), "count model routes"));
  }
  {
    ASSIGN_OR_RETURN(StmtPtr s, Prepare(db, fmt::format("SELECT {} FROM model_routes r{}{}", kCols,
                                                        where, page.OrderAndLimit("r"))));
    bind(s.get());
    for (;;) {
      const int rc = sqlite3_step(s.get());
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return Error(db, "list model routes");
      out.items.push_back(DecodeRow(s.get()));
    }
  }
  for (types::ModelRoute& r : out.items) RETURN_IF_ERROR(LoadTargets(db, r));
  return out;
}

Status SqliteCheckNoRouteNamed(sqlite3* db, int64_t project_id, const std::string& name) {
  ASSIGN_OR_RETURN(StmtPtr s,
                   Prepare(db, "SELECT 1 FROM model_routes WHERE project_id = ? AND name = ?"));
  sqlite3_bind_int64(s.get(), 1, project_id);
  SqliteBindText(s.get(), 2, name);
  ASSIGN_OR_RETURN(bool taken, Exists(db, s.get(), "read model routes"));
  if (taken) {
    return AlreadyExistsError(
        fmt::format("model route '{}' already exists in project {} (models and routes share names)",
                    name, project_id));
  }
  return OkStatus();
}

Result<types::ModelRoute> SqliteWriteModelRoute(sqlite3* db, const types::ModelRoute& route,
                                                Timestamp now) {
  RETURN_IF_ERROR(types::ValidateModelRoute(route));
  types::ModelRoute r = route;
  if (r.id != 0) {
    ASSIGN_OR_RETURN(types::ModelRoute old, SqliteGetModelRoute(db, r.id));
    r.project_id = old.project_id;
    r.created_at = old.created_at;
  } else {
    ASSIGN_OR_RETURN(StmtPtr s, Prepare(db, "SELECT 1 FROM projects WHERE id = ?"));
    sqlite3_bind_int64(s.get(), 1, r.project_id);
    ASSIGN_OR_RETURN(bool found, Exists(db, s.get(), "read project"));
    if (!found) return NotFoundError(fmt::format("project {} not found", r.project_id));
    r.created_at = now;
  }
  r.updated_at = now;
  {
    ASSIGN_OR_RETURN(StmtPtr s,
                     Prepare(db, "SELECT 1 FROM models WHERE project_id = ? AND name = ?"));
    sqlite3_bind_int64(s.get(), 1, r.project_id);
    SqliteBindText(s.get(), 2, r.name);
    ASSIGN_OR_RETURN(bool taken, Exists(db, s.get(), "read models"));
    if (taken) {
      return AlreadyExistsError(
          fmt::format("model '{}' already exists in project {} (models and routes share names)",
                      r.name, r.project_id));
    }
  }
  for (size_t i = 0; i < r.targets.size(); ++i) {
    ASSIGN_OR_RETURN(StmtPtr s,
                     Prepare(db, "SELECT 1 FROM models WHERE id = ? AND project_id = ?"));
    sqlite3_bind_int64(s.get(), 1, r.targets[i].model_id);
    sqlite3_bind_int64(s.get(), 2, r.project_id);
    ASSIGN_OR_RETURN(bool found, Exists(db, s.get(), "read models"));
    if (!found) {
      // Also for a model of another project: its existence is not the caller's business.
      return InvalidArgumentError(fmt::format("targets[{}]: model {} does not exist in project {}",
                                              i, r.targets[i].model_id, r.project_id));
    }
  }
  {
    const bool create = r.id == 0;
    ASSIGN_OR_RETURN(StmtPtr s,
                     Prepare(db, create ? "INSERT INTO model_routes (name, description, "
                                          "updated_at, project_id, created_at) "
                                          "VALUES (?, ?, ?, ?, ?)"
                                        : "UPDATE model_routes SET name = ?, "
                                          "description = ?, updated_at = ? WHERE id = ?"));
    SqliteBindText(s.get(), 1, r.name);
    SqliteBindText(s.get(), 2, r.description);
    sqlite3_bind_int64(s.get(), 3, ToUnixMillis(r.updated_at));
    if (create) {
      sqlite3_bind_int64(s.get(), 4, r.project_id);
      sqlite3_bind_int64(s.get(), 5, ToUnixMillis(r.created_at));
    } else {
      sqlite3_bind_int64(s.get(), 4, r.id);
    }
    Status st = Run(db, s.get(), "write model route");
    if (st.code() == StatusCode::kAlreadyExists) {
      return AlreadyExistsError(
          fmt::format("model route '{}' already exists in project {}", r.name, r.project_id));
    }
    RETURN_IF_ERROR(st);
    if (create) r.id = sqlite3_last_insert_rowid(db);
  }
  {
    ASSIGN_OR_RETURN(StmtPtr s, Prepare(db, "DELETE FROM model_route_targets WHERE route_id = ?"));
    sqlite3_bind_int64(s.get(), 1, r.id);
    RETURN_IF_ERROR(Run(db, s.get(), "write model route targets"));
  }
  ASSIGN_OR_RETURN(StmtPtr ins, Prepare(db,
                                        "INSERT INTO model_route_targets (route_id, model_id, "
                                        "weight, position) VALUES (?, ?, ?, ?)"));
  for (size_t i = 0; i < r.targets.size(); ++i) {
    sqlite3_reset(ins.get());
    sqlite3_bind_int64(ins.get(), 1, r.id);
    sqlite3_bind_int64(ins.get(), 2, r.targets[i].model_id);
    sqlite3_bind_int64(ins.get(), 3, r.targets[i].weight);
    sqlite3_bind_int64(ins.get(), 4, static_cast<int64_t>(i));
    RETURN_IF_ERROR(Run(db, ins.get(), "write model route targets"));
  }
  ins.reset();
  return SqliteGetModelRoute(db, r.id);
}

Status SqliteDeleteModelRoute(sqlite3* db, int64_t id) {
  // Targets go with ON DELETE CASCADE.
  ASSIGN_OR_RETURN(StmtPtr s, Prepare(db, "DELETE FROM model_routes WHERE id = ?"));
  sqlite3_bind_int64(s.get(), 1, id);
  RETURN_IF_ERROR(Run(db, s.get(), "delete model route"));
  if (sqlite3_changes(db) == 0) return NotFoundError(fmt::format("model route {} not found", id));
  return OkStatus();
}

Result<std::vector<int64_t>> SqliteRoutesOfModel(sqlite3* db, int64_t model_id) {
  ASSIGN_OR_RETURN(StmtPtr s, Prepare(db,
                                      "SELECT DISTINCT route_id FROM model_route_targets WHERE "
                                      "model_id = ? ORDER BY route_id"));
  sqlite3_bind_int64(s.get(), 1, model_id);
  std::vector<int64_t> out;
  for (;;) {
    const int rc = sqlite3_step(s.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return Error(db, "read model route targets");
    out.push_back(sqlite3_column_int64(s.get(), 0));
  }
  return out;
}

Result<std::vector<types::ModelRoute>> SqliteRoutesOfProject(sqlite3* db, int64_t project_id) {
  return LoadRoutes(
      db, fmt::format("SELECT {} FROM model_routes r WHERE r.project_id = ? ORDER BY r.id", kCols),
      project_id);
}

}  // namespace segma::store
