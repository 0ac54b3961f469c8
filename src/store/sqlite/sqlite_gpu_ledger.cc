#include "store/sqlite/sqlite_gpu_ledger.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include <fmt/format.h>

#include "common/json.h"
#include "store/sqlite/sqlite_util.h"
#include "types/model.h"

namespace segma::store {

namespace {

Result<SqliteStmt> Prepare(sqlite3* db, std::string_view sql) {
  return SqlitePrepare(db, sql, "prepare GPU ledger statement");
}

// Steps a statement that returns no rows.
Status Run(sqlite3* db, sqlite3_stmt* s, std::string_view what) {
  if (sqlite3_step(s) != SQLITE_DONE) return SqliteError(db, what);
  return OkStatus();
}

std::string EncodeGpus(const std::vector<int>& gpus) {
  json::array a;
  for (int g : gpus) a.emplace_back(g);
  return ToJsonString(a);
}

bool DecodeGpus(const json::value* v, std::vector<int>& out) {
  if (v == nullptr || !v->is_array()) return false;
  for (const json::value& g : v->as_array()) {
    if (!g.is_int64()) return false;
    out.push_back(static_cast<int>(g.as_int64()));
  }
  return true;
}

// The VRAM a claim holds, on all its GPUs together.
Result<int64_t> ClaimVram(const json::value* v, int64_t instance_id) {
  if (v == nullptr || !v->is_object()) {
    return InternalError(fmt::format("instance {}: stored claim is malformed", instance_id));
  }
  ASSIGN_OR_RETURN(types::ResourceClaim claim, types::ResourceClaimFromJson(v->as_object()));
  int64_t total = 0;
  for (const auto& [gpu, bytes] : claim.vram) total += bytes;
  return total;
}

// What an instance holds on one worker.
struct Part {
  int64_t worker_id = 0;
  std::vector<int> gpus;
  int64_t vram = 0;
};

struct InstanceRow {
  bool running = false;
  int64_t model_id = 0;
  int64_t project_id = 0;
  std::string model;
  std::vector<Part> parts;  // the main worker's first
};

// The instance's stored row; nullopt when it does not exist.
Result<std::optional<InstanceRow>> LoadInstanceRow(sqlite3* db, int64_t id) {
  ASSIGN_OR_RETURN(SqliteStmt st,
                   Prepare(db,
                           "SELECT i.state, i.model_id, i.project_id, i.worker_id, i.gpu_indexes, "
                           "i.claim, i.distributed_servers, COALESCE(m.name, '') FROM "
                           "model_instances i LEFT JOIN models m ON m.id = i.model_id "
                           "WHERE i.id = ?"));
  sqlite3_stmt* s = st.get();
  sqlite3_bind_int64(s, 1, id);
  const int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE) return std::optional<InstanceRow>();
  if (rc != SQLITE_ROW) return SqliteError(db, "load instance for the GPU ledger");
  InstanceRow row;
  row.running = SqliteColumnText(s, 0) == "RUNNING";
  row.model_id = sqlite3_column_int64(s, 1);
  row.project_id = sqlite3_column_int64(s, 2);
  row.model = SqliteColumnText(s, 7);
  const auto bad = [&] {
    return InternalError(fmt::format("instance {}: stored placement JSON is malformed", id));
  };
  Part main;
  main.worker_id = sqlite3_column_int64(s, 3);
  ASSIGN_OR_RETURN(json::value gpus, ParseJson(SqliteColumnText(s, 4)));
  if (!DecodeGpus(&gpus, main.gpus)) return bad();
  ASSIGN_OR_RETURN(json::value claim, ParseJson(SqliteColumnText(s, 5)));
  ASSIGN_OR_RETURN(main.vram, ClaimVram(&claim, id));
  row.parts.push_back(std::move(main));
  ASSIGN_OR_RETURN(json::value servers, ParseJson(SqliteColumnText(s, 6)));
  if (!servers.is_array()) return bad();
  for (const json::value& e : servers.as_array()) {
    if (!e.is_object()) return bad();
    const json::object& o = e.as_object();
    Part p;
    const json::value* wid = o.if_contains("worker_id");
    if (wid == nullptr || !wid->is_int64() || !DecodeGpus(o.if_contains("gpu_indexes"), p.gpus)) {
      return bad();
    }
    p.worker_id = wid->as_int64();
    ASSIGN_OR_RETURN(p.vram, ClaimVram(o.if_contains("claim"), id));
    row.parts.push_back(std::move(p));
  }
  return std::optional<InstanceRow>(std::move(row));
}

struct WorkerRow {
  bool lost = false;  // NOT_READY or UNREACHABLE
  std::optional<int64_t> last_heartbeat_ms;
  std::map<int, std::string> gpu_names;  // index → name, as the worker last reported
};

// The worker's stored row; nullopt when it does not exist. Its GPUs' names only `with_gpus`
// (parsing the status is the costly part, and heartbeats do not need it).
Result<std::optional<WorkerRow>> LoadWorkerRow(sqlite3* db, int64_t id, bool with_gpus) {
  ASSIGN_OR_RETURN(
      SqliteStmt st,
      Prepare(db, "SELECT state, status, last_heartbeat_at FROM workers WHERE id = ?"));
  sqlite3_stmt* s = st.get();
  sqlite3_bind_int64(s, 1, id);
  const int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE) return std::optional<WorkerRow>();
  if (rc != SQLITE_ROW) return SqliteError(db, "load worker for the GPU ledger");
  WorkerRow w;
  const std::string state = SqliteColumnText(s, 0);
  w.lost = state == "NOT_READY" || state == "UNREACHABLE";
  if (sqlite3_column_type(s, 2) != SQLITE_NULL) w.last_heartbeat_ms = sqlite3_column_int64(s, 2);
  if (!with_gpus) return std::optional<WorkerRow>(std::move(w));
  // Only the GPUs' names are needed: read them without decoding the whole status.
  Result<json::value> status = ParseJson(SqliteColumnText(s, 1));
  if (status.ok() && status->is_object()) {
    if (const json::value* gpus = status->as_object().if_contains("gpus");
        gpus != nullptr && gpus->is_array()) {
      for (const json::value& g : gpus->as_array()) {
        if (!g.is_object()) continue;
        const json::value* index = g.as_object().if_contains("index");
        const json::value* name = g.as_object().if_contains("name");
        if (index && index->is_int64() && name && name->is_string()) {
          w.gpu_names[static_cast<int>(index->as_int64())] = std::string(name->as_string());
        }
      }
    }
  }
  return std::optional<WorkerRow>(std::move(w));
}

// "NVIDIA H200", or the distinct names joined by " + " for GPUs of several types ("" when the
// worker never reported them).
std::string GpuType(const WorkerRow& w, const std::vector<int>& gpus) {
  std::set<std::string> names;
  for (int g : gpus) {
    auto it = w.gpu_names.find(g);
    if (it != w.gpu_names.end()) names.insert(it->second);
  }
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : " + ") + n;
  return out;
}

struct OpenInterval {
  int64_t id = 0;
  int64_t worker_id = 0;
  std::string gpu_indexes;
  int64_t vram = 0;
};

Status CloseInterval(sqlite3* db, int64_t id, Timestamp now, LedgerClose how) {
  ASSIGN_OR_RETURN(SqliteStmt st, Prepare(db, how == LedgerClose::kNow
                                                  ? "UPDATE gpu_intervals SET ended_at = "
                                                    "MAX(started_at, ?) WHERE id = ?"
                                                  : "UPDATE gpu_intervals SET ended_at = "
                                                    "MAX(started_at, last_seen) WHERE id = ?"));
  sqlite3_stmt* s = st.get();
  int i = 1;
  if (how == LedgerClose::kNow) sqlite3_bind_int64(s, i++, ToUnixMillis(now));
  sqlite3_bind_int64(s, i, id);
  return Run(db, s, "close GPU interval");
}

}  // namespace

Status SqliteLedgerSyncInstance(sqlite3* db, int64_t instance_id, Timestamp now, LedgerClose how) {
  ASSIGN_OR_RETURN(std::optional<InstanceRow> row, LoadInstanceRow(db, instance_id));
  struct Wanted {
    Part part;
    std::string gpus;
    std::string gpu_type;
    bool open = false;  // an open interval already matches it
  };
  std::vector<Wanted> wanted;
  if (row && row->running) {
    for (Part& p : row->parts) {
      if (p.gpus.empty() || p.worker_id == 0) continue;  // nothing on a GPU: nothing to count
      ASSIGN_OR_RETURN(std::optional<WorkerRow> w, LoadWorkerRow(db, p.worker_id, true));
      if (!w || w->lost) continue;
      std::string type = GpuType(*w, p.gpus);
      std::string gpus = EncodeGpus(p.gpus);
      wanted.push_back({std::move(p), std::move(gpus), std::move(type)});
    }
  }
  std::vector<OpenInterval> open;
  {
    ASSIGN_OR_RETURN(SqliteStmt st, Prepare(db,
                                            "SELECT id, worker_id, gpu_indexes, vram_bytes FROM "
                                            "gpu_intervals WHERE instance_id = ? AND ended_at IS "
                                            "NULL ORDER BY id"));
    sqlite3_stmt* s = st.get();
    sqlite3_bind_int64(s, 1, instance_id);
    for (int rc; (rc = sqlite3_step(s)) != SQLITE_DONE;) {
      if (rc != SQLITE_ROW) return SqliteError(db, "list open GPU intervals");
      open.push_back({sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1),
                      SqliteColumnText(s, 2), sqlite3_column_int64(s, 3)});
    }
  }
  for (const OpenInterval& o : open) {
    auto match = std::find_if(wanted.begin(), wanted.end(), [&](const Wanted& w) {
      return !w.open && w.part.worker_id == o.worker_id && w.gpus == o.gpu_indexes &&
             w.part.vram == o.vram;
    });
    if (match != wanted.end()) {
      match->open = true;
    } else {
      RETURN_IF_ERROR(CloseInterval(db, o.id, now, how));
    }
  }
  ASSIGN_OR_RETURN(SqliteStmt ins,
                   Prepare(db,
                           "INSERT INTO gpu_intervals (instance_id, deployment_id, model, "
                           "project_id, worker_id, gpu_type, gpu_indexes, gpu_count, vram_bytes, "
                           "started_at, ended_at, last_seen) VALUES (?,?,?,?,?,?,?,?,?,?,NULL,?)"));
  for (const Wanted& w : wanted) {
    if (w.open) continue;
    sqlite3_stmt* s = ins.get();
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    sqlite3_bind_int64(s, 1, instance_id);
    sqlite3_bind_int64(s, 2, row->model_id);
    SqliteBindText(s, 3, row->model);
    sqlite3_bind_int64(s, 4, row->project_id);
    sqlite3_bind_int64(s, 5, w.part.worker_id);
    SqliteBindText(s, 6, w.gpu_type);
    SqliteBindText(s, 7, w.gpus);
    sqlite3_bind_int64(s, 8, static_cast<int64_t>(w.part.gpus.size()));
    sqlite3_bind_int64(s, 9, w.part.vram);
    sqlite3_bind_int64(s, 10, ToUnixMillis(now));
    sqlite3_bind_int64(s, 11, ToUnixMillis(now));
    RETURN_IF_ERROR(Run(db, s, "open GPU interval"));
  }
  return OkStatus();
}

Status SqliteLedgerSyncWorker(sqlite3* db, int64_t worker_id, Timestamp now) {
  ASSIGN_OR_RETURN(std::optional<WorkerRow> w, LoadWorkerRow(db, worker_id, false));
  if (!w || w->lost) {
    ASSIGN_OR_RETURN(SqliteStmt st, Prepare(db,
                                            "UPDATE gpu_intervals SET ended_at = MAX(started_at, "
                                            "last_seen) WHERE worker_id = ? AND ended_at IS NULL"));
    sqlite3_bind_int64(st.get(), 1, worker_id);
    return Run(db, st.get(), "close a lost worker's GPU intervals");
  }
  if (w->last_heartbeat_ms) {
    ASSIGN_OR_RETURN(SqliteStmt st, Prepare(db,
                                            "UPDATE gpu_intervals SET last_seen = MAX(last_seen, "
                                            "?) WHERE worker_id = ? AND ended_at IS NULL"));
    sqlite3_bind_int64(st.get(), 1, *w->last_heartbeat_ms);
    sqlite3_bind_int64(st.get(), 2, worker_id);
    RETURN_IF_ERROR(Run(db, st.get(), "record a heartbeat in the GPU ledger"));
  }
  // RUNNING instances on this worker (as main or distributed server) without an open interval
  // on it: the worker is back, or their interval was never opened.
  std::vector<int64_t> ids;
  {
    ASSIGN_OR_RETURN(
        SqliteStmt st,
        Prepare(db,
                "SELECT id FROM model_instances WHERE state = 'RUNNING' AND (worker_id = ? OR "
                "distributed_servers LIKE ? OR distributed_servers LIKE ?) AND id NOT IN (SELECT "
                "instance_id FROM gpu_intervals WHERE worker_id = ? AND ended_at IS NULL)"));
    sqlite3_stmt* s = st.get();
    sqlite3_bind_int64(s, 1, worker_id);
    SqliteBindText(s, 2, fmt::format("%\"worker_id\":{},%", worker_id));
    SqliteBindText(s, 3, fmt::format("%\"worker_id\":{}}}%", worker_id));
    sqlite3_bind_int64(s, 4, worker_id);
    for (int rc; (rc = sqlite3_step(s)) != SQLITE_DONE;) {
      if (rc != SQLITE_ROW) return SqliteError(db, "list a worker's RUNNING instances");
      ids.push_back(sqlite3_column_int64(s, 0));
    }
  }
  for (int64_t id : ids) RETURN_IF_ERROR(SqliteLedgerSyncInstance(db, id, now));
  return OkStatus();
}

Status SqliteLedgerRecover(sqlite3* db, Timestamp now) {
  std::vector<int64_t> ids;
  {
    // Instances with an open interval, and RUNNING ones without (a database from before the
    // ledger: they count from this start on).
    ASSIGN_OR_RETURN(SqliteStmt st,
                     Prepare(db,
                             "SELECT instance_id FROM gpu_intervals WHERE ended_at IS NULL UNION "
                             "SELECT id FROM model_instances WHERE state = 'RUNNING'"));
    for (int rc; (rc = sqlite3_step(st.get())) != SQLITE_DONE;) {
      if (rc != SQLITE_ROW) return SqliteError(db, "list open GPU intervals");
      ids.push_back(sqlite3_column_int64(st.get(), 0));
    }
  }
  for (int64_t id : ids) {
    RETURN_IF_ERROR(SqliteLedgerSyncInstance(db, id, now, LedgerClose::kLastSeen));
  }
  return OkStatus();
}

Result<std::vector<GpuInterval>> SqliteListGpuIntervals(
    sqlite3* db, Timestamp from, Timestamp to,
    const std::optional<std::vector<int64_t>>& project_ids) {
  std::vector<GpuInterval> out;
  std::string sql =
      "SELECT id, instance_id, deployment_id, model, project_id, worker_id, gpu_type, "
      "gpu_indexes, gpu_count, vram_bytes, started_at, ended_at, last_seen FROM gpu_intervals "
      "WHERE started_at < ? AND (ended_at IS NULL OR ended_at > ?)";
  if (project_ids) {
    if (project_ids->empty()) return out;
    sql += " AND project_id IN (";
    for (size_t i = 0; i < project_ids->size(); ++i) sql += i == 0 ? "?" : ",?";
    sql += ")";
  }
  sql += " ORDER BY started_at, id";
  ASSIGN_OR_RETURN(SqliteStmt st, Prepare(db, sql));
  sqlite3_stmt* s = st.get();
  sqlite3_bind_int64(s, 1, ToUnixMillis(to));
  sqlite3_bind_int64(s, 2, ToUnixMillis(from));
  if (project_ids) {
    int i = 3;
    for (int64_t id : *project_ids) sqlite3_bind_int64(s, i++, id);
  }
  for (int rc; (rc = sqlite3_step(s)) != SQLITE_DONE;) {
    if (rc != SQLITE_ROW) return SqliteError(db, "list GPU intervals");
    GpuInterval g;
    g.id = sqlite3_column_int64(s, 0);
    g.instance_id = sqlite3_column_int64(s, 1);
    g.deployment_id = sqlite3_column_int64(s, 2);
    g.model = SqliteColumnText(s, 3);
    g.project_id = sqlite3_column_int64(s, 4);
    g.worker_id = sqlite3_column_int64(s, 5);
    g.gpu_type = SqliteColumnText(s, 6);
    Result<json::value> gpus = ParseJson(SqliteColumnText(s, 7));
    if (!gpus.ok() || !DecodeGpus(&*gpus, g.gpu_indexes)) {
      return InternalError(fmt::format("GPU interval {}: stored gpu_indexes is malformed", g.id));
    }
    g.gpu_count = sqlite3_column_int64(s, 8);
    g.vram_bytes = sqlite3_column_int64(s, 9);
    g.started_at = FromUnixMillis(sqlite3_column_int64(s, 10));
    if (sqlite3_column_type(s, 11) != SQLITE_NULL) {
      g.ended_at = FromUnixMillis(sqlite3_column_int64(s, 11));
    }
    g.last_seen = FromUnixMillis(sqlite3_column_int64(s, 12));
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace segma::store
