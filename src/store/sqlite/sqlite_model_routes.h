#pragma once

// The model-routes part of the SQLite store (section "model routes" of store.h), kept apart from
// sqlite_store.cc. Internal to the store: SqliteStore calls these with its mutex held, inside its
// transactions where noted, and publishes the events.

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/store.h"
#include "types/model_route.h"

namespace segma::store {

Result<types::ModelRoute> SqliteGetModelRoute(sqlite3* db, int64_t id);
Result<ListResult<types::ModelRoute>> SqliteListModelRoutes(sqlite3* db,
                                                            const ListOptions& options);
// Inserts (route.id == 0) or replaces route `route.id` with its targets, checking the project,
// the name against the project's routes and models, and each target model's project. Must run
// inside a transaction: on error, statements already run are rolled back by the caller.
Result<types::ModelRoute> SqliteWriteModelRoute(sqlite3* db, const types::ModelRoute& route,
                                                Timestamp now);
Status SqliteDeleteModelRoute(sqlite3* db, int64_t id);
// Every route with `model_id` among its targets (before a model is deleted).
Result<std::vector<int64_t>> SqliteRoutesOfModel(sqlite3* db, int64_t model_id);
// Every route of `project_id` (before a project is deleted).
Result<std::vector<types::ModelRoute>> SqliteRoutesOfProject(sqlite3* db, int64_t project_id);
// kAlreadyExists "model route 'x' already exists in project 1" when the project has a route of
// that name (model names and route names share one namespace per project).
Status SqliteCheckNoRouteNamed(sqlite3* db, int64_t project_id, const std::string& name);

}  // namespace segma::store
