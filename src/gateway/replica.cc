#include "gateway/replica.h"

#include <fmt/format.h>

#include "common/logging.h"
#include "common/thread.h"
#include "http/client.h"

namespace segma::gateway {

namespace {

// Small readers that turn a wrong type into kInvalidArgument instead of an exception.
Result<const json::object*> Obj(const json::value& v, std::string_view what) {
  if (!v.is_object()) return InvalidArgumentError(fmt::format("{} must be an object", what));
  return &v.get_object();
}

Result<int64_t> Int(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return InvalidArgumentError(fmt::format("missing {}", key));
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<int64_t>(v->get_uint64());
  return InvalidArgumentError(fmt::format("{} must be an integer", key));
}

Result<std::optional<int64_t>> OptInt(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || v->is_null()) return std::optional<int64_t>();
  ASSIGN_OR_RETURN(int64_t x, Int(o, key));
  return std::optional<int64_t>(x);
}

Result<double> Num(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_number()) {
    return InvalidArgumentError(fmt::format("{} must be a number", key));
  }
  return v->to_number<double>();
}

Result<std::string> Str(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_string()) {
    return InvalidArgumentError(fmt::format("{} must be a string", key));
  }
  return std::string(v->get_string());
}

Result<bool> Bool(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_bool()) {
    return InvalidArgumentError(fmt::format("{} must be a boolean", key));
  }
  return v->get_bool();
}

Result<const json::array*> Arr(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_array()) {
    return InvalidArgumentError(fmt::format("{} must be an array", key));
  }
  return &v->get_array();
}

json::value OptMs(const std::optional<Timestamp>& t) {
  return t ? json::value(ToUnixMillis(*t)) : json::value(nullptr);
}

std::string Trimmed(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

}  // namespace

json::object KeyRecordToJson(const std::string& secret_hash, const KeyRecord& k) {
  json::value models = nullptr;
  if (k.allowed_models) {
    json::array a;
    for (const std::string& m : *k.allowed_models) a.emplace_back(m);
    models = std::move(a);
  }
  json::value cidrs = nullptr;
  if (k.allowed_cidrs) {
    json::array a;
    for (const CidrRange& r : k.allowed_cidrs->ranges()) a.emplace_back(r.ToString());
    cidrs = std::move(a);
  }
  return json::object{{"hash", secret_hash},
                      {"id", k.id},
                      {"name", k.name},
                      {"project_id", k.project_id},
                      {"user_id", k.user_id},
                      {"scope", std::string(types::ApiKeyScopeName(k.scope))},
                      {"allowed_models", std::move(models)},
                      {"expires_at_ms", OptMs(k.expires_at)},
                      {"revoked_at_ms", OptMs(k.revoked_at)},
                      {"limits", types::ToJson(k.limits)},
                      {"allowed_cidrs", std::move(cidrs)},
                      {"inference", json::object{{"code", static_cast<int>(k.inference.code())},
                                                 {"message", k.inference.message()}}}};
}

Result<std::pair<std::string, KeyRecord>> KeyRecordFromJson(const json::value& v) {
  ASSIGN_OR_RETURN(const json::object* o, Obj(v, "key"));
  std::pair<std::string, KeyRecord> out;
  KeyRecord& k = out.second;
  ASSIGN_OR_RETURN(out.first, Str(*o, "hash"));
  if (out.first.size() != 64) return InvalidArgumentError("key hash must be 64 hex digits");
  ASSIGN_OR_RETURN(k.id, Int(*o, "id"));
  ASSIGN_OR_RETURN(k.name, Str(*o, "name"));
  ASSIGN_OR_RETURN(k.project_id, Int(*o, "project_id"));
  ASSIGN_OR_RETURN(k.user_id, Int(*o, "user_id"));
  ASSIGN_OR_RETURN(std::string scope, Str(*o, "scope"));
  std::optional<types::ApiKeyScope> s = types::ParseApiKeyScope(scope);
  if (!s) return InvalidArgumentError("unknown key scope " + scope);
  k.scope = *s;
  if (const json::value* m = o->if_contains("allowed_models"); m != nullptr && !m->is_null()) {
    if (!m->is_array()) return InvalidArgumentError("allowed_models must be an array or null");
    std::vector<std::string> models;
    for (const json::value& x : m->get_array()) {
      if (!x.is_string()) return InvalidArgumentError("allowed_models entries must be strings");
      models.emplace_back(x.get_string());
    }
    k.allowed_models = std::move(models);
  }
  ASSIGN_OR_RETURN(std::optional<int64_t> expires, OptInt(*o, "expires_at_ms"));
  if (expires) k.expires_at = FromUnixMillis(*expires);
  ASSIGN_OR_RETURN(std::optional<int64_t> revoked, OptInt(*o, "revoked_at_ms"));
  if (revoked) k.revoked_at = FromUnixMillis(*revoked);
  if (const json::value* l = o->if_contains("limits"); l != nullptr) {
    ASSIGN_OR_RETURN(k.limits, types::ParseLimits(*l));
  }
  if (const json::value* c = o->if_contains("allowed_cidrs"); c != nullptr && !c->is_null()) {
    if (!c->is_array()) return InvalidArgumentError("allowed_cidrs must be an array or null");
    std::vector<CidrRange> ranges;
    for (const json::value& x : c->get_array()) {
      if (!x.is_string()) return InvalidArgumentError("allowed_cidrs entries must be strings");
      ASSIGN_OR_RETURN(CidrRange r, ParseCidr(std::string_view(x.get_string())));
      ranges.push_back(r);
    }
    k.allowed_cidrs = CidrSet(std::move(ranges));
  }
  const json::value* inf = o->if_contains("inference");
  if (inf == nullptr) return InvalidArgumentError("missing inference");
  ASSIGN_OR_RETURN(const json::object* io, Obj(*inf, "inference"));
  ASSIGN_OR_RETURN(int64_t code, Int(*io, "code"));
  ASSIGN_OR_RETURN(std::string message, Str(*io, "message"));
  if (code < 0 || code > static_cast<int64_t>(StatusCode::kUnauthenticated) + 8) {
    return InvalidArgumentError("bad inference code");
  }
  k.inference = code == 0 ? OkStatus() : Status(static_cast<StatusCode>(code), std::move(message));
  return out;
}

json::array ProjectLimitsToJson(const std::map<int64_t, types::Limits>& limits) {
  json::array out;
  for (const auto& [id, l] : limits) {
    out.push_back(json::object{{"project_id", id}, {"limits", types::ToJson(l)}});
  }
  return out;
}

Result<std::map<int64_t, types::Limits>> ProjectLimitsFromJson(const json::value& v) {
  if (!v.is_array()) return InvalidArgumentError("project_limits must be an array");
  std::map<int64_t, types::Limits> out;
  for (const json::value& e : v.get_array()) {
    ASSIGN_OR_RETURN(const json::object* o, Obj(e, "project limits"));
    ASSIGN_OR_RETURN(int64_t id, Int(*o, "project_id"));
    const json::value* l = o->if_contains("limits");
    if (l == nullptr) return InvalidArgumentError("missing limits");
    ASSIGN_OR_RETURN(out[id], types::ParseLimits(*l));
  }
  return out;
}

json::array RoutesToJson(const RouteTable& table) {
  json::array routes;
  for (const ModelRoute& r : table.routes()) {
    json::array deployments;
    for (const Deployment& d : r.deployments) {
      json::array replicas;
      for (const Replica& x : d.replicas) {
        json::object replica{
            {"instance_id", x.instance_id}, {"base_url", x.base_url}, {"healthy", x.healthy}};
        // Only in the state document the gateway token opens (/internal/gateway/state).
        if (!x.api_key.empty()) replica["engine_secret"] = x.api_key;
        replicas.push_back(std::move(replica));
      }
      deployments.push_back(json::object{{"deployment_id", d.deployment_id},
                                         {"project_id", d.project_id},
                                         {"weight", d.weight},
                                         {"upstream_model", d.upstream_model},
                                         {"replicas", std::move(replicas)}});
    }
    routes.push_back(json::object{{"name", r.name},
                                  {"created_at", r.created_at},
                                  {"owned_by", r.owned_by},
                                  {"deployments", std::move(deployments)}});
  }
  return routes;
}

Result<RouteTable::Builder> RoutesFromJson(const json::value& v) {
  if (!v.is_array()) return InvalidArgumentError("routes must be an array");
  RouteTable::Builder b;
  for (const json::value& rv : v.get_array()) {
    ASSIGN_OR_RETURN(const json::object* r, Obj(rv, "route"));
    ModelRouteSpec spec;
    ASSIGN_OR_RETURN(spec.name, Str(*r, "name"));
    ASSIGN_OR_RETURN(spec.created_at, Int(*r, "created_at"));
    ASSIGN_OR_RETURN(spec.owned_by, Str(*r, "owned_by"));
    ASSIGN_OR_RETURN(const json::array* deployments, Arr(*r, "deployments"));
    for (const json::value& dv : *deployments) {
      ASSIGN_OR_RETURN(const json::object* d, Obj(dv, "deployment"));
      DeploymentSpec ds;
      ASSIGN_OR_RETURN(ds.deployment_id, Int(*d, "deployment_id"));
      ASSIGN_OR_RETURN(ds.project_id, Int(*d, "project_id"));
      ASSIGN_OR_RETURN(int64_t weight, Int(*d, "weight"));
      if (weight < 0 || weight > 1'000'000) return InvalidArgumentError("bad weight");
      ds.weight = static_cast<uint32_t>(weight);
      ASSIGN_OR_RETURN(ds.upstream_model, Str(*d, "upstream_model"));
      ASSIGN_OR_RETURN(const json::array* replicas, Arr(*d, "replicas"));
      for (const json::value& xv : *replicas) {
        ASSIGN_OR_RETURN(const json::object* x, Obj(xv, "replica"));
        ReplicaSpec rs;
        ASSIGN_OR_RETURN(rs.instance_id, Int(*x, "instance_id"));
        ASSIGN_OR_RETURN(rs.base_url, Str(*x, "base_url"));
        ASSIGN_OR_RETURN(rs.healthy, Bool(*x, "healthy"));
        if (x->contains("engine_secret")) {  // absent: the engine takes none
          ASSIGN_OR_RETURN(rs.api_key, Str(*x, "engine_secret"));
        }
        ds.replicas.push_back(std::move(rs));
      }
      spec.deployments.push_back(std::move(ds));
    }
    b.Add(std::move(spec));
  }
  return b;
}

json::object UsageRecordToJson(const store::UsageRecord& r) {
  return json::object{{"request_id", r.request_id},
                      {"time_ms", ToUnixMillis(r.time)},
                      {"api_key_id", r.api_key_id},
                      {"user_id", r.user_id},
                      {"project_id", r.project_id},
                      {"model", r.model},
                      {"deployment_id", r.deployment_id},
                      {"instance_id", r.instance_id},
                      {"prompt_tokens", r.prompt_tokens},
                      {"completion_tokens", r.completion_tokens},
                      {"cached_tokens", r.cached_tokens},
                      {"ttft_ms", r.ttft_ms ? json::value(*r.ttft_ms) : json::value(nullptr)},
                      {"duration_ms", r.duration_ms},
                      {"status", r.status},
                      {"finish", store::UsageFinishName(r.finish)}};
}

Result<store::UsageRecord> UsageRecordFromJson(const json::value& v) {
  ASSIGN_OR_RETURN(const json::object* o, Obj(v, "usage record"));
  store::UsageRecord r;
  ASSIGN_OR_RETURN(r.request_id, Str(*o, "request_id"));
  if (r.request_id.empty() || r.request_id.size() > 128) {
    return InvalidArgumentError("request_id must be 1-128 characters");
  }
  ASSIGN_OR_RETURN(int64_t time_ms, Int(*o, "time_ms"));
  r.time = FromUnixMillis(time_ms);
  ASSIGN_OR_RETURN(r.api_key_id, Int(*o, "api_key_id"));
  ASSIGN_OR_RETURN(r.user_id, Int(*o, "user_id"));
  ASSIGN_OR_RETURN(r.project_id, Int(*o, "project_id"));
  ASSIGN_OR_RETURN(r.model, Str(*o, "model"));
  ASSIGN_OR_RETURN(r.deployment_id, Int(*o, "deployment_id"));
  ASSIGN_OR_RETURN(r.instance_id, Int(*o, "instance_id"));
  ASSIGN_OR_RETURN(r.prompt_tokens, Int(*o, "prompt_tokens"));
  ASSIGN_OR_RETURN(r.completion_tokens, Int(*o, "completion_tokens"));
  ASSIGN_OR_RETURN(r.cached_tokens, Int(*o, "cached_tokens"));
  if (r.prompt_tokens < 0 || r.completion_tokens < 0 || r.cached_tokens < 0) {
    return InvalidArgumentError("token counts must not be negative");
  }
  if (const json::value* t = o->if_contains("ttft_ms"); t != nullptr && !t->is_null()) {
    ASSIGN_OR_RETURN(double ttft, Num(*o, "ttft_ms"));
    r.ttft_ms = ttft;
  }
  ASSIGN_OR_RETURN(r.duration_ms, Num(*o, "duration_ms"));
  ASSIGN_OR_RETURN(int64_t status, Int(*o, "status"));
  if (status < 100 || status > 599) return InvalidArgumentError("status must be an HTTP status");
  r.status = static_cast<int>(status);
  // Optional: replicas from before ADR 0024 send none.
  if (const json::value* f = o->if_contains("finish"); f != nullptr) {
    if (!f->is_string()) return InvalidArgumentError("finish must be a string");
    std::optional<store::UsageFinish> finish = store::ParseUsageFinish(f->get_string());
    if (!finish) return InvalidArgumentError("unknown finish " + std::string(f->get_string()));
    r.finish = *finish;
  }
  return r;
}

std::string StateVersion(const Gateway& gateway) {
  return fmt::format("{}-{}", gateway.keys().version(), gateway.routes_version());
}

json::object StateToJson(const Gateway& gateway) {
  // Read the version first: a change racing with this read then shows as a newer version
  // afterwards, so the replica asks again instead of missing it.
  std::string version = StateVersion(gateway);
  json::array keys;
  for (const auto& [hash, record] : gateway.keys().All()) {
    keys.push_back(KeyRecordToJson(hash, *record));
  }
  auto table = gateway.routes();
  return json::object{{"version", std::move(version)},
                      {"keys", std::move(keys)},
                      {"project_limits", ProjectLimitsToJson(gateway.keys().AllProjectLimits())},
                      {"routes", table ? RoutesToJson(*table) : json::array()}};
}

// ---- ReplicaFollower ---------------------------------------------------------------------------

ReplicaFollower::ReplicaFollower(Gateway& gateway, ReplicaOptions options)
    : gateway_(gateway), options_(std::move(options)) {}

ReplicaFollower::~ReplicaFollower() { Stop(); }

Status ReplicaFollower::Apply(const json::value& state) {
  ASSIGN_OR_RETURN(const json::object* o, Obj(state, "state"));
  ASSIGN_OR_RETURN(std::string version, Str(*o, "version"));
  ASSIGN_OR_RETURN(const json::array* keys, Arr(*o, "keys"));
  std::vector<std::pair<std::string, KeyRecord>> records;
  records.reserve(keys->size());
  for (const json::value& k : *keys) {
    ASSIGN_OR_RETURN(auto r, KeyRecordFromJson(k));
    records.push_back(std::move(r));
  }
  std::map<int64_t, types::Limits> project_limits;
  if (const json::value* pl = o->if_contains("project_limits"); pl != nullptr) {
    ASSIGN_OR_RETURN(project_limits, ProjectLimitsFromJson(*pl));
  }
  const json::value* routes = o->if_contains("routes");
  if (routes == nullptr) return InvalidArgumentError("missing routes");
  ASSIGN_OR_RETURN(RouteTable::Builder builder, RoutesFromJson(*routes));
  RETURN_IF_ERROR(gateway_.SetRoutes(builder));
  gateway_.keys().Replace(std::move(records), std::move(project_limits));
  version_ = std::move(version);
  applied_.fetch_add(1);
  return OkStatus();
}

Status ReplicaFollower::Poll() {
  http::ClientRequest req;
  req.url = Trimmed(options_.server_url) +
            "/internal/gateway/state?timeout_s=" + std::to_string(options_.watch_timeout.count());
  if (!version_.empty()) req.url += "&version=" + version_;
  req.Bearer(options_.token);
  req.timeout = options_.watch_timeout + std::chrono::seconds(10);
  ASSIGN_OR_RETURN(http::ClientResponse res, http::FetchSync(std::move(req)));
  if (res.status == 304) return OkStatus();  // no change within the watch timeout
  if (res.status != 200) {
    const Status s(res.status == 401 || res.status == 403 ? StatusCode::kPermissionDenied
                                                          : StatusCode::kUnavailable,
                   fmt::format("server answered {} to the state watch: {}", res.status,
                               res.body.substr(0, 200)));
    return s;
  }
  ASSIGN_OR_RETURN(json::value state, res.Json());
  return Apply(state);
}

Status ReplicaFollower::Start() {
  Status first = Poll();
  if (!thread_.joinable()) {
    stopping_ = false;
    thread_ = std::thread([this] { Run(); });
  }
  return first;
}

void ReplicaFollower::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  // A watch in flight ends with the server's timeout at the latest; the thread is detached from
  // nothing else, so joining waits at most that long.
  if (thread_.joinable()) thread_.join();
}

void ReplicaFollower::Run() {
  NameThread("segma-follow");
  auto log = Logger("gateway");
  while (!stopping_) {
    Status s = Poll();
    if (s.ok()) continue;
    log->warn("following {}: {}", options_.server_url, s.ToString());
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, options_.retry_pause, [this] { return stopping_.load(); });
  }
}

// ---- RemoteUsageSink ---------------------------------------------------------------------------

Status RemoteUsageSink::Write(const std::vector<store::UsageRecord>& batch) {
  json::array records;
  records.reserve(batch.size());
  for (const store::UsageRecord& r : batch) records.push_back(UsageRecordToJson(r));
  http::ClientRequest req;
  req.method = boost::beast::http::verb::post;
  req.url = Trimmed(options_.server_url) + "/internal/gateway/usage";
  req.Bearer(options_.token);
  req.JsonBody(json::object{{"records", std::move(records)}});
  req.timeout = std::chrono::seconds(10);
  ASSIGN_OR_RETURN(http::ClientResponse res, http::FetchSync(std::move(req)));
  if (res.status != 200) {
    return UnavailableError(fmt::format("server answered {} to usage records: {}", res.status,
                                        res.body.substr(0, 200)));
  }
  return OkStatus();
}

}  // namespace segma::gateway
