#include "store/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/format.h>
#include <sys/stat.h>

#include "common/event_bus.h"
#include "common/logging.h"
#include "store/migrations.h"
#include "store/sqlite/sqlite_audit.h"
#include "store/sqlite/sqlite_gpu_ledger.h"
#include "store/sqlite/sqlite_model_files.h"
#include "store/sqlite/sqlite_model_routes.h"
#include "store/sqlite/sqlite_prices.h"
#include "store/sqlite/sqlite_usage.h"
#include "store/sqlite/sqlite_util.h"

namespace segma::store {

namespace {

using types::ApiKey;
using types::Cluster;
using types::Project;
using types::ProjectMember;
using types::Session;
using types::User;
using types::Worker;

constexpr int kBusyTimeoutMs = 5000;
// TouchApiKey writes a key's last_used_at at most this often.
constexpr int64_t kTouchIntervalMs = 60'000;

// Maps an SQLite result code to our codes. Callers that know what a constraint means (a taken
// name, a missing parent row) replace the message.
Status SqliteError(sqlite3* db, int rc, std::string_view what) {
  std::string msg = fmt::format("{}: {}", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
      return AlreadyExistsError(std::move(msg));
    default:
      break;
  }
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
      return FailedPreconditionError(std::move(msg));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
    case SQLITE_NOMEM:
    case SQLITE_PERM:
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      return UnavailableError(std::move(msg));
    default:
      return InternalError(std::move(msg));
  }
}

// A prepared statement borrowed from the cache (or owned, when the cached one is in use). Binds
// positionally in call order. Resets itself when it goes out of scope, so the cached statement is
// ready for the next user.
class Stmt {
 public:
  Stmt(sqlite3* db, sqlite3_stmt* stmt, bool owned) : db_(db), stmt_(stmt), owned_(owned) {}
  Stmt(Stmt&& o) noexcept
      : db_(o.db_),
        stmt_(std::exchange(o.stmt_, nullptr)),
        owned_(o.owned_),
        next_(o.next_),
        bind_rc_(o.bind_rc_) {}
  Stmt& operator=(Stmt&&) = delete;
  Stmt(const Stmt&) = delete;
  ~Stmt() {
    if (stmt_ == nullptr) return;
    if (owned_) {
      sqlite3_finalize(stmt_);
    } else {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }

  Stmt& Int(int64_t v) { return Check(sqlite3_bind_int64(stmt_, ++next_, v)); }
  Stmt& Bool(bool v) { return Int(v ? 1 : 0); }
  Stmt& Double(double v) { return Check(sqlite3_bind_double(stmt_, ++next_, v)); }
  Stmt& Text(std::string_view v) {
    return Check(
        sqlite3_bind_text64(stmt_, ++next_, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  Stmt& Null() { return Check(sqlite3_bind_null(stmt_, ++next_)); }
  Stmt& OptInt(const std::optional<int64_t>& v) { return v ? Int(*v) : Null(); }
  Stmt& OptDouble(const std::optional<double>& v) { return v ? Double(*v) : Null(); }
  Stmt& Limits(const types::Limits& l) {
    return l.unlimited() ? Null() : Text(types::EncodeLimits(l));
  }
  Stmt& OptTime(const std::optional<Timestamp>& t) { return t ? Int(ToUnixMillis(*t)) : Null(); }
  Stmt& Time(Timestamp t) { return Int(ToUnixMillis(t)); }
  Stmt& Value(const std::variant<int64_t, std::string>& v) {
    if (const auto* i = std::get_if<int64_t>(&v)) return Int(*i);
    return Text(std::get<std::string>(v));
  }

  // Advances to the next row: true if there is one, false when done.
  Result<bool> Step() {
    if (bind_rc_ != SQLITE_OK) return SqliteError(db_, bind_rc_, "bind");
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, rc, "step");
  }
  // Runs a statement that returns no rows.
  Status Run() {
    Result<bool> r = Step();
    if (!r.ok()) return r.status();
    return OkStatus();
  }
  // Run(), but a broken UNIQUE constraint (a taken name) is kAlreadyExists with `message`
  // instead of SQLite's text.
  Status RunOrAlreadyExists(std::string message) {
    Status st = Run();
    if (st.code() == StatusCode::kAlreadyExists) return AlreadyExistsError(std::move(message));
    return st;
  }

  int64_t ColInt(int i) const { return sqlite3_column_int64(stmt_, i); }
  bool ColBool(int i) const { return ColInt(i) != 0; }
  double ColDouble(int i) const { return sqlite3_column_double(stmt_, i); }
  bool ColNull(int i) const { return sqlite3_column_type(stmt_, i) == SQLITE_NULL; }
  std::string ColText(int i) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, i));
    if (p == nullptr) return "";
    return std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, i)));
  }
  std::optional<int64_t> ColOptInt(int i) const {
    if (ColNull(i)) return std::nullopt;
    return ColInt(i);
  }
  std::optional<double> ColOptDouble(int i) const {
    if (ColNull(i)) return std::nullopt;
    return ColDouble(i);
  }
  Timestamp ColTime(int i) const { return FromUnixMillis(ColInt(i)); }
  std::optional<Timestamp> ColOptTime(int i) const {
    if (ColNull(i)) return std::nullopt;
    return FromUnixMillis(ColInt(i));
  }

 private:
  Stmt& Check(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
    return *this;
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  bool owned_;
  int next_ = 0;
  int bind_rc_ = SQLITE_OK;
};

// ---- row codecs (column lists and decoders kept side by side) ----------------------------------

constexpr std::string_view kUserCols =
    "id, username, full_name, is_admin, is_active, password_hash, require_password_change, "
    "created_at, updated_at";
User DecodeUser(const Stmt& s) {
  User u;
  u.id = s.ColInt(0);
  u.username = s.ColText(1);
  u.full_name = s.ColText(2);
  u.is_admin = s.ColBool(3);
  u.is_active = s.ColBool(4);
  u.password_hash = s.ColText(5);
  u.require_password_change = s.ColBool(6);
  u.created_at = s.ColTime(7);
  u.updated_at = s.ColTime(8);
  return u;
}

constexpr std::string_view kSessionCols =
    "s.id, s.user_id, s.expires_at, s.revoked_at, s.created_at, s.last_used_at, s.client_address, "
    "s.user_agent, u.username";
constexpr std::string_view kSessionFrom = "sessions s JOIN users u ON u.id = s.user_id";
Session DecodeSession(const Stmt& s) {
  Session x;
  x.id = s.ColInt(0);
  x.user_id = s.ColInt(1);
  x.expires_at = s.ColTime(2);
  x.revoked_at = s.ColOptTime(3);
  x.created_at = s.ColTime(4);
  x.last_used_at = s.ColOptTime(5);
  x.client_address = s.ColText(6);
  x.user_agent = s.ColText(7);
  x.username = s.ColText(8);
  return x;
}

// Limits columns: NULL or a JSON object (types::EncodeLimits).
Result<types::Limits> DecodeLimits(const Stmt& s, int col, std::string_view what) {
  if (s.ColNull(col)) return types::Limits{};
  Result<json::value> v = ParseJson(s.ColText(col));
  if (!v.ok()) return InternalError(fmt::format("{}: stored limits are not JSON", what));
  Result<types::Limits> l = types::ParseLimits(*v);
  if (!l.ok()) {
    return InternalError(
        fmt::format("{}: stored limits are invalid: {}", what, l.status().message()));
  }
  return l;
}

constexpr std::string_view kProjectCols =
    "id, name, description, max_gpus, max_vram_gib, max_instances, created_at, updated_at, limits";
Result<Project> DecodeProject(const Stmt& s) {
  Project p;
  p.id = s.ColInt(0);
  p.name = s.ColText(1);
  p.description = s.ColText(2);
  p.max_gpus = s.ColOptDouble(3);
  p.max_vram_gib = s.ColOptDouble(4);
  p.max_instances = s.ColOptInt(5);
  p.created_at = s.ColTime(6);
  p.updated_at = s.ColTime(7);
  ASSIGN_OR_RETURN(p.limits, DecodeLimits(s, 8, fmt::format("project {}", p.id)));
  return p;
}

constexpr std::string_view kMemberCols =
    "m.project_id, m.user_id, m.role, m.created_at, u.username";
constexpr std::string_view kMemberFrom = "project_members m JOIN users u ON u.id = m.user_id";
Result<ProjectMember> DecodeMember(const Stmt& s) {
  ProjectMember m;
  m.project_id = s.ColInt(0);
  m.user_id = s.ColInt(1);
  const std::string role = s.ColText(2);
  auto parsed = types::ParseProjectRole(role);
  if (!parsed) return InternalError(fmt::format("stored project role '{}' is unknown", role));
  m.role = *parsed;
  m.created_at = s.ColTime(3);
  m.username = s.ColText(4);
  return m;
}

constexpr std::string_view kApiKeyCols =
    "id, name, project_id, user_id, scope, allowed_models, prefix, secret_hash, expires_at, "
    "revoked_at, last_used_at, created_at, limits, allowed_cidrs";
Result<ApiKey> DecodeApiKey(const Stmt& s) {
  ApiKey k;
  k.id = s.ColInt(0);
  k.name = s.ColText(1);
  k.project_id = s.ColInt(2);
  k.user_id = s.ColInt(3);
  const std::string scope = s.ColText(4);
  auto parsed = types::ParseApiKeyScope(scope);
  if (!parsed) return InternalError(fmt::format("stored API key scope '{}' is unknown", scope));
  k.scope = *parsed;
  if (!s.ColNull(5)) {
    auto v = ParseJson(s.ColText(5));
    if (!v.ok() || !v->is_array()) {
      return InternalError(
          fmt::format("API key {}: stored allowed_models is not a JSON array", k.id));
    }
    std::vector<std::string> models;
    for (const auto& m : v->as_array()) {
      if (!m.is_string()) {
        return InternalError(fmt::format("API key {}: allowed_models holds a non-string", k.id));
      }
      models.emplace_back(m.as_string());
    }
    k.allowed_models = std::move(models);
  }
  k.prefix = s.ColText(6);
  k.secret_hash = s.ColText(7);
  k.expires_at = s.ColOptTime(8);
  k.revoked_at = s.ColOptTime(9);
  k.last_used_at = s.ColOptTime(10);
  k.created_at = s.ColTime(11);
  ASSIGN_OR_RETURN(k.limits, DecodeLimits(s, 12, fmt::format("API key {}", k.id)));
  if (!s.ColNull(13)) {
    auto v = ParseJson(s.ColText(13));
    if (!v.ok() || !v->is_array()) {
      return InternalError(
          fmt::format("API key {}: stored allowed_cidrs is not a JSON array", k.id));
    }
    std::vector<std::string> cidrs;
    for (const auto& c : v->as_array()) {
      if (!c.is_string()) {
        return InternalError(fmt::format("API key {}: allowed_cidrs holds a non-string", k.id));
      }
      cidrs.emplace_back(c.as_string());
    }
    k.allowed_cidrs = std::move(cidrs);
  }
  return k;
}
// A list of strings as a JSON array (allowed_models, allowed_cidrs); nullopt stays NULL.
std::optional<std::string> EncodeAllowedModels(const std::optional<std::vector<std::string>>& m) {
  if (!m) return std::nullopt;
  json::array a;
  for (const auto& name : *m) a.emplace_back(name);
  return ToJsonString(a);
}

constexpr std::string_view kClusterCols =
    "id, name, description, is_default, registration_token, created_at, updated_at, gpu_sharing";
Cluster DecodeCluster(const Stmt& s) {
  Cluster c;
  c.id = s.ColInt(0);
  c.name = s.ColText(1);
  c.description = s.ColText(2);
  c.is_default = s.ColBool(3);
  c.registration_token = s.ColText(4);
  c.created_at = s.ColTime(5);
  c.updated_at = s.ColTime(6);
  c.gpu_sharing = types::ParseGpuSharing(s.ColText(7)).value_or(types::GpuSharing::kEnforced);
  return c;
}

constexpr std::string_view kWorkerCols =
    "id, cluster_id, name, state, state_message, labels, maintenance, maintenance_message, "
    "status, address, port, token_hash, last_heartbeat_at, created_at, updated_at";
// The same columns with an empty status, for a write that replaces the status (a heartbeat):
// the stored one is neither read nor decoded.
constexpr std::string_view kWorkerColsButStatus =
    "id, cluster_id, name, state, state_message, labels, maintenance, maintenance_message, "
    "'{}', address, port, token_hash, last_heartbeat_at, created_at, updated_at";
std::string EncodeLabels(const std::map<std::string, std::string>& labels) {
  json::object o;
  for (const auto& [k, v] : labels) o[k] = v;
  return ToJsonString(o);
}
Result<Worker> DecodeWorker(const Stmt& s) {
  Worker w;
  w.id = s.ColInt(0);
  w.cluster_id = s.ColInt(1);
  w.name = s.ColText(2);
  const std::string state = s.ColText(3);
  auto parsed = types::ParseWorkerState(state);
  if (!parsed)
    return InternalError(fmt::format("worker {}: stored state '{}' is unknown", w.id, state));
  w.state = *parsed;
  w.state_message = s.ColText(4);
  auto labels = ParseJson(s.ColText(5));
  if (!labels.ok() || !labels->is_object()) {
    return InternalError(fmt::format("worker {}: stored labels are not a JSON object", w.id));
  }
  for (const auto& [k, v] : labels->as_object()) {
    if (!v.is_string())
      return InternalError(
          fmt::format("worker {}: label {} is not a string", w.id, std::string(k)));
    w.labels[std::string(k)] = std::string(v.as_string());
  }
  w.maintenance = s.ColBool(6);
  w.maintenance_message = s.ColText(7);
  auto status_json = ParseJson(s.ColText(8));
  if (!status_json.ok() || !status_json->is_object()) {
    return InternalError(fmt::format("worker {}: stored status is not a JSON object", w.id));
  }
  auto status = types::WorkerStatusFromJson(status_json->as_object());
  if (!status.ok()) {
    return InternalError(
        fmt::format("worker {}: stored status: {}", w.id, status.status().message()));
  }
  w.status = std::move(*status);
  w.address = s.ColText(9);
  w.port = static_cast<int>(s.ColInt(10));
  w.token_hash = s.ColText(11);
  w.last_heartbeat_at = s.ColOptTime(12);
  w.created_at = s.ColTime(13);
  w.updated_at = s.ColTime(14);
  return w;
}

// Wraps a decoder that cannot fail so that every decoder has the Result<T>(const Stmt&) shape.
template <typename T, T (*F)(const Stmt&)>
Result<T> Ok(const Stmt& s) {
  return F(s);
}

// ---- list queries ------------------------------------------------------------------------------

struct SortField {
  std::string_view name;    // as the API spells it
  std::string_view column;  // the SQL expression (a fixed string, never user input)
};

struct ListQuery {
  std::string_view resource;  // for error messages
  std::string_view columns;
  std::string_view from;
  std::string_view id_column;  // tie-breaker and default order
  std::vector<SortField> sorts;
  std::vector<std::string_view> search_columns;
  std::vector<std::string> where = {};  // fixed SQL fragments with '?' placeholders
  std::vector<std::variant<int64_t, std::string>> args = {};

  // Keeps the rows whose `column` (a fixed SQL expression) equals `value`.
  void WhereEquals(std::string_view column, std::variant<int64_t, std::string> value) {
    where.push_back(fmt::format("{} = ?", column));
    args.push_back(std::move(value));
  }
  // Keeps the rows whose `project_column` names a project that `user_id` is a member of.
  void WhereMemberOf(std::string_view project_column, int64_t user_id) {
    where.push_back(fmt::format("{} IN (SELECT project_id FROM project_members WHERE user_id = ?)",
                                project_column));
    args.emplace_back(user_id);
  }
  // For resources that belong to a project: the project_id and member_user_id filters of
  // `options`, on `project_column`.
  void WhereInProjectScope(std::string_view project_column, const ListOptions& options) {
    if (options.project_id) WhereEquals(project_column, *options.project_id);
    if (options.member_user_id) WhereMemberOf(project_column, *options.member_user_id);
  }
};

Event MakeEvent(std::string resource, Event::Type type, int64_t id,
                std::optional<int64_t> project_id, json::object data) {
  Event e;
  e.resource = std::move(resource);
  e.type = type;
  e.id = id;
  e.project_id = project_id;
  e.data = std::move(data);
  return e;
}

Event UserEvent(Event::Type t, const User& u) {
  return MakeEvent("users", t, u.id, std::nullopt, types::ToJson(u));
}
Event ProjectEvent(Event::Type t, const Project& p) {
  return MakeEvent("projects", t, p.id, p.id, types::ToJson(p));
}
Event MemberEvent(Event::Type t, const ProjectMember& m) {
  return MakeEvent("project-members", t, m.user_id, m.project_id, types::ToJson(m));
}
Event ApiKeyEvent(Event::Type t, const ApiKey& k) {
  return MakeEvent("api-keys", t, k.id, k.project_id, types::ToJson(k));
}
Event ClusterEvent(Event::Type t, const Cluster& c) {
  return MakeEvent("clusters", t, c.id, std::nullopt, types::ToJson(c));
}
Event WorkerEvent(Event::Type t, const Worker& w) {
  return MakeEvent("workers", t, w.id, std::nullopt, types::ToJson(w));
}

// ---- models and model instances: row codecs and events ---------------------------------------

constexpr std::string_view kModelCols =
    "m.id, m.project_id, m.name, m.replicas, m.spec, m.created_at, m.updated_at, (SELECT COUNT(*) "
    "FROM model_instances i WHERE i.model_id = m.id AND i.state = 'RUNNING')";

// The stored spec: the public JSON minus what the server owns (and re-derives on read).
std::string EncodeModelSpec(const types::Model& m) {
  json::object o = types::ToJson(m);
  for (const char* k : {"id", "created_at", "updated_at", "ready_replicas"}) o.erase(k);
  return ToJsonString(o);
}

Result<types::Model> DecodeModel(const Stmt& s) {
  const int64_t id = s.ColInt(0);
  auto spec = ParseJson(s.ColText(4));
  if (!spec.ok() || !spec->is_object()) {
    return InternalError(fmt::format("model {}: stored spec is not a JSON object", id));
  }
  Result<types::Model> parsed = types::ModelFromJson(spec->as_object());
  if (!parsed.ok()) {
    return InternalError(fmt::format("model {}: stored spec: {}", id, parsed.status().message()));
  }
  types::Model m = std::move(parsed).value();
  m.id = id;
  m.project_id = s.ColInt(1);
  m.name = s.ColText(2);
  m.replicas = static_cast<int>(s.ColInt(3));
  m.created_at = s.ColTime(5);
  m.updated_at = s.ColTime(6);
  m.ready_replicas = static_cast<int>(s.ColInt(7));
  return m;
}

constexpr std::string_view kBackendCols = "id, name, spec, created_at, updated_at";

Result<BackendRecord> DecodeBackend(const Stmt& s) {
  BackendRecord b;
  b.id = s.ColInt(0);
  b.name = s.ColText(1);
  b.spec = s.ColText(2);
  b.created_at = s.ColTime(3);
  b.updated_at = s.ColTime(4);
  return b;
}

Event BackendEvent(Event::Type t, const BackendRecord& b) {
  json::object data;
  if (auto spec = ParseJson(b.spec); spec.ok() && spec->is_object()) data = spec->as_object();
  data["id"] = b.id;
  data["name"] = b.name;
  data["created_at"] = FormatRfc3339(b.created_at);
  data["updated_at"] = FormatRfc3339(b.updated_at);
  return MakeEvent("backends", t, b.id, std::nullopt, std::move(data));
}

Event ModelEvent(Event::Type t, const types::Model& m) {
  return MakeEvent("models", t, m.id, m.project_id, types::ToJson(m));
}
Event InstanceEvent(Event::Type t, const types::ModelInstance& i) {
  return MakeEvent("model-instances", t, i.id, i.project_id, types::ToJson(i));
}

constexpr std::string_view kInstanceCols =
    "id, model_id, project_id, name, state, state_message, worker_id, worker_name, gpu_indexes, "
    "port, claim, distributed_servers, restart_count, last_restart_at, unschedulable_reasons, "
    "created_at, updated_at, engine_secret";

std::string EncodeIntArray(const std::vector<int>& v) {
  json::array a;
  for (int i : v) a.emplace_back(i);
  return ToJsonString(a);
}

// Stored JSON is written by this file only; a shape it would not write is kInternal.
bool DecodeIntArray(const json::value& v, std::vector<int>& out) {
  if (!v.is_array()) return false;
  for (const json::value& e : v.as_array()) {
    if (!e.is_int64()) return false;
    out.push_back(static_cast<int>(e.as_int64()));
  }
  return true;
}

bool DecodeClaim(const json::value& v, types::ResourceClaim& c) {
  if (!v.is_object()) return false;
  Result<types::ResourceClaim> claim = types::ResourceClaimFromJson(v.as_object());
  if (!claim.ok()) return false;
  c = std::move(claim).value();
  return true;
}

std::string EncodeServers(const std::vector<types::DistributedServer>& servers) {
  json::array a;
  for (const auto& d : servers) {
    json::array gpus;
    for (int g : d.gpu_indexes) gpus.emplace_back(g);
    a.emplace_back(json::object{{"worker_id", d.worker_id},
                                {"worker_name", d.worker_name},
                                {"gpu_indexes", std::move(gpus)},
                                {"claim", types::ToJson(d.claim)},
                                {"address", d.address},
                                {"port", d.port},
                                {"state", d.state},
                                {"state_message", d.state_message},
                                {"restart_count", d.restart_count}});
  }
  return ToJsonString(a);
}

bool DecodeServers(const json::value& v, std::vector<types::DistributedServer>& out) {
  if (!v.is_array()) return false;
  for (const json::value& e : v.as_array()) {
    if (!e.is_object()) return false;
    const json::object& o = e.as_object();
    types::DistributedServer d;
    const auto* wid = o.if_contains("worker_id");
    const auto* wname = o.if_contains("worker_name");
    const auto* gpus = o.if_contains("gpu_indexes");
    const auto* claim = o.if_contains("claim");
    if (!wid || !wid->is_int64() || !wname || !wname->is_string() || !gpus || !claim) return false;
    d.worker_id = wid->as_int64();
    d.worker_name = std::string(wname->as_string());
    if (!DecodeIntArray(*gpus, d.gpu_indexes) || !DecodeClaim(*claim, d.claim)) return false;
    // What the subordinate reported (absent in rows written before it could report).
    if (const auto* v = o.if_contains("address"); v && v->is_string()) d.address = v->as_string();
    if (const auto* v = o.if_contains("port"); v && v->is_int64()) d.port = int(v->as_int64());
    if (const auto* v = o.if_contains("state"); v && v->is_string()) d.state = v->as_string();
    if (const auto* v = o.if_contains("state_message"); v && v->is_string()) {
      d.state_message = v->as_string();
    }
    if (const auto* v = o.if_contains("restart_count"); v && v->is_int64()) {
      d.restart_count = int(v->as_int64());
    }
    out.push_back(std::move(d));
  }
  return true;
}

Result<types::ModelInstance> DecodeInstance(const Stmt& s) {
  types::ModelInstance i;
  i.id = s.ColInt(0);
  i.model_id = s.ColInt(1);
  i.project_id = s.ColInt(2);
  i.name = s.ColText(3);
  const std::string state = s.ColText(4);
  auto parsed = types::ParseInstanceState(state);
  if (!parsed) {
    return InternalError(fmt::format("instance {}: stored state '{}' is unknown", i.id, state));
  }
  i.state = *parsed;
  i.state_message = s.ColText(5);
  i.worker_id = s.ColInt(6);
  i.worker_name = s.ColText(7);
  auto gpus = ParseJson(s.ColText(8));
  auto claim = ParseJson(s.ColText(10));
  auto servers = ParseJson(s.ColText(11));
  auto reasons = ParseJson(s.ColText(14));
  if (!gpus.ok() || !DecodeIntArray(*gpus, i.gpu_indexes) || !claim.ok() ||
      !DecodeClaim(*claim, i.claim) || !servers.ok() ||
      !DecodeServers(*servers, i.distributed_servers) || !reasons.ok() || !reasons->is_object()) {
    return InternalError(fmt::format("instance {}: stored placement JSON is malformed", i.id));
  }
  for (const auto& [k, v] : reasons->as_object()) {
    if (!v.is_string()) return InternalError(fmt::format("instance {}: bad reasons", i.id));
    i.unschedulable_reasons[std::string(k)] = std::string(v.as_string());
  }
  i.port = static_cast<int>(s.ColInt(9));
  i.restart_count = static_cast<int>(s.ColInt(12));
  i.last_restart_at = s.ColOptTime(13);
  i.created_at = s.ColTime(15);
  i.updated_at = s.ColTime(16);
  i.engine_secret = s.ColText(17);
  return i;
}

// ---- the store ---------------------------------------------------------------------------------

class SqliteStore final : public Store {
 public:
  SqliteStore(sqlite3* db, EventBus& bus, const Clock& clock) : db_(db), bus_(bus), clock_(clock) {}
  ~SqliteStore() override {
    for (auto& [sql, stmt] : stmts_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }

  // Applies pending migrations. Called once by OpenSqliteStore before the store is shared.
  Status Migrate();

  // store::Store
  Result<int> SchemaVersion() override {
    std::lock_guard lock(mu_);
    return CurrentVersion();
  }
  Status Ping() override {
    std::lock_guard lock(mu_);
    ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT 1"));
    return s.Run();
  }

  Result<User> CreateUser(const User& user) override;
  Result<User> GetUser(int64_t id) override {
    std::lock_guard lock(mu_);
    return LoadUser(id);
  }
  Result<User> GetUserByUsername(const std::string& username) override;
  Result<ListResult<User>> ListUsers(const ListOptions& options) override;
  Result<User> UpdateUser(int64_t id, const UserPatch& patch) override;
  Status DeleteUser(int64_t id) override;
  Result<int64_t> CountActiveAdmins() override;

  Result<Session> CreateSession(const Session& session) override;
  Result<Session> GetSession(int64_t id) override;
  Result<ListResult<Session>> ListSessions(const ListOptions& options) override;
  Status TouchSession(int64_t id, Timestamp at) override;
  Status RevokeSession(int64_t id, Timestamp at) override;
  Result<int64_t> RevokeUserSessions(int64_t user_id, std::optional<int64_t> keep_session_id,
                                     Timestamp at) override;
  Result<int64_t> DeleteExpiredSessions(Timestamp before) override;

  Result<Project> CreateProject(const Project& project) override;
  Result<Project> GetProject(int64_t id) override {
    std::lock_guard lock(mu_);
    return LoadProject(id);
  }
  Result<Project> GetProjectByName(const std::string& name) override;
  Result<ListResult<Project>> ListProjects(const ListOptions& options) override;
  Result<Project> UpdateProject(int64_t id, const ProjectPatch& patch) override;
  Status DeleteProject(int64_t id) override;

  Result<ProjectMember> AddProjectMember(int64_t project_id, int64_t user_id,
                                         types::ProjectRole role) override;
  Result<ProjectMember> UpdateProjectMember(int64_t project_id, int64_t user_id,
                                            types::ProjectRole role) override;
  Status RemoveProjectMember(int64_t project_id, int64_t user_id) override;
  Result<ListResult<ProjectMember>> ListProjectMembers(const ListOptions& options) override;
  Result<std::map<int64_t, types::ProjectRole>> GetProjectRoles(int64_t user_id) override;

  Result<ApiKey> CreateApiKey(const ApiKey& key) override;
  Result<ApiKey> GetApiKey(int64_t id) override {
    std::lock_guard lock(mu_);
    return LoadApiKey(id);
  }
  Result<ApiKey> GetApiKeyByHash(const std::string& secret_hash) override;
  Result<ListResult<ApiKey>> ListApiKeys(const ListOptions& options) override;
  Result<ApiKey> RevokeApiKey(int64_t id, Timestamp at) override;
  Result<ApiKey> UpdateApiKey(int64_t id, const ApiKeyPatch& patch) override;
  Status DeleteApiKey(int64_t id) override;
  Status TouchApiKey(int64_t id, Timestamp at) override;

  Result<Cluster> CreateCluster(const Cluster& cluster) override;
  Result<Cluster> GetCluster(int64_t id) override {
    std::lock_guard lock(mu_);
    return LoadCluster(id);
  }
  Result<Cluster> GetDefaultCluster() override;
  Result<ListResult<Cluster>> ListClusters(const ListOptions& options) override;
  Result<Cluster> UpdateCluster(int64_t id, const ClusterPatch& patch) override;
  Status DeleteCluster(int64_t id) override;

  Result<Worker> UpsertWorkerByName(int64_t cluster_id, const std::string& name,
                                    const std::string& address, int port,
                                    const std::string& token_hash,
                                    const std::map<std::string, std::string>& labels) override;
  Result<Worker> GetWorker(int64_t id) override {
    std::lock_guard lock(mu_);
    return LoadWorker(id);
  }
  Result<Worker> GetWorkerByTokenHash(const std::string& token_hash) override;
  Result<ListResult<Worker>> ListWorkers(const ListOptions& options) override;
  Result<Worker> UpdateWorker(int64_t id, const WorkerPatch& patch) override;
  Result<Worker> RecordHeartbeat(int64_t id, const types::WorkerStatus& status,
                                 Timestamp at) override;
  Result<Worker> SetWorkerState(int64_t id, types::WorkerState state,
                                const std::string& message) override;
  Result<std::vector<Worker>> MarkStaleWorkersNotReady(Timestamp heartbeat_before,
                                                       const std::string& message) override;
  Status DeleteWorker(int64_t id) override;
  Result<ScrapeTargets> ListScrapeTargets() override;

  Result<types::Model> CreateModel(const types::Model& model) override;
  Result<types::Model> GetModel(int64_t id) override;
  Result<types::Model> GetModelByName(int64_t project_id, const std::string& name) override;
  Result<ListResult<types::Model>> ListModels(const ListOptions& options) override;
  Result<types::Model> UpdateModel(const types::Model& model) override;
  Status DeleteModel(int64_t id) override;
  Result<types::ModelInstance> CreateModelInstance(const types::ModelInstance& instance) override;
  Result<types::ModelInstance> GetModelInstance(int64_t id) override;
  Result<ListResult<types::ModelInstance>> ListModelInstances(
      const ListOptions& options, const ModelInstanceFilter& filter) override;
  Result<types::ModelInstance> UpdateModelInstance(int64_t id,
                                                   const ModelInstancePatch& patch) override;
  Status DeleteModelInstance(int64_t id) override;

  Result<BackendRecord> CreateBackend(const BackendRecord& backend) override;
  Result<BackendRecord> GetBackend(const std::string& name) override;
  Result<std::vector<BackendRecord>> ListBackends() override;
  Result<BackendRecord> UpdateBackend(const BackendRecord& backend,
                                      const std::vector<std::string>& removed_versions) override;
  Status DeleteBackend(const std::string& name) override;

  // Usage records: implemented in sqlite/sqlite_usage.cc, on this store's connection and lock.
  Status InsertUsageRecords(const std::vector<UsageRecord>& batch) override {
    std::lock_guard lock(mu_);
    return SqliteInsertUsageRecords(db_, batch);
  }
  Result<std::vector<UsageSummary>> QueryUsage(const UsageQuery& query) override {
    std::lock_guard lock(mu_);
    return SqliteQueryUsage(db_, query, clock_.Now());
  }

  // The GPU-time ledger and prices: sqlite/sqlite_gpu_ledger.cc and sqlite/sqlite_prices.cc. The
  // ledger follows the instance and worker rows from WriteInstance, WriteWorker and the deletes.
  Result<std::vector<GpuInterval>> ListGpuIntervals(
      Timestamp from, Timestamp to,
      const std::optional<std::vector<int64_t>>& project_ids) override {
    std::lock_guard lock(mu_);
    return SqliteListGpuIntervals(db_, from, to, project_ids);
  }
  Result<PriceTable> GetPrices() override {
    std::lock_guard lock(mu_);
    return SqliteGetPrices(db_);
  }
  Result<PriceTable> ReplacePrices(const PriceTable& table) override {
    std::lock_guard lock(mu_);
    return SqliteReplacePrices(db_, table, clock_.Now());
  }
  // The audit trail: sqlite/sqlite_audit.cc. Appends run under mu_ in one transaction each, so
  // the chain is linear.
  Result<AuditEvent> AppendAuditEvent(const AuditEvent& event) override {
    std::lock_guard lock(mu_);
    std::vector<Event> none;
    AuditEvent stored;
    RETURN_IF_ERROR(Transaction(none, [&]() -> Status {
      ASSIGN_OR_RETURN(stored, SqliteAppendAuditEvent(db_, event, clock_.Now()));
      return OkStatus();
    }));
    return stored;
  }
  Result<ListResult<AuditEvent>> ListAuditEvents(const ListOptions& options,
                                                 const AuditFilter& filter) override {
    std::lock_guard lock(mu_);
    return SqliteListAuditEvents(db_, options, filter);
  }
  Result<AuditVerification> VerifyAuditChain() override {
    std::lock_guard lock(mu_);
    return SqliteVerifyAuditChain(db_);
  }
  Result<int64_t> PruneAuditEvents(Timestamp before) override {
    std::lock_guard lock(mu_);
    std::vector<Event> none;
    int64_t deleted = 0;
    RETURN_IF_ERROR(Transaction(none, [&]() -> Status {
      ASSIGN_OR_RETURN(deleted, SqlitePruneAuditEvents(db_, before));
      return OkStatus();
    }));
    return deleted;
  }

  // Closes or continues the ledger's open intervals after a start. Called once by
  // OpenSqliteStore, after Migrate.
  Status RecoverGpuLedger() {
    std::lock_guard lock(mu_);
    std::vector<Event> events;
    return Transaction(events, [&] { return SqliteLedgerRecover(db_, clock_.Now()); });
  }

  // Model files: implemented in sqlite/sqlite_model_files.cc, on this store's connection and lock.
  Result<types::ModelFile> UpsertModelFile(const types::ModelFile& file) override {
    std::lock_guard lock(mu_);
    const bool existed = ModelFileExists(file);
    ASSIGN_OR_RETURN(types::ModelFile f, SqliteUpsertModelFile(db_, file, clock_.Now()));
    PublishModelFile(existed ? Event::Type::kUpdated : Event::Type::kCreated, f);
    return f;
  }
  Result<types::ModelFile> GetModelFile(int64_t id) override {
    std::lock_guard lock(mu_);
    return SqliteGetModelFile(db_, id);
  }
  Result<ListResult<types::ModelFile>> ListModelFiles(const ListOptions& options,
                                                      std::optional<int64_t> worker_id) override {
    std::lock_guard lock(mu_);
    return SqliteListModelFiles(db_, options, worker_id);
  }
  Result<types::ModelFile> SetModelFileState(int64_t id, types::ModelFileState state,
                                             const std::string& message) override {
    std::lock_guard lock(mu_);
    ASSIGN_OR_RETURN(types::ModelFile f,
                     SqliteSetModelFileState(db_, id, state, message, clock_.Now()));
    PublishModelFile(Event::Type::kUpdated, f);
    return f;
  }
  Status DeleteModelFile(int64_t id) override {
    std::lock_guard lock(mu_);
    ASSIGN_OR_RETURN(types::ModelFile f, SqliteGetModelFile(db_, id));
    RETURN_IF_ERROR(SqliteDeleteModelFile(db_, id));
    PublishModelFile(Event::Type::kDeleted, f);
    return OkStatus();
  }

  // Model routes: implemented in sqlite/sqlite_model_routes.cc, on this store's connection and
  // lock, inside this store's transactions.
  Result<types::ModelRoute> CreateModelRoute(const types::ModelRoute& route) override {
    types::ModelRoute r = route;
    r.id = 0;
    return WriteModelRoute(r, Event::Type::kCreated);
  }
  Result<types::ModelRoute> GetModelRoute(int64_t id) override {
    std::lock_guard lock(mu_);
    return SqliteGetModelRoute(db_, id);
  }
  Result<ListResult<types::ModelRoute>> ListModelRoutes(const ListOptions& options) override {
    std::lock_guard lock(mu_);
    return SqliteListModelRoutes(db_, options);
  }
  Result<types::ModelRoute> UpdateModelRoute(const types::ModelRoute& route) override {
    if (route.id <= 0) return NotFoundError(fmt::format("model route {} not found", route.id));
    return WriteModelRoute(route, Event::Type::kUpdated);
  }
  Status DeleteModelRoute(int64_t id) override {
    std::lock_guard lock(mu_);
    std::vector<Event> events;
    return Transaction(events, [&]() -> Status {
      ASSIGN_OR_RETURN(types::ModelRoute r, SqliteGetModelRoute(db_, id));
      RETURN_IF_ERROR(SqliteDeleteModelRoute(db_, id));
      events.push_back(RouteEvent(Event::Type::kDeleted, r));
      return OkStatus();
    });
  }

 private:
  bool ModelFileExists(const types::ModelFile& file) {
    Result<Stmt> s =
        Prepare("SELECT 1 FROM model_files WHERE worker_id = ? AND source_key = ? AND backend = ?");
    if (!s.ok()) return false;
    s->Int(file.worker_id).Text(file.source_key).Text(file.backend);
    Result<bool> row = s->Step();
    return row.ok() && *row;
  }
  static Event RouteEvent(Event::Type type, const types::ModelRoute& r) {
    Event e;
    e.resource = "model-routes";
    e.type = type;
    e.id = r.id;
    e.project_id = r.project_id;
    e.data = types::ToJson(r);
    return e;
  }
  Result<types::ModelRoute> WriteModelRoute(const types::ModelRoute& route, Event::Type type) {
    RETURN_IF_ERROR(types::ValidateModelRoute(route));
    std::lock_guard lock(mu_);
    types::ModelRoute r;
    std::vector<Event> events;
    RETURN_IF_ERROR(Transaction(events, [&]() -> Status {
      ASSIGN_OR_RETURN(r, SqliteWriteModelRoute(db_, route, clock_.Now()));
      events.push_back(RouteEvent(type, r));
      return OkStatus();
    }));
    return r;
  }
  // Queues kUpdated for every route that lists `model_id`, read after the model's targets are
  // gone (call after deleting the model, inside the same transaction).
  Status RouteEventsAfterModelDelete(const std::vector<int64_t>& route_ids,
                                     std::vector<Event>& events) {
    for (int64_t id : route_ids) {
      ASSIGN_OR_RETURN(types::ModelRoute r, SqliteGetModelRoute(db_, id));
      events.push_back(RouteEvent(Event::Type::kUpdated, r));
    }
    return OkStatus();
  }
  void PublishModelFile(Event::Type type, const types::ModelFile& f) {
    Event e;
    e.resource = "model-files";
    e.type = type;
    e.id = f.id;
    e.data = types::ToJson(f);
    bus_.Publish(e);
  }

  // Takes mu_. In one transaction: runs `insert` (insert(row) makes its checks, stamps and binds
  // the row and runs the INSERT), takes the new row's id and queues `event`'s kCreated.
  template <typename T, typename Insert>
  Result<T> InsertRow(T row, Event (*event)(Event::Type, const T&), Insert&& insert) {
    std::lock_guard lock(mu_);
    std::vector<Event> events;
    RETURN_IF_ERROR(Transaction(events, [&]() -> Status {
      RETURN_IF_ERROR(insert(row));
      row.id = sqlite3_last_insert_rowid(db_);
      events.push_back(event(Event::Type::kCreated, row));
      return OkStatus();
    }));
    return row;
  }

  // Takes mu_. In one transaction: loads row `id` with `load`, stamps updated_at, lets `change`
  // edit it (change(row, events) may fail, or queue events of its own), writes it with `write` and
  // queues `event`'s kUpdated.
  template <typename T, typename Change>
  Result<T> UpdateRow(int64_t id, Result<T> (SqliteStore::*load)(int64_t),
                      Status (SqliteStore::*write)(const T&), Event (*event)(Event::Type, const T&),
                      Change&& change) {
    std::lock_guard lock(mu_);
    T row;
    std::vector<Event> events;
    RETURN_IF_ERROR(Transaction(events, [&]() -> Status {
      ASSIGN_OR_RETURN(row, (this->*load)(id));
      row.updated_at = clock_.Now();
      RETURN_IF_ERROR(change(row, events));
      RETURN_IF_ERROR((this->*write)(row));
      events.push_back(event(Event::Type::kUpdated, row));
      return OkStatus();
    }));
    return row;
  }

  // Takes mu_. In one transaction: loads row `id` with `load` (kNotFound when there is none),
  // runs `delete_sql` with the id, then `after(db, id, now)` when given (the GPU ledger follows
  // deleted instances and workers), and queues `event`'s kDeleted.
  template <typename T>
  Status DeleteRow(int64_t id, Result<T> (SqliteStore::*load)(int64_t), std::string_view delete_sql,
                   Event (*event)(Event::Type, const T&),
                   Status (*after)(sqlite3*, int64_t, Timestamp) = nullptr) {
    std::lock_guard lock(mu_);
    std::vector<Event> events;
    return Transaction(events, [&]() -> Status {
      ASSIGN_OR_RETURN(T row, (this->*load)(id));
      RETURN_IF_ERROR(Exec(delete_sql, id));
      if (after != nullptr) RETURN_IF_ERROR(after(db_, id, clock_.Now()));
      events.push_back(event(Event::Type::kDeleted, row));
      return OkStatus();
    });
  }

  // The private helpers below require mu_ held.
  Result<Stmt> Prepare(std::string_view sql);
  Status Exec(std::string_view sql);
  // Runs a statement with one integer parameter that returns no rows.
  Status Exec(std::string_view sql, int64_t arg);
  Result<int> CurrentVersion();

  // Runs `fn` inside BEGIN IMMEDIATE … COMMIT; rolls back if `fn` or the commit fails. Events
  // that `fn` queued in `events` are published only after a successful commit.
  template <typename F>
  Status Transaction(std::vector<Event>& events, F&& fn) {
    RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status s = fn();
    if (s.ok()) s = Exec("COMMIT");
    if (!s.ok()) {
      // After a failed COMMIT SQLite may already have rolled back; ROLLBACK then errors harmlessly.
      if (!sqlite3_get_autocommit(db_)) (void)Exec("ROLLBACK");
      events.clear();
      return s;
    }
    // Published under mu_ so that subscribers see changes in commit order.
    for (const Event& e : events) bus_.Publish(e);
    return OkStatus();
  }

  // Loads one row by a single-parameter query; kNotFound with `not_found` when there is none.
  template <typename T, typename Decode, typename Arg>
  Result<T> LoadOne(std::string_view sql, const Arg& arg, Decode decode, std::string not_found) {
    ASSIGN_OR_RETURN(Stmt s, Prepare(sql));
    if constexpr (std::is_integral_v<Arg>) {
      s.Int(arg);
    } else {
      s.Text(arg);
    }
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return NotFoundError(std::move(not_found));
    return decode(s);
  }

  template <typename T, typename Decode>
  Result<ListResult<T>> RunList(ListQuery q, const ListOptions& options, Decode decode);

  Result<User> LoadUser(int64_t id) {
    return LoadOne<User>(fmt::format("SELECT {} FROM users WHERE id = ?", kUserCols), id,
                         Ok<User, DecodeUser>, fmt::format("user {} not found", id));
  }
  Result<Project> LoadProject(int64_t id) {
    return LoadOne<Project>(fmt::format("SELECT {} FROM projects WHERE id = ?", kProjectCols), id,
                            DecodeProject, fmt::format("project {} not found", id));
  }
  Result<ApiKey> LoadApiKey(int64_t id) {
    return LoadOne<ApiKey>(fmt::format("SELECT {} FROM api_keys WHERE id = ?", kApiKeyCols), id,
                           DecodeApiKey, fmt::format("API key {} not found", id));
  }
  Result<Cluster> LoadCluster(int64_t id) {
    return LoadOne<Cluster>(fmt::format("SELECT {} FROM clusters WHERE id = ?", kClusterCols), id,
                            Ok<Cluster, DecodeCluster>, fmt::format("cluster {} not found", id));
  }
  Result<Worker> LoadWorker(int64_t id) {
    return LoadOne<Worker>(fmt::format("SELECT {} FROM workers WHERE id = ?", kWorkerCols), id,
                           DecodeWorker, fmt::format("worker {} not found", id));
  }
  // LoadWorker without the status (left empty).
  Result<Worker> LoadWorkerButStatus(int64_t id) {
    return LoadOne<Worker>(fmt::format("SELECT {} FROM workers WHERE id = ?", kWorkerColsButStatus),
                           id, DecodeWorker, fmt::format("worker {} not found", id));
  }
  Result<ProjectMember> LoadMember(int64_t project_id, int64_t user_id);
  // The memberships whose `column` (user_id or project_id) equals `value`.
  Result<std::vector<ProjectMember>> LoadMembersWhere(std::string_view column, int64_t value);
  // Deletes the API keys and memberships whose `column` (user_id or project_id) equals `value`,
  // queuing kDeleted for the keys, then for the memberships.
  Status DeleteKeysAndMembersOf(std::string_view column, int64_t value, std::vector<Event>& events);
  // Collects every row of a query with one integer parameter.
  template <typename T, typename Decode>
  Result<std::vector<T>> LoadAll(std::string_view sql, int64_t arg, Decode decode);

  Status WriteUser(const User& u);
  Status WriteProject(const Project& p);
  Status WriteCluster(const Cluster& c);
  // Makes every default cluster but `keep_id` a non-default one updated at `at`, queuing
  // kUpdated for each.
  Status UnsetOtherDefaultClusters(int64_t keep_id, Timestamp at, std::vector<Event>& events);
  Status WriteWorker(const Worker& w);
  Result<types::Model> LoadModel(int64_t id);
  Result<types::ModelInstance> LoadInstance(int64_t id);
  Status WriteInstance(const types::ModelInstance& i);
  // Deletes the instances whose `column` (a fixed column name) equals `value`, queuing kDeleted.
  Status DeleteInstancesOf(std::string_view column, int64_t value, std::vector<Event>& events);
  Result<BackendRecord> LoadBackend(const std::string& name);
  // kFailedPrecondition naming the first model that uses backend `name` (with one of `versions`
  // when given).
  Status CheckBackendUnused(const std::string& name,
                            const std::optional<std::vector<std::string>>& versions);

  std::mutex mu_;
  sqlite3* const db_;  // guarded by mu_
  EventBus& bus_;
  const Clock& clock_;
  std::unordered_map<std::string, sqlite3_stmt*> stmts_;  // guarded by mu_
  std::unordered_map<int64_t, int64_t> last_touch_ms_;    // guarded by mu_; key id → written ms
};

Result<Stmt> SqliteStore::Prepare(std::string_view sql) {
  auto it = stmts_.find(std::string(sql));
  if (it != stmts_.end() && !sqlite3_stmt_busy(it->second)) return Stmt(db_, it->second, false);
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db_, rc, fmt::format("prepare '{}'", sql));
  if (it != stmts_.end()) return Stmt(db_, stmt, true);  // the cached one is mid-iteration
  stmts_.emplace(std::string(sql), stmt);
  return Stmt(db_, stmt, false);
}

Status SqliteStore::Exec(std::string_view sql) {
  ASSIGN_OR_RETURN(Stmt s, Prepare(sql));
  return s.Run();
}

Status SqliteStore::Exec(std::string_view sql, int64_t arg) {
  ASSIGN_OR_RETURN(Stmt s, Prepare(sql));
  s.Int(arg);
  return s.Run();
}

Result<int> SqliteStore::CurrentVersion() {
  ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"));
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return InternalError("schema version query returned no row");
  return static_cast<int>(s.ColInt(0));
}

Status SqliteStore::Migrate() {
  std::lock_guard lock(mu_);
  RETURN_IF_ERROR(Exec(
      "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT "
      "NULL, applied_at BIGINT NOT NULL)"));
  const int latest = LatestSchemaVersion();
  for (const Migration& m : EmbeddedMigrations()) {
    // Re-read the version inside each transaction: another process may be migrating the same file.
    std::vector<Event> none;
    Status s = Transaction(none, [&]() -> Status {
      ASSIGN_OR_RETURN(int current, CurrentVersion());
      if (current > latest) {
        return FailedPreconditionError(fmt::format(
            "database schema version {} is newer than this segma ({})", current, latest));
      }
      if (current >= m.version) return OkStatus();
      char* err = nullptr;
      const std::string sql(m.sql);
      const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
      if (rc != SQLITE_OK) {
        Status e = UnavailableError(
            fmt::format("migration {} failed: {}", m.name, err ? err : sqlite3_errstr(rc)));
        sqlite3_free(err);
        return e;
      }
      ASSIGN_OR_RETURN(
          Stmt ins,
          Prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"));
      ins.Int(m.version).Text(m.name).Time(clock_.Now());
      RETURN_IF_ERROR(ins.Run());
      Logger("store")->info("applied migration {}", m.name);
      return OkStatus();
    });
    RETURN_IF_ERROR(s);
  }
  // With no pending migration the loop may not have compared versions at all.
  ASSIGN_OR_RETURN(int current, CurrentVersion());
  if (current > latest) {
    return FailedPreconditionError(
        fmt::format("database schema version {} is newer than this segma ({})", current, latest));
  }
  return OkStatus();
}

template <typename T, typename Decode>
Result<std::vector<T>> SqliteStore::LoadAll(std::string_view sql, int64_t arg, Decode decode) {
  ASSIGN_OR_RETURN(Stmt s, Prepare(sql));
  s.Int(arg);
  std::vector<T> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(T item, decode(s));
    out.push_back(std::move(item));
  }
  return out;
}

template <typename T, typename Decode>
Result<ListResult<T>> SqliteStore::RunList(ListQuery q, const ListOptions& options, Decode decode) {
  if (options.page < 1) return InvalidArgumentError("page must be at least 1");
  if (options.per_page < 1) return InvalidArgumentError("per_page must be at least 1");
  const int64_t per_page = std::min(options.per_page, ListOptions::kMaxPerPage);
  const int64_t offset = (static_cast<int64_t>(options.page) - 1) * per_page;

  std::string_view order_column = q.id_column;
  bool descending = false;
  if (!options.sort.empty()) {
    std::string_view field = options.sort;
    if (field.front() == '-') {
      descending = true;
      field.remove_prefix(1);
    }
    auto it = std::find_if(q.sorts.begin(), q.sorts.end(),
                           [&](const SortField& f) { return f.name == field; });
    if (it == q.sorts.end()) {
      std::vector<std::string_view> names;
      for (const auto& f : q.sorts) names.push_back(f.name);
      return InvalidArgumentError(fmt::format("cannot sort {} by '{}': want one of {}", q.resource,
                                              options.sort, fmt::join(names, ", ")));
    }
    order_column = it->column;
  }
  if (!options.q.empty() && !q.search_columns.empty()) {
    std::vector<std::string> ors;
    for (std::string_view col : q.search_columns) {
      ors.push_back(fmt::format("LOWER({}) LIKE ? ESCAPE '\\'", col));
      q.args.emplace_back(SqliteLikePattern(options.q));
    }
    q.where.push_back(fmt::format("({})", fmt::join(ors, " OR ")));
  }
  const std::string where =
      q.where.empty() ? "" : fmt::format(" WHERE {}", fmt::join(q.where, " AND "));

  ListResult<T> result;
  {
    ASSIGN_OR_RETURN(Stmt count, Prepare(fmt::format("SELECT COUNT(*) FROM {}{}", q.from, where)));
    for (const auto& a : q.args) count.Value(a);
    ASSIGN_OR_RETURN(bool row, count.Step());
    if (row) result.total = count.ColInt(0);
  }
  const char* dir = descending ? "DESC" : "ASC";
  std::string order = fmt::format("{} {}", order_column, dir);
  if (order_column != q.id_column) order += fmt::format(", {} {}", q.id_column, dir);
  ASSIGN_OR_RETURN(Stmt s, Prepare(fmt::format("SELECT {} FROM {}{} ORDER BY {} LIMIT ? OFFSET ?",
                                               q.columns, q.from, where, order)));
  for (const auto& a : q.args) s.Value(a);
  s.Int(per_page).Int(offset);
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(T item, decode(s));
    result.items.push_back(std::move(item));
  }
  return result;
}

// ---- users -------------------------------------------------------------------------------------

Status SqliteStore::WriteUser(const User& u) {
  ASSIGN_OR_RETURN(Stmt s, Prepare("UPDATE users SET username = ?, full_name = ?, is_admin = ?, "
                                   "is_active = ?, password_hash = ?, require_password_change = ?, "
                                   "updated_at = ? WHERE id = ?"));
  s.Text(u.username).Text(u.full_name).Bool(u.is_admin).Bool(u.is_active).Text(u.password_hash);
  s.Bool(u.require_password_change).Time(u.updated_at).Int(u.id);
  return s.RunOrAlreadyExists(fmt::format("user '{}' already exists", u.username));
}

Result<User> SqliteStore::CreateUser(const User& user) {
  auto insert = [&](User& u) -> Status {
    u.created_at = u.updated_at = clock_.Now();
    ASSIGN_OR_RETURN(Stmt s, Prepare("INSERT INTO users (username, full_name, is_admin, is_active, "
                                     "password_hash, require_password_change, created_at, "
                                     "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
    s.Text(u.username).Text(u.full_name).Bool(u.is_admin).Bool(u.is_active).Text(u.password_hash);
    s.Bool(u.require_password_change).Time(u.created_at).Time(u.updated_at);
    return s.RunOrAlreadyExists(fmt::format("user '{}' already exists", u.username));
  };
  return InsertRow(user, UserEvent, insert);
}

Result<User> SqliteStore::GetUserByUsername(const std::string& username) {
  std::lock_guard lock(mu_);
  return LoadOne<User>(fmt::format("SELECT {} FROM users WHERE username = ?", kUserCols), username,
                       Ok<User, DecodeUser>, fmt::format("user '{}' not found", username));
}

Result<ListResult<User>> SqliteStore::ListUsers(const ListOptions& options) {
  std::lock_guard lock(mu_);
  ListQuery q{.resource = "users",
              .columns = kUserCols,
              .from = "users",
              .id_column = "id",
              .sorts = {{"id", "id"},
                        {"username", "username"},
                        {"full_name", "full_name"},
                        {"created_at", "created_at"},
                        {"updated_at", "updated_at"}},
              .search_columns = {"username", "full_name"}};
  return RunList<User>(std::move(q), options, Ok<User, DecodeUser>);
}

Result<User> SqliteStore::UpdateUser(int64_t id, const UserPatch& patch) {
  auto change = [&](User& u, std::vector<Event>&) -> Status {
    if (patch.username) u.username = *patch.username;
    if (patch.full_name) u.full_name = *patch.full_name;
    if (patch.is_admin) u.is_admin = *patch.is_admin;
    if (patch.is_active) u.is_active = *patch.is_active;
    if (patch.password_hash) u.password_hash = *patch.password_hash;
    if (patch.require_password_change) u.require_password_change = *patch.require_password_change;
    return OkStatus();
  };
  return UpdateRow(id, &SqliteStore::LoadUser, &SqliteStore::WriteUser, UserEvent, change);
}

Status SqliteStore::DeleteUser(int64_t id) {
  std::lock_guard lock(mu_);
  std::vector<Event> events;
  return Transaction(events, [&]() -> Status {
    ASSIGN_OR_RETURN(User u, LoadUser(id));
    RETURN_IF_ERROR(DeleteKeysAndMembersOf("user_id", id, events));
    RETURN_IF_ERROR(Exec("DELETE FROM sessions WHERE user_id = ?", id));
    RETURN_IF_ERROR(Exec("DELETE FROM users WHERE id = ?", id));
    events.push_back(UserEvent(Event::Type::kDeleted, u));
    return OkStatus();
  });
}

Result<int64_t> SqliteStore::CountActiveAdmins() {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(Stmt s,
                   Prepare("SELECT COUNT(*) FROM users WHERE is_admin = 1 AND is_active = 1"));
  ASSIGN_OR_RETURN(bool row, s.Step());
  return row ? s.ColInt(0) : 0;
}

// ---- sessions ----------------------------------------------------------------------------------

Result<Session> SqliteStore::CreateSession(const Session& session) {
  std::lock_guard lock(mu_);
  Session x = session;
  x.created_at = clock_.Now();
  x.last_used_at.reset();
  ASSIGN_OR_RETURN(Stmt s, Prepare("INSERT INTO sessions (user_id, expires_at, revoked_at, "
                                   "created_at, client_address, user_agent) VALUES (?, ?, ?, ?, "
                                   "?, ?)"));
  s.Int(x.user_id).Time(x.expires_at).OptTime(x.revoked_at).Time(x.created_at);
  s.Text(x.client_address).Text(x.user_agent);
  Status st = s.Run();
  if (st.code() == StatusCode::kFailedPrecondition) {
    return NotFoundError(fmt::format("user {} not found", x.user_id));
  }
  RETURN_IF_ERROR(st);
  x.id = sqlite3_last_insert_rowid(db_);
  ASSIGN_OR_RETURN(User u, LoadUser(x.user_id));
  x.username = u.username;
  return x;
}

Result<Session> SqliteStore::GetSession(int64_t id) {
  std::lock_guard lock(mu_);
  return LoadOne<Session>(
      fmt::format("SELECT {} FROM {} WHERE s.id = ?", kSessionCols, kSessionFrom), id,
      Ok<Session, DecodeSession>, fmt::format("session {} not found", id));
}

Result<ListResult<Session>> SqliteStore::ListSessions(const ListOptions& options) {
  std::lock_guard lock(mu_);
  ListQuery q{.resource = "sessions",
              .columns = kSessionCols,
              .from = kSessionFrom,
              .id_column = "s.id",
              .sorts = {{"id", "s.id"},
                        {"user_id", "s.user_id"},
                        {"username", "u.username"},
                        {"created_at", "s.created_at"},
                        {"last_used_at", "COALESCE(s.last_used_at, s.created_at)"},
                        {"expires_at", "s.expires_at"}},
              .search_columns = {"u.username"}};
  q.where.push_back("s.revoked_at IS NULL AND s.expires_at > ?");
  q.args.emplace_back(ToUnixMillis(clock_.Now()));
  if (options.user_id) q.WhereEquals("s.user_id", *options.user_id);
  return RunList<Session>(std::move(q), options, Ok<Session, DecodeSession>);
}

Status SqliteStore::TouchSession(int64_t id, Timestamp at) {
  std::lock_guard lock(mu_);
  const int64_t ms = ToUnixMillis(at);
  ASSIGN_OR_RETURN(Stmt s, Prepare("UPDATE sessions SET last_used_at = ? WHERE id = ? AND "
                                   "(last_used_at IS NULL OR last_used_at < ?)"));
  s.Int(ms).Int(id).Int(ms);
  return s.Run();
}

Status SqliteStore::RevokeSession(int64_t id, Timestamp at) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(Stmt s, Prepare("UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?) "
                                   "WHERE id = ?"));
  s.Time(at).Int(id);
  RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 0) return NotFoundError(fmt::format("session {} not found", id));
  return OkStatus();
}

Result<int64_t> SqliteStore::RevokeUserSessions(int64_t user_id,
                                                std::optional<int64_t> keep_session_id,
                                                Timestamp at) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(Stmt s, Prepare("UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND "
                                   "revoked_at IS NULL AND id <> ?"));
  s.Time(at).Int(user_id).Int(keep_session_id.value_or(0));
  RETURN_IF_ERROR(s.Run());
  return static_cast<int64_t>(sqlite3_changes(db_));
}

Result<int64_t> SqliteStore::DeleteExpiredSessions(Timestamp before) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(Stmt s, Prepare("DELETE FROM sessions WHERE expires_at < ?"));
  s.Time(before);
  RETURN_IF_ERROR(s.Run());
  return static_cast<int64_t>(sqlite3_changes(db_));
}

// ---- projects ----------------------------------------------------------------------------------

Status SqliteStore::WriteProject(const Project& p) {
  ASSIGN_OR_RETURN(Stmt s,
                   Prepare("UPDATE projects SET name = ?, description = ?, max_gpus = ?, "
                           "max_vram_gib = ?, max_instances = ?, updated_at = ?, limits = ? "
                           "WHERE id = ?"));
  s.Text(p.name).Text(p.description).OptDouble(p.max_gpus).OptDouble(p.max_vram_gib);
  s.OptInt(p.max_instances).Time(p.updated_at).Limits(p.limits).Int(p.id);
  return s.RunOrAlreadyExists(fmt::format("project '{}' already exists", p.name));
}

Result<Project> SqliteStore::CreateProject(const Project& project) {
  auto insert = [&](Project& p) -> Status {
    p.created_at = p.updated_at = clock_.Now();
    ASSIGN_OR_RETURN(Stmt s, Prepare("INSERT INTO projects (name, description, max_gpus, "
                                     "max_vram_gib, max_instances, created_at, updated_at, "
                                     "limits) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
    s.Text(p.name).Text(p.description).OptDouble(p.max_gpus).OptDouble(p.max_vram_gib);
    s.OptInt(p.max_instances).Time(p.created_at).Time(p.updated_at).Limits(p.limits);
    return s.RunOrAlreadyExists(fmt::format("project '{}' already exists", p.name));
  };
  return InsertRow(project, ProjectEvent, insert);
}

Result<Project> SqliteStore::GetProjectByName(const std::string& name) {
  std::lock_guard lock(mu_);
  return LoadOne<Project>(fmt::format("SELECT {} FROM projects WHERE name = ?", kProjectCols), name,
                          DecodeProject, fmt::format("project '{}' not found", name));
}

Result<ListResult<Project>> SqliteStore::ListProjects(const ListOptions& options) {
  std::lock_guard lock(mu_);
  ListQuery q{.resource = "projects",
              .columns = kProjectCols,
              .from = "projects",
              .id_column = "id",
              .sorts = {{"id", "id"},
                        {"name", "name"},
                        {"created_at", "created_at"},
                        {"updated_at", "updated_at"}},
              .search_columns = {"name"}};
  if (options.member_user_id) q.WhereMemberOf("id", *options.member_user_id);
  return RunList<Project>(std::move(q), options, DecodeProject);
}

Result<Project> SqliteStore::UpdateProject(int64_t id, const ProjectPatch& patch) {
  auto change = [&](Project& p, std::vector<Event>&) -> Status {
    if (patch.name) p.name = *patch.name;
    if (patch.description) p.description = *patch.description;
    if (patch.max_gpus) p.max_gpus = *patch.max_gpus;
    if (patch.max_vram_gib) p.max_vram_gib = *patch.max_vram_gib;
    if (patch.max_instances) p.max_instances = *patch.max_instances;
    if (patch.limits) p.limits = patch.limits->ApplyTo(p.limits);
    return OkStatus();
  };
  return UpdateRow(id, &SqliteStore::LoadProject, &SqliteStore::WriteProject, ProjectEvent, change);
}

Status SqliteStore::DeleteProject(int64_t id) {
  std::lock_guard lock(mu_);
  std::vector<Event> events;
  return Transaction(events, [&]() -> Status {
    ASSIGN_OR_RETURN(Project p, LoadProject(id));
    // Children explicitly, not only through ON DELETE CASCADE: the events must match what is
    // removed.
    ASSIGN_OR_RETURN(std::vector<types::Model> models,
                     LoadAll<types::Model>(
                         fmt::format("SELECT {} FROM models m WHERE m.project_id = ?", kModelCols),
                         id, DecodeModel));
    ASSIGN_OR_RETURN(std::vector<types::ModelRoute> routes, SqliteRoutesOfProject(db_, id));
    RETURN_IF_ERROR(Exec("DELETE FROM model_routes WHERE project_id = ?", id));
    for (const auto& r : routes) events.push_back(RouteEvent(Event::Type::kDeleted, r));
    RETURN_IF_ERROR(DeleteInstancesOf("project_id", id, events));
    RETURN_IF_ERROR(Exec("DELETE FROM models WHERE project_id = ?", id));
    for (const auto& m : models) events.push_back(ModelEvent(Event::Type::kDeleted, m));
    RETURN_IF_ERROR(DeleteKeysAndMembersOf("project_id", id, events));
    RETURN_IF_ERROR(Exec("DELETE FROM projects WHERE id = ?", id));
    events.push_back(ProjectEvent(Event::Type::kDeleted, p));
    return OkStatus();
  });
}

// ---- project members ---------------------------------------------------------------------------

Result<ProjectMember> SqliteStore::LoadMember(int64_t project_id, int64_t user_id) {
  ASSIGN_OR_RETURN(Stmt s, Prepare(fmt::format("SELECT {} FROM {} WHERE m.project_id = ? AND "
                                               "m.user_id = ?",
                                               kMemberCols, kMemberFrom)));
  s.Int(project_id).Int(user_id);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) {
    return NotFoundError(fmt::format("user {} is not a member of project {}", user_id, project_id));
  }
  return DecodeMember(s);
}

Result<std::vector<ProjectMember>> SqliteStore::LoadMembersWhere(std::string_view column,
                                                                 int64_t value) {
  return LoadAll<ProjectMember>(
      fmt::format("SELECT {} FROM {} WHERE m.{} = ?", kMemberCols, kMemberFrom, column), value,
      DecodeMember);
}

Status SqliteStore::DeleteKeysAndMembersOf(std::string_view column, int64_t value,
                                           std::vector<Event>& events) {
  ASSIGN_OR_RETURN(
      std::vector<ApiKey> keys,
      LoadAll<ApiKey>(fmt::format("SELECT {} FROM api_keys WHERE {} = ?", kApiKeyCols, column),
                      value, DecodeApiKey));
  ASSIGN_OR_RETURN(std::vector<ProjectMember> members, LoadMembersWhere(column, value));
  RETURN_IF_ERROR(Exec(fmt::format("DELETE FROM api_keys WHERE {} = ?", column), value));
  RETURN_IF_ERROR(Exec(fmt::format("DELETE FROM project_members WHERE {} = ?", column), value));
  for (const auto& k : keys) events.push_back(ApiKeyEvent(Event::Type::kDeleted, k));
  for (const auto& m : members) events.push_back(MemberEvent(Event::Type::kDeleted, m));
  return OkStatus();
}

Result<ProjectMember> SqliteStore::AddProjectMember(int64_t project_id, int64_t user_id,
                                                    types::ProjectRole role) {
  std::lock_guard lock(mu_);
  ProjectMember m;
  std::vector<Event> events;
  RETURN_IF_ERROR(Transaction(events, [&]() -> Status {
    RETURN_IF_ERROR(ToStatus(LoadProject(project_id)));
    RETURN_IF_ERROR(ToStatus(LoadUser(user_id)));
    ASSIGN_OR_RETURN(Stmt s, Prepare("INSERT INTO project_members (project_id, user_id, role, "
                                     "created_at) VALUES (?, ?, ?, ?)"));
    s.Int(project_id).Int(user_id).Text(types::ProjectRoleName(role)).Time(clock_.Now());
    RETURN_IF_ERROR(s.RunOrAlreadyExists(
        fmt::format("user {} is already a member of project {}", user_id, project_id)));
    ASSIGN_OR_RETURN(m, LoadMember(project_id, user_id));
    events.push_back(MemberEvent(Event::Type::kCreated, m));
    return OkStatus();
  }));
  return m;
}

Result<ProjectMember> SqliteStore::UpdateProjectMember(int64_t project_id, int64_t user_id,
                                                       types::ProjectRole role) {
  std::lock_guard lock(mu_);
  ProjectMember m;
  std::vector<Event> events;
  RETURN_IF_ERROR(Transaction(events, [&]() -> Status {
    RETURN_IF_ERROR(ToStatus(LoadMember(project_id, user_id)));
    ASSIGN_OR_RETURN(Stmt s, Prepare("UPDATE project_members SET role = ? WHERE project_id = ? AND "
                                     "user_id = ?"));
    s.Text(types::ProjectRoleName(role)).Int(project_id).Int(user_id);
    RETURN_IF_ERROR(s.Run());
    ASSIGN_OR_RETURN(m, LoadMember(project_id, user_id));
    events.push_back(MemberEvent(Event::Type::kUpdated, m));
    return OkStatus();
  }));
  return m;
}

Status SqliteStore::RemoveProjectMember(int64_t project_id, int64_t user_id) {
  std::lock_guard lock(mu_);
  std::vector<Event> events;
  return Transaction(events, [&]() -> Status {
    ASSIGN_OR_RETURN(ProjectMember m, LoadMember(project_id, user_id));
    ASSIGN_OR_RETURN(Stmt s,
                     Prepare("DELETE FROM project_members WHERE project_id = ? AND user_id = ?"));
    s.Int(project_id).Int(user_id);
    RETURN_IF_ERROR(s.Run());
    events.push_back(MemberEvent(Event::Type::kDeleted, m));
    return OkStatus();
  });
}

Result<ListResult<ProjectMember>> SqliteStore::ListProjectMembers(const ListOptions& options) {
  if (!options.project_id)
    return InvalidArgumentError("listing project members needs a project_id");
  std::lock_guard lock(mu_);
  ListQuery q{.resource = "project members",
              .columns = kMemberCols,
              .from = kMemberFrom,
              .id_column = "m.user_id",
              .sorts = {{"user_id", "m.user_id"},
                        {"username", "u.username"},
                        {"role", "m.role"},
                        {"created_at", "m.created_at"}},
              .search_columns = {"u.username"}};
  q.WhereEquals("m.project_id", *options.project_id);
  if (options.user_id) q.WhereEquals("m.user_id", *options.user_id);
  return RunList<ProjectMember>(std::move(q), options, DecodeMember);
}

Result<std::map<int64_t, types::ProjectRole>> SqliteStore::GetProjectRoles(int64_t user_id) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(std::vector<ProjectMember> members, LoadMembersWhere("user_id", user_id));
  std::map<int64_t, types::ProjectRole> roles;
  for (const auto& m : members) roles[m.project_id] = m.role;
  return roles;
}

// ---- API keys ----------------------------------------------------------------------------------

Result<ApiKey> SqliteStore::CreateApiKey(const ApiKey& key) {
  auto insert = [&](ApiKey& k) -> Status {
    k.created_at = clock_.Now();
    RETURN_IF_ERROR(ToStatus(LoadProject(k.project_id)));
    RETURN_IF_ERROR(ToStatus(LoadUser(k.user_id)));
    ASSIGN_OR_RETURN(Stmt s, Prepare("INSERT INTO api_keys (name, project_id, user_id, scope, "
                                     "allowed_models, prefix, secret_hash, expires_at, revoked_at, "
                                     "last_used_at, created_at, limits, allowed_cidrs) VALUES (?, "
                                     "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    s.Text(k.name).Int(k.project_id).Int(k.user_id).Text(types::ApiKeyScopeName(k.scope));
    if (auto models = EncodeAllowedModels(k.allowed_models)) {
      s.Text(*models);
    } else {
      s.Null();
    }
    s.Text(k.prefix).Text(k.secret_hash).OptTime(k.expires_at).OptTime(k.revoked_at);
    s.OptTime(k.last_used_at).Time(k.created_at).Limits(k.limits);
    if (auto cidrs = EncodeAllowedModels(k.allowed_cidrs)) {
      s.Text(*cidrs);
    } else {
      s.Null();
    }
    return s.RunOrAlreadyExists(
        fmt::format("API key '{}' already exists in project {}", k.name, k.project_id));
  };
  return InsertRow(key, ApiKeyEvent, insert);
}

Result<ApiKey> SqliteStore::GetApiKeyByHash(const std::string& secret_hash) {
  std::lock_guard lock(mu_);
  return LoadOne<ApiKey>(fmt::format("SELECT {} FROM api_keys WHERE secret_hash = ?", kApiKeyCols),
                         secret_hash, DecodeApiKey, "API key not found");
}

Result<ListResult<ApiKey>> SqliteStore::ListApiKeys(const ListOptions& options) {
  std::lock_guard lock(mu_);
  ListQuery q{.resource = "api-keys",
              .columns = kApiKeyCols,
              .from = "api_keys",
              .id_column = "id",
              .sorts = {{"id", "id"},
                        {"name", "name"},
                        {"created_at", "created_at"},
                        {"expires_at", "expires_at"},
                        {"last_used_at", "last_used_at"}},
              .search_columns = {"name"}};
  q.WhereInProjectScope("project_id", options);
  if (options.user_id) q.WhereEquals("user_id", *options.user_id);
  return RunList<ApiKey>(std::move(q), options, DecodeApiKey);
}

Result<ApiKey> SqliteStore::RevokeApiKey(int64_t id, Timestamp at) {
  std::lock_guard lock(mu_);
  ApiKey k;
  std::vector<Event> events;
  RETURN_IF_ERROR(Transaction(events, [&]() -> Status {
    RETURN_IF_ERROR(ToStatus(LoadApiKey(id)));
    ASSIGN_OR_RETURN(Stmt s, Prepare("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) "
                                     "WHERE id = ?"));
    s.Time(at).Int(id);
    RETURN_IF_ERROR(s.Run());
    ASSIGN_OR_RETURN(k, LoadApiKey(id));
    events.push_back(ApiKeyEvent(Event::Type::kUpdated, k));
    return OkStatus();
  }));
  return k;
}

Result<ApiKey> SqliteStore::UpdateApiKey(int64_t id, const ApiKeyPatch& patch) {
  std::lock_guard lock(mu_);
  ApiKey k;
  std::vector<Event> events;
  RETURN_IF_ERROR(Transaction(events, [&]() -> Status {
    ASSIGN_OR_RETURN(k, LoadApiKey(id));
    if (patch.limits) k.limits = patch.limits->ApplyTo(k.limits);
    if (patch.allowed_cidrs) k.allowed_cidrs = *patch.allowed_cidrs;
    ASSIGN_OR_RETURN(Stmt s,
                     Prepare("UPDATE api_keys SET limits = ?, allowed_cidrs = ? WHERE id = ?"));
    s.Limits(k.limits);
    if (auto cidrs = EncodeAllowedModels(k.allowed_cidrs)) {
      s.Text(*cidrs);
    } else {
      s.Null();
    }
    s.Int(id);
    RETURN_IF_ERROR(s.Run());
    events.push_back(ApiKeyEvent(Event::Type::kUpdated, k));
    return OkStatus();
  }));
  return k;
}

Status SqliteStore::DeleteApiKey(int64_t id) {
  std::lock_guard lock(mu_);
  std::vector<Event> events;
  return Transaction(events, [&]() -> Status {
    ASSIGN_OR_RETURN(ApiKey k, LoadApiKey(id));
    RETURN_IF_ERROR(Exec("DELETE FROM api_keys WHERE id = ?", id));
    last_touch_ms_.erase(id);
    events.push_back(ApiKeyEvent(Event::Type::kDeleted, k));
    return OkStatus();
  });
}

Status SqliteStore::TouchApiKey(int64_t id, Timestamp at) {
  std::lock_guard lock(mu_);
  const int64_t ms = ToUnixMillis(at);
  auto it = last_touch_ms_.find(id);
  if (it != last_touch_ms_.end() && ms - it->second < kTouchIntervalMs) return OkStatus();
  ASSIGN_OR_RETURN(Stmt s, Prepare("UPDATE api_keys SET last_used_at = ? WHERE id = ? AND "
                                   "(last_used_at IS NULL OR last_used_at < ?)"));
  s.Int(ms).Int(id).Int(ms);
  RETURN_IF_ERROR(s.Run());
  last_touch_ms_[id] = ms;
  return OkStatus();
}

// ---- clusters ----------------------------------------------------------------------------------

Status SqliteStore::WriteCluster(const Cluster& c) {
  ASSIGN_OR_RETURN(Stmt s, Prepare("UPDATE clusters SET name = ?, description = ?, is_default = ?, "
                                   "registration_token = ?, gpu_sharing = ?, updated_at = ? "
                                   "WHERE id = ?"));
  s.Text(c.name).Text(c.description).Bool(c.is_default).Text(c.registration_token);
  s.Text(std::string(types::GpuSharingName(c.gpu_sharing))).Time(c.updated_at).Int(c.id);
  return s.RunOrAlreadyExists(fmt::format("cluster '{}' already exists", c.name));
}

Result<Cluster> SqliteStore::CreateCluster(const Cluster& cluster) {
  std::lock_guard lock(mu_);
  Cluster c = cluster;
  c.created_at = c.updated_at = clock_.Now();
  std::vector<Event> events;
  RETURN_IF_ERROR(Transaction(events, [&]() -> Status {
    ASSIGN_OR_RETURN(Stmt s, Prepare("INSERT INTO clusters (name, description, is_default, "
                                     "registration_token, gpu_sharing, created_at, updated_at) "
                                     "VALUES (?, ?, ?, ?, ?, ?, ?)"));
    s.Text(c.name).Text(c.description).Bool(false).Text(c.registration_token);
    s.Text(std::string(types::GpuSharingName(c.gpu_sharing)));
    s.Time(c.created_at).Time(c.updated_at);
    RETURN_IF_ERROR(s.RunOrAlreadyExists(fmt::format("cluster '{}' already exists", c.name)));
    c.id = sqlite3_last_insert_rowid(db_);
    if (c.is_default) {
      RETURN_IF_ERROR(UnsetOtherDefaultClusters(c.id, c.updated_at, events));
      RETURN_IF_ERROR(WriteCluster(c));
    }
    events.insert(events.begin(), ClusterEvent(Event::Type::kCreated, c));
    return OkStatus();
  }));
  return c;
}

Status SqliteStore::UnsetOtherDefaultClusters(int64_t keep_id, Timestamp at,
                                              std::vector<Event>& events) {
  ASSIGN_OR_RETURN(
      std::vector<Cluster> previous,
      LoadAll<Cluster>(
          fmt::format("SELECT {} FROM clusters WHERE is_default = 1 AND id <> ?", kClusterCols),
          keep_id, Ok<Cluster, DecodeCluster>));
  for (Cluster& p : previous) {
    p.is_default = false;
    p.updated_at = at;
    RETURN_IF_ERROR(WriteCluster(p));
    events.push_back(ClusterEvent(Event::Type::kUpdated, p));
  }
  return OkStatus();
}

Result<Cluster> SqliteStore::GetDefaultCluster() {
  std::lock_guard lock(mu_);
  return LoadOne<Cluster>(fmt::format("SELECT {} FROM clusters WHERE is_default = ?", kClusterCols),
                          int64_t{1}, Ok<Cluster, DecodeCluster>, "no default cluster");
}

Result<ListResult<Cluster>> SqliteStore::ListClusters(const ListOptions& options) {
  std::lock_guard lock(mu_);
  ListQuery q{.resource = "clusters",
              .columns = kClusterCols,
              .from = "clusters",
              .id_column = "id",
              .sorts = {{"id", "id"},
                        {"name", "name"},
                        {"created_at", "created_at"},
                        {"updated_at", "updated_at"}},
              .search_columns = {"name"}};
  return RunList<Cluster>(std::move(q), options, Ok<Cluster, DecodeCluster>);
}

Result<Cluster> SqliteStore::UpdateCluster(int64_t id, const ClusterPatch& patch) {
  auto change = [&](Cluster& c, std::vector<Event>& events) -> Status {
    if (patch.name) c.name = *patch.name;
    if (patch.description) c.description = *patch.description;
    if (patch.registration_token) c.registration_token = *patch.registration_token;
    if (patch.gpu_sharing) c.gpu_sharing = *patch.gpu_sharing;
    if (patch.is_default && *patch.is_default && !c.is_default) {
      RETURN_IF_ERROR(UnsetOtherDefaultClusters(id, c.updated_at, events));
    }
    if (patch.is_default) c.is_default = *patch.is_default;
    return OkStatus();
  };
  return UpdateRow(id, &SqliteStore::LoadCluster, &SqliteStore::WriteCluster, ClusterEvent, change);
}

Status SqliteStore::DeleteCluster(int64_t id) {
  std::lock_guard lock(mu_);
  std::vector<Event> events;
  return Transaction(events, [&]() -> Status {
    ASSIGN_OR_RETURN(Cluster c, LoadCluster(id));
    {
      ASSIGN_OR_RETURN(Stmt count, Prepare("SELECT COUNT(*) FROM workers WHERE cluster_id = ?"));
      count.Int(id);
      ASSIGN_OR_RETURN(bool row, count.Step());
      if (row && count.ColInt(0) > 0) {
        return FailedPreconditionError(
            fmt::format("cluster {} still has {} workers", id, count.ColInt(0)));
      }
    }
    RETURN_IF_ERROR(Exec("DELETE FROM clusters WHERE id = ?", id));
    events.push_back(ClusterEvent(Event::Type::kDeleted, c));
    return OkStatus();
  });
}

// ---- workers -----------------------------------------------------------------------------------

Status SqliteStore::WriteWorker(const Worker& w) {
  ASSIGN_OR_RETURN(Stmt s, Prepare("UPDATE workers SET name = ?, state = ?, state_message = ?, "
                                   "labels = ?, maintenance = ?, maintenance_message = ?, "
                                   "status = ?, address = ?, port = ?, token_hash = ?, "
                                   "last_heartbeat_at = ?, updated_at = ? WHERE id = ?"));
  s.Text(w.name).Text(types::WorkerStateName(w.state)).Text(w.state_message);
  s.Text(EncodeLabels(w.labels)).Bool(w.maintenance).Text(w.maintenance_message);
  s.Text(ToJsonString(types::ToJson(w.status))).Text(w.address).Int(w.port).Text(w.token_hash);
  s.OptTime(w.last_heartbeat_at).Time(w.updated_at).Int(w.id);
  RETURN_IF_ERROR(s.RunOrAlreadyExists(
      fmt::format("worker '{}' already exists in cluster {}", w.name, w.cluster_id)));
  return SqliteLedgerSyncWorker(db_, w.id, clock_.Now());
}

Result<Worker> SqliteStore::UpsertWorkerByName(int64_t cluster_id, const std::string& name,
                                               const std::string& address, int port,
                                               const std::string& token_hash,
                                               const std::map<std::string, std::string>& labels) {
  std::lock_guard lock(mu_);
  Worker w;
  std::vector<Event> events;
  RETURN_IF_ERROR(Transaction(events, [&]() -> Status {
    RETURN_IF_ERROR(ToStatus(LoadCluster(cluster_id)));
    const Timestamp now = clock_.Now();
    ASSIGN_OR_RETURN(Stmt find,
                     Prepare(fmt::format("SELECT {} FROM workers WHERE cluster_id = ? AND name = ?",
                                         kWorkerCols)));
    find.Int(cluster_id).Text(name);
    ASSIGN_OR_RETURN(bool exists, find.Step());
    if (exists) {
      ASSIGN_OR_RETURN(w, DecodeWorker(find));
      for (const auto& [k, v] : labels) w.labels[k] = v;
      w.address = address;
      w.port = port;
      w.token_hash = token_hash;
      w.state = w.maintenance ? types::WorkerState::kMaintenance : types::WorkerState::kRegistering;
      w.state_message.clear();
      w.updated_at = now;
      RETURN_IF_ERROR(WriteWorker(w));
      events.push_back(WorkerEvent(Event::Type::kUpdated, w));
      return OkStatus();
    }
    w = Worker{};
    w.cluster_id = cluster_id;
    w.name = name;
    w.state = types::WorkerState::kRegistering;
    w.labels = labels;
    w.address = address;
    w.port = port;
    w.token_hash = token_hash;
    w.created_at = w.updated_at = now;
    ASSIGN_OR_RETURN(Stmt s, Prepare("INSERT INTO workers (cluster_id, name, state, state_message, "
                                     "labels, maintenance, maintenance_message, status, address, "
                                     "port, token_hash, last_heartbeat_at, created_at, updated_at) "
                                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    s.Int(w.cluster_id).Text(w.name).Text(types::WorkerStateName(w.state)).Text(w.state_message);
    s.Text(EncodeLabels(w.labels)).Bool(w.maintenance).Text(w.maintenance_message);
    s.Text(ToJsonString(types::ToJson(w.status))).Text(w.address).Int(w.port).Text(w.token_hash);
    s.OptTime(w.last_heartbeat_at).Time(w.created_at).Time(w.updated_at);
    RETURN_IF_ERROR(s.RunOrAlreadyExists(fmt::format("worker '{}' already exists", name)));
    w.id = sqlite3_last_insert_rowid(db_);
    events.push_back(WorkerEvent(Event::Type::kCreated, w));
    return OkStatus();
  }));
  return w;
}

Result<Worker> SqliteStore::GetWorkerByTokenHash(const std::string& token_hash) {
  std::lock_guard lock(mu_);
  return LoadOne<Worker>(fmt::format("SELECT {} FROM workers WHERE token_hash = ?", kWorkerCols),
                         token_hash, DecodeWorker, "worker not found");
}

Result<ListResult<Worker>> SqliteStore::ListWorkers(const ListOptions& options) {
  std::lock_guard lock(mu_);
  ListQuery q{.resource = "workers",
              .columns = options.without_status ? kWorkerColsButStatus : kWorkerCols,
              .from = "workers",
              .id_column = "id",
              .sorts = {{"id", "id"},
                        {"name", "name"},
                        {"state", "state"},
                        {"created_at", "created_at"},
                        {"updated_at", "updated_at"},
                        {"last_heartbeat_at", "last_heartbeat_at"}},
              .search_columns = {"name"}};
  if (options.cluster_id) q.WhereEquals("cluster_id", *options.cluster_id);
  return RunList<Worker>(std::move(q), options, DecodeWorker);
}

Result<ScrapeTargets> SqliteStore::ListScrapeTargets() {
  std::lock_guard lock(mu_);
  ScrapeTargets out;
  {
    ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT id, name, address, port FROM workers ORDER BY id"));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      out.workers.push_back(WorkerEndpoint{.id = s.ColInt(0),
                                           .name = s.ColText(1),
                                           .address = s.ColText(2),
                                           .port = static_cast<int>(s.ColInt(3))});
    }
  }
  ASSIGN_OR_RETURN(Stmt s,
                   Prepare("SELECT i.id, i.name, i.project_id, i.port, w.name, w.address, m.name, "
                           "COALESCE(json_extract(m.spec, '$.backend'), '') "
                           "FROM model_instances i JOIN workers w ON w.id = i.worker_id "
                           "JOIN models m ON m.id = i.model_id "
                           "WHERE i.state = ? AND i.port > 0 AND w.address <> '' ORDER BY i.id"));
  s.Text(types::InstanceStateName(types::InstanceState::kRunning));
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.engines.push_back(EngineEndpoint{.instance_id = s.ColInt(0),
                                         .instance = s.ColText(1),
                                         .project_id = s.ColInt(2),
                                         .port = static_cast<int>(s.ColInt(3)),
                                         .worker = s.ColText(4),
                                         .address = s.ColText(5),
                                         .deployment = s.ColText(6),
                                         .backend = s.ColText(7)});
  }
  return out;
}

Result<Worker> SqliteStore::UpdateWorker(int64_t id, const WorkerPatch& patch) {
  auto change = [&](Worker& w, std::vector<Event>&) -> Status {
    if (patch.labels) w.labels = *patch.labels;
    if (patch.maintenance_message) w.maintenance_message = *patch.maintenance_message;
    if (patch.maintenance && *patch.maintenance != w.maintenance) {
      w.maintenance = *patch.maintenance;
      if (w.maintenance) {
        w.state = types::WorkerState::kMaintenance;
      } else {
        w.state =
            w.last_heartbeat_at ? types::WorkerState::kReady : types::WorkerState::kRegistering;
        w.maintenance_message.clear();
      }
      w.state_message.clear();
    }
    return OkStatus();
  };
  return UpdateRow(id, &SqliteStore::LoadWorker, &SqliteStore::WriteWorker, WorkerEvent, change);
}

Result<Worker> SqliteStore::RecordHeartbeat(int64_t id, const types::WorkerStatus& status,
                                            Timestamp at) {
  auto change = [&](Worker& w, std::vector<Event>&) -> Status {
    w.status = status;
    w.last_heartbeat_at = at;
    if (!w.maintenance) {
      w.state = types::WorkerState::kReady;
      w.state_message.clear();
    }
    return OkStatus();
  };
  // The status is replaced: not decoded from the row first (a heartbeat's cost, issue 17).
  return UpdateRow(id, &SqliteStore::LoadWorkerButStatus, &SqliteStore::WriteWorker, WorkerEvent,
                   change);
}

Result<Worker> SqliteStore::SetWorkerState(int64_t id, types::WorkerState state,
                                           const std::string& message) {
  auto change = [&](Worker& w, std::vector<Event>&) -> Status {
    w.state = state;
    w.state_message = message;
    return OkStatus();
  };
  return UpdateRow(id, &SqliteStore::LoadWorker, &SqliteStore::WriteWorker, WorkerEvent, change);
}

Result<std::vector<Worker>> SqliteStore::MarkStaleWorkersNotReady(Timestamp heartbeat_before,
                                                                  const std::string& message) {
  std::lock_guard lock(mu_);
  std::vector<Worker> changed;
  std::vector<Event> events;
  RETURN_IF_ERROR(Transaction(events, [&]() -> Status {
    ASSIGN_OR_RETURN(std::vector<Worker> stale,
                     LoadAll<Worker>(fmt::format("SELECT {} FROM workers WHERE state = 'READY' AND "
                                                 "(last_heartbeat_at IS NULL OR "
                                                 "last_heartbeat_at < ?)",
                                                 kWorkerCols),
                                     ToUnixMillis(heartbeat_before), DecodeWorker));
    const Timestamp now = clock_.Now();
    for (Worker& w : stale) {
      w.state = types::WorkerState::kNotReady;
      w.state_message = message;
      w.updated_at = now;
      RETURN_IF_ERROR(WriteWorker(w));
      events.push_back(WorkerEvent(Event::Type::kUpdated, w));
    }
    changed = std::move(stale);
    return OkStatus();
  }));
  return changed;
}

Status SqliteStore::DeleteWorker(int64_t id) {
  return DeleteRow(id, &SqliteStore::LoadWorker, "DELETE FROM workers WHERE id = ?", WorkerEvent,
                   &SqliteLedgerSyncWorker);
}

// ---- models and model instances ---------------------------------------------------------------

Result<types::Model> SqliteStore::LoadModel(int64_t id) {
  return LoadOne<types::Model>(fmt::format("SELECT {} FROM models m WHERE m.id = ?", kModelCols),
                               id, DecodeModel, fmt::format("model {} not found", id));
}

Result<types::ModelInstance> SqliteStore::LoadInstance(int64_t id) {
  return LoadOne<types::ModelInstance>(
      fmt::format("SELECT {} FROM model_instances WHERE id = ?", kInstanceCols), id, DecodeInstance,
      fmt::format("model instance {} not found", id));
}

Status SqliteStore::WriteInstance(const types::ModelInstance& i) {
  ASSIGN_OR_RETURN(
      Stmt s, Prepare("UPDATE model_instances SET state = ?, state_message = ?, worker_id = ?, "
                      "worker_name = ?, gpu_indexes = ?, port = ?, claim = ?, "
                      "distributed_servers = ?, restart_count = ?, last_restart_at = ?, "
                      "unschedulable_reasons = ?, updated_at = ?, engine_secret = ? WHERE id = ?"));
  s.Text(types::InstanceStateName(i.state)).Text(i.state_message).Int(i.worker_id);
  s.Text(i.worker_name).Text(EncodeIntArray(i.gpu_indexes)).Int(i.port);
  s.Text(ToJsonString(types::ToJson(i.claim))).Text(EncodeServers(i.distributed_servers));
  s.Int(i.restart_count).OptTime(i.last_restart_at).Text(EncodeLabels(i.unschedulable_reasons));
  s.Time(i.updated_at).Text(i.engine_secret).Int(i.id);
  RETURN_IF_ERROR(s.Run());
  return SqliteLedgerSyncInstance(db_, i.id, clock_.Now());
}

Status SqliteStore::DeleteInstancesOf(std::string_view column, int64_t value,
                                      std::vector<Event>& events) {
  ASSIGN_OR_RETURN(std::vector<types::ModelInstance> instances,
                   LoadAll<types::ModelInstance>(
                       fmt::format("SELECT {} FROM model_instances WHERE {} = ? ORDER BY id",
                                   kInstanceCols, column),
                       value, DecodeInstance));
  RETURN_IF_ERROR(Exec(fmt::format("DELETE FROM model_instances WHERE {} = ?", column), value));
  for (const auto& i : instances) {
    RETURN_IF_ERROR(SqliteLedgerSyncInstance(db_, i.id, clock_.Now()));
    events.push_back(InstanceEvent(Event::Type::kDeleted, i));
  }
  return OkStatus();
}

Result<types::Model> SqliteStore::CreateModel(const types::Model& model) {
  RETURN_IF_ERROR(types::ValidateModel(model));
  auto insert = [&](types::Model& m) -> Status {
    m.created_at = m.updated_at = clock_.Now();
    m.ready_replicas = 0;
    RETURN_IF_ERROR(LoadProject(m.project_id).status());
    RETURN_IF_ERROR(SqliteCheckNoRouteNamed(db_, m.project_id, m.name));
    ASSIGN_OR_RETURN(Stmt s, Prepare("INSERT INTO models (project_id, name, replicas, spec, "
                                     "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)"));
    s.Int(m.project_id).Text(m.name).Int(m.replicas).Text(EncodeModelSpec(m));
    s.Time(m.created_at).Time(m.updated_at);
    return s.RunOrAlreadyExists(
        fmt::format("model '{}' already exists in project {}", m.name, m.project_id));
  };
  return InsertRow(model, ModelEvent, insert);
}

Result<types::Model> SqliteStore::GetModel(int64_t id) {
  std::lock_guard lock(mu_);
  return LoadModel(id);
}

Result<types::Model> SqliteStore::GetModelByName(int64_t project_id, const std::string& name) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(
      Stmt s, Prepare(fmt::format("SELECT {} FROM models m WHERE m.project_id = ? AND m.name = ?",
                                  kModelCols)));
  s.Int(project_id).Text(name);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) {
    return NotFoundError(fmt::format("model '{}' not found in project {}", name, project_id));
  }
  return DecodeModel(s);
}

Result<ListResult<types::Model>> SqliteStore::ListModels(const ListOptions& options) {
  std::lock_guard lock(mu_);
  ListQuery q{.resource = "models",
              .columns = kModelCols,
              .from = "models m",
              .id_column = "m.id",
              .sorts = {{"id", "m.id"},
                        {"name", "m.name"},
                        {"replicas", "m.replicas"},
                        {"created_at", "m.created_at"},
                        {"updated_at", "m.updated_at"}},
              .search_columns = {"m.name"}};
  q.WhereInProjectScope("m.project_id", options);
  return RunList<types::Model>(std::move(q), options, DecodeModel);
}

Result<types::Model> SqliteStore::UpdateModel(const types::Model& model) {
  RETURN_IF_ERROR(types::ValidateModel(model));
  std::lock_guard lock(mu_);
  types::Model m;
  std::vector<Event> events;
  RETURN_IF_ERROR(Transaction(events, [&]() -> Status {
    ASSIGN_OR_RETURN(types::Model old, LoadModel(model.id));
    m = model;
    m.project_id = old.project_id;
    m.created_at = old.created_at;
    m.ready_replicas = old.ready_replicas;
    m.updated_at = clock_.Now();
    if (m.name != old.name) RETURN_IF_ERROR(SqliteCheckNoRouteNamed(db_, m.project_id, m.name));
    ASSIGN_OR_RETURN(Stmt s, Prepare("UPDATE models SET name = ?, replicas = ?, spec = ?, "
                                     "updated_at = ? WHERE id = ?"));
    s.Text(m.name).Int(m.replicas).Text(EncodeModelSpec(m)).Time(m.updated_at).Int(m.id);
    RETURN_IF_ERROR(s.RunOrAlreadyExists(
        fmt::format("model '{}' already exists in project {}", m.name, m.project_id)));
    events.push_back(ModelEvent(Event::Type::kUpdated, m));
    return OkStatus();
  }));
  return m;
}

Status SqliteStore::DeleteModel(int64_t id) {
  std::lock_guard lock(mu_);
  std::vector<Event> events;
  return Transaction(events, [&]() -> Status {
    ASSIGN_OR_RETURN(types::Model m, LoadModel(id));
    ASSIGN_OR_RETURN(std::vector<int64_t> routes, SqliteRoutesOfModel(db_, id));
    RETURN_IF_ERROR(DeleteInstancesOf("model_id", id, events));
    RETURN_IF_ERROR(Exec("DELETE FROM models WHERE id = ?", id));
    events.push_back(ModelEvent(Event::Type::kDeleted, m));
    // Its route targets went with ON DELETE CASCADE.
    return RouteEventsAfterModelDelete(routes, events);
  });
}

Result<types::ModelInstance> SqliteStore::CreateModelInstance(
    const types::ModelInstance& instance) {
  auto insert = [&](types::ModelInstance& i) -> Status {
    i.created_at = i.updated_at = clock_.Now();
    ASSIGN_OR_RETURN(types::Model m, LoadModel(i.model_id));
    i.project_id = m.project_id;
    ASSIGN_OR_RETURN(
        Stmt s, Prepare("INSERT INTO model_instances (model_id, project_id, name, state, "
                        "state_message, worker_id, worker_name, gpu_indexes, port, claim, "
                        "distributed_servers, restart_count, last_restart_at, "
                        "unschedulable_reasons, created_at, updated_at, engine_secret) VALUES (?, "
                        "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    s.Int(i.model_id).Int(i.project_id).Text(i.name).Text(types::InstanceStateName(i.state));
    s.Text(i.state_message).Int(i.worker_id).Text(i.worker_name);
    s.Text(EncodeIntArray(i.gpu_indexes)).Int(i.port).Text(ToJsonString(types::ToJson(i.claim)));
    s.Text(EncodeServers(i.distributed_servers)).Int(i.restart_count).OptTime(i.last_restart_at);
    s.Text(EncodeLabels(i.unschedulable_reasons)).Time(i.created_at).Time(i.updated_at);
    s.Text(i.engine_secret);
    RETURN_IF_ERROR(s.Run());
    return SqliteLedgerSyncInstance(db_, sqlite3_last_insert_rowid(db_), i.created_at);
  };
  return InsertRow(instance, InstanceEvent, insert);
}

Result<types::ModelInstance> SqliteStore::GetModelInstance(int64_t id) {
  std::lock_guard lock(mu_);
  return LoadInstance(id);
}

Result<ListResult<types::ModelInstance>> SqliteStore::ListModelInstances(
    const ListOptions& options, const ModelInstanceFilter& filter) {
  std::lock_guard lock(mu_);
  ListQuery q{.resource = "model instances",
              .columns = kInstanceCols,
              .from = "model_instances",
              .id_column = "id",
              .sorts = {{"id", "id"},
                        {"name", "name"},
                        {"state", "state"},
                        {"worker_id", "worker_id"},
                        {"created_at", "created_at"},
                        {"updated_at", "updated_at"}},
              .search_columns = {"name"}};
  q.WhereInProjectScope("project_id", options);
  if (filter.model_id) q.WhereEquals("model_id", *filter.model_id);
  if (filter.worker_id) {
    // Subordinate workers live in the distributed_servers JSON; a LIKE on the serialized id is
    // exact because the key and the closing comma or brace delimit it.
    q.where.emplace_back(
        "(worker_id = ? OR distributed_servers LIKE ? OR distributed_servers LIKE ?)");
    q.args.emplace_back(*filter.worker_id);
    q.args.emplace_back(fmt::format("%\"worker_id\":{},%", *filter.worker_id));
    q.args.emplace_back(fmt::format("%\"worker_id\":{}}}%", *filter.worker_id));
  }
  if (filter.distributed_worker_id) {
    q.where.emplace_back("(distributed_servers LIKE ? OR distributed_servers LIKE ?)");
    q.args.emplace_back(fmt::format("%\"worker_id\":{},%", *filter.distributed_worker_id));
    q.args.emplace_back(fmt::format("%\"worker_id\":{}}}%", *filter.distributed_worker_id));
  }
  if (filter.state) q.WhereEquals("state", std::string(types::InstanceStateName(*filter.state)));
  return RunList<types::ModelInstance>(std::move(q), options, DecodeInstance);
}

Result<types::ModelInstance> SqliteStore::UpdateModelInstance(int64_t id,
                                                              const ModelInstancePatch& patch) {
  auto change = [&](types::ModelInstance& i, std::vector<Event>&) -> Status {
    if (patch.if_state_in && std::find(patch.if_state_in->begin(), patch.if_state_in->end(),
                                       i.state) == patch.if_state_in->end()) {
      return AbortedError(fmt::format("model instance {} is {}, not in the expected state", id,
                                      types::InstanceStateName(i.state)));
    }
    if (patch.state) i.state = *patch.state;
    if (patch.state_message) i.state_message = *patch.state_message;
    if (patch.worker_id) i.worker_id = *patch.worker_id;
    if (patch.worker_name) i.worker_name = *patch.worker_name;
    if (patch.gpu_indexes) i.gpu_indexes = *patch.gpu_indexes;
    if (patch.claim) i.claim = *patch.claim;
    if (patch.distributed_servers) i.distributed_servers = *patch.distributed_servers;
    if (const auto& report = patch.distributed_server_status) {
      auto d = std::find_if(i.distributed_servers.begin(), i.distributed_servers.end(),
                            [&](const auto& e) { return e.worker_id == report->worker_id; });
      if (d == i.distributed_servers.end()) {
        return NotFoundError(fmt::format("model instance {} has no distributed server on worker {}",
                                         id, report->worker_id));
      }
      d->address = report->address;
      d->port = report->port;
      d->state = report->state;
      d->state_message = report->state_message;
      d->restart_count = report->restart_count;
    }
    if (patch.port) i.port = *patch.port;
    if (patch.restart_count) i.restart_count = *patch.restart_count;
    if (patch.last_restart_at) i.last_restart_at = *patch.last_restart_at;
    if (patch.unschedulable_reasons) i.unschedulable_reasons = *patch.unschedulable_reasons;
    if (patch.engine_secret) i.engine_secret = *patch.engine_secret;
    return OkStatus();
  };
  return UpdateRow(id, &SqliteStore::LoadInstance, &SqliteStore::WriteInstance, InstanceEvent,
                   change);
}

Status SqliteStore::DeleteModelInstance(int64_t id) {
  return DeleteRow(id, &SqliteStore::LoadInstance, "DELETE FROM model_instances WHERE id = ?",
                   InstanceEvent, [](sqlite3* db, int64_t instance, Timestamp now) {
                     return SqliteLedgerSyncInstance(db, instance, now);
                   });
}

// Creates the database file with mode 0600 before SQLite does (SQLite would use 0644 minus the
// umask), and tightens an existing one. SQLite gives the -wal and -shm files the main file's mode.
Status PrepareDatabaseFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return UnavailableError(fmt::format("cannot open database {}: {}", path, std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) == 0 && (st.st_mode & 0077) != 0) {
    Logger("store")->warn("database {} was readable by others (mode {:o}); setting 0600", path,
                          st.st_mode & 0777);
    if (::fchmod(fd, 0600) != 0) {
      const int e = errno;
      ::close(fd);
      return UnavailableError(fmt::format("cannot chmod database {}: {}", path, std::strerror(e)));
    }
  }
  ::close(fd);
  return OkStatus();
}

}  // namespace

int LatestSchemaVersion() {
  const auto& all = EmbeddedMigrations();
  return all.empty() ? 0 : all.back().version;
}

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, EventBus& bus,
                                               const Clock& clock) {
  const bool in_memory = path == ":memory:" || path.empty();
  if (!in_memory) RETURN_IF_ERROR(PrepareDatabaseFile(path));
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status s = UnavailableError(fmt::format("cannot open database {}: {}", path,
                                            db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close_v2(db);
    return s;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  auto store = std::make_unique<SqliteStore>(db, bus, clock);
  for (const char* pragma :
       {"PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL", "PRAGMA foreign_keys = ON"}) {
    char* err = nullptr;
    if (sqlite3_exec(db, pragma, nullptr, nullptr, &err) != SQLITE_OK) {
      Status s = UnavailableError(fmt::format("{} on {}: {}", pragma, path, err ? err : "?"));
      sqlite3_free(err);
      return s;
    }
  }
  RETURN_IF_ERROR(store->Migrate());
  RETURN_IF_ERROR(store->RecoverGpuLedger());
  return std::unique_ptr<Store>(std::move(store));
}

// ---- backends ---------------------------------------------------------------------------------

Result<BackendRecord> SqliteStore::LoadBackend(const std::string& name) {
  return LoadOne<BackendRecord>(fmt::format("SELECT {} FROM backends WHERE name = ?", kBackendCols),
                                name, DecodeBackend, fmt::format("backend '{}' not found", name));
}

Status SqliteStore::CheckBackendUnused(const std::string& name,
                                       const std::optional<std::vector<std::string>>& versions) {
  if (versions && versions->empty()) return OkStatus();
  // Models name their backend inside the spec; reading every spec is fine at the scale of
  // deployments (hundreds), and keeps the check in the caller's transaction.
  ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT project_id, name, spec FROM models ORDER BY id"));
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return OkStatus();
    auto spec = ParseJson(s.ColText(2));
    if (!spec.ok() || !spec->is_object()) continue;
    const json::object& o = spec->as_object();
    auto backend = o.find("backend");
    if (backend == o.end() || !backend->value().is_string() ||
        backend->value().as_string() != name) {
      continue;
    }
    if (!versions) {
      return FailedPreconditionError(fmt::format("backend '{}' is used by model '{}' (project {})",
                                                 name, s.ColText(1), s.ColInt(0)));
    }
    auto version = o.find("backend_version");
    const std::string v = version != o.end() && version->value().is_string()
                              ? std::string(version->value().as_string())
                              : std::string();
    if (std::find(versions->begin(), versions->end(), v) != versions->end()) {
      return FailedPreconditionError(
          fmt::format("backend '{}' version '{}' is used by model '{}' (project {})", name, v,
                      s.ColText(1), s.ColInt(0)));
    }
  }
}

Result<BackendRecord> SqliteStore::CreateBackend(const BackendRecord& backend) {
  if (auto spec = ParseJson(backend.spec); !spec.ok() || !spec->is_object()) {
    return InvalidArgumentError("backend spec must be a JSON object");
  }
  auto insert = [&](BackendRecord& b) -> Status {
    b.created_at = b.updated_at = clock_.Now();
    ASSIGN_OR_RETURN(Stmt s, Prepare("INSERT INTO backends (name, spec, created_at, updated_at) "
                                     "VALUES (?, ?, ?, ?)"));
    s.Text(b.name).Text(b.spec).Time(b.created_at).Time(b.updated_at);
    return s.RunOrAlreadyExists(fmt::format("backend '{}' already exists", b.name));
  };
  return InsertRow(backend, BackendEvent, insert);
}

Result<BackendRecord> SqliteStore::GetBackend(const std::string& name) {
  std::lock_guard lock(mu_);
  return LoadBackend(name);
}

Result<std::vector<BackendRecord>> SqliteStore::ListBackends() {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(Stmt s,
                   Prepare(fmt::format("SELECT {} FROM backends ORDER BY name", kBackendCols)));
  std::vector<BackendRecord> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(BackendRecord b, DecodeBackend(s));
    out.push_back(std::move(b));
  }
  return out;
}

Result<BackendRecord> SqliteStore::UpdateBackend(const BackendRecord& backend,
                                                 const std::vector<std::string>& removed_versions) {
  if (auto spec = ParseJson(backend.spec); !spec.ok() || !spec->is_object()) {
    return InvalidArgumentError("backend spec must be a JSON object");
  }
  std::lock_guard lock(mu_);
  BackendRecord b;
  std::vector<Event> events;
  RETURN_IF_ERROR(Transaction(events, [&]() -> Status {
    ASSIGN_OR_RETURN(BackendRecord old, LoadBackend(backend.name));
    RETURN_IF_ERROR(CheckBackendUnused(backend.name, removed_versions));
    b = old;
    b.spec = backend.spec;
    b.updated_at = clock_.Now();
    ASSIGN_OR_RETURN(Stmt s, Prepare("UPDATE backends SET spec = ?, updated_at = ? WHERE id = ?"));
    s.Text(b.spec).Time(b.updated_at).Int(b.id);
    RETURN_IF_ERROR(s.Run());
    events.push_back(BackendEvent(Event::Type::kUpdated, b));
    return OkStatus();
  }));
  return b;
}

Status SqliteStore::DeleteBackend(const std::string& name) {
  std::lock_guard lock(mu_);
  std::vector<Event> events;
  return Transaction(events, [&]() -> Status {
    ASSIGN_OR_RETURN(BackendRecord old, LoadBackend(name));
    RETURN_IF_ERROR(CheckBackendUnused(name, std::nullopt));
    RETURN_IF_ERROR(Exec("DELETE FROM backends WHERE id = ?", old.id));
    events.push_back(BackendEvent(Event::Type::kDeleted, old));
    return OkStatus();
  });
}

}  // namespace segma::store
