// /v2/clusters, /v2/workers (registration, heartbeats, labels, maintenance), /v2/gpus,
// /v2/backends.

#include <fmt/format.h>

#include "api/api.h"
#include "auth/validation.h"
#include "common/crypto.h"
#include "controllers/cluster_state.h"
#include "controllers/estimate_adapter.h"
#include "worker/engines/backend.h"

namespace segma::api {

namespace {

using auth::Action;
using auth::Resource;
using http::Response;
using http::bhttp::status;
using http::bhttp::verb;

constexpr size_t kMaxLabels = 64;

Result<std::map<std::string, std::string>> ReadLabels(JsonReader& r) {
  std::optional<std::map<std::string, std::string>> labels = r.OptionalStringMap("labels");
  if (!labels) return std::map<std::string, std::string>();
  if (labels->size() > kMaxLabels) return InvalidArgumentError("at most 64 labels");
  for (const auto& [k, v] : *labels) {
    RETURN_IF_ERROR(auth::ValidateName("label key", k));
    if (v.size() > 256) return InvalidArgumentError("label values must be at most 256 characters");
  }
  return *labels;
}

// ---- clusters -----------------------------------------------------------------------------------

Result<Response> ListClusters(ApiContext& c) {
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  return ListResponse(c.s.store.ListClusters(o), o);
}

Result<types::GpuSharing> ClusterGpuSharing(std::string_view name) {
  std::optional<types::GpuSharing> g = types::ParseGpuSharing(name);
  if (!g) return InvalidArgumentError("gpu_sharing must be claims or enforced");
  return *g;
}

Result<Response> CreateCluster(ApiContext& c) {
  json::object storage;
  JsonReader r = c.Body(storage);
  types::Cluster cluster;
  cluster.name = r.String("name");
  cluster.description = r.OptionalString("description").value_or("");
  cluster.is_default = r.OptionalBool("is_default").value_or(false);
  std::optional<std::string> sharing = r.OptionalString("gpu_sharing");
  RETURN_IF_ERROR(r.Finish());
  if (sharing) {
    ASSIGN_OR_RETURN(cluster.gpu_sharing, ClusterGpuSharing(*sharing));
  }
  RETURN_IF_ERROR(auth::ValidateName("cluster", cluster.name));
  cluster.registration_token = "segma_ct_" + RandomToken(24);
  return RowResponse(c.s.store.CreateCluster(cluster), status::created);
}

Result<Response> GetCluster(ApiContext& c) {
  return RowResponse(RowById(c, &store::Store::GetCluster));
}

Result<Response> UpdateCluster(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  json::object storage;
  JsonReader r = c.Body(storage);
  store::ClusterPatch patch;
  patch.name = r.OptionalString("name");
  patch.description = r.OptionalString("description");
  patch.is_default = r.OptionalBool("is_default");
  std::optional<std::string> sharing = r.OptionalString("gpu_sharing");
  RETURN_IF_ERROR(r.Finish());
  if (sharing) {
    ASSIGN_OR_RETURN(patch.gpu_sharing, ClusterGpuSharing(*sharing));
  }
  if (patch.name) RETURN_IF_ERROR(auth::ValidateName("cluster", *patch.name));
  return RowResponse(c.s.store.UpdateCluster(id, patch));
}

Result<Response> RotateRegistrationToken(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  store::ClusterPatch patch;
  patch.registration_token = "segma_ct_" + RandomToken(24);
  return RowResponse(c.s.store.UpdateCluster(id, patch));
}

Result<Response> DeleteCluster(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  return NoContentResponse(c.s.store.DeleteCluster(id));
}

// ---- workers ------------------------------------------------------------------------------------

// POST /v2/workers with "Authorization: Bearer <cluster registration token>".
Result<Response> RegisterWorker(ApiContext& c) {
  std::optional<std::string> token = c.http.BearerToken();
  if (!token) return UnauthenticatedError("a cluster registration token is required");
  json::object storage;
  JsonReader r = c.Body(storage);
  std::string name = r.String("name");
  std::string address = r.OptionalString("address").value_or(c.http.remote_address);
  int64_t port = r.Int("port");
  ASSIGN_OR_RETURN(auto labels, ReadLabels(r));
  RETURN_IF_ERROR(r.Finish());
  if (port < 1 || port > 65535) return InvalidArgumentError("port must be 1-65535");
  if (address.empty() || address.size() > 255) {
    return InvalidArgumentError("address must be 1-255 characters");
  }
  ASSIGN_OR_RETURN(
      auth::RegisteredWorker reg,
      c.s.worker_tokens.RegisterWorker(*token, name, address, static_cast<int>(port), labels));
  json::object body{
      {"worker", types::ToJson(reg.worker)},
      {"token", reg.worker_token},
      {"proxy_token", WorkerProxyToken(c.s.options.worker_proxy_key, Sha256Hex(reg.worker_token))}};
  return ObjectResponse(body, status::created);
}

// POST /v2/worker-heartbeat {"status": WorkerStatus} with the worker's own token.
Result<Response> Heartbeat(ApiContext& c) {
  if (!c.principal.worker_id) return PermissionDeniedError("heartbeats need a worker token");
  json::object storage;
  JsonReader r = c.Body(storage);
  const json::object* status_obj = r.OptionalObject("status");
  RETURN_IF_ERROR(r.Finish());
  if (status_obj == nullptr) return InvalidArgumentError("status is required");
  ASSIGN_OR_RETURN(types::WorkerStatus ws, types::WorkerStatusFromJson(*status_obj, "status"));
  ASSIGN_OR_RETURN(types::Worker w,
                   c.s.store.RecordHeartbeat(*c.principal.worker_id, ws, c.s.clock.Now()));
  return ObjectResponse({{"id", w.id}, {"state", types::WorkerStateName(w.state)}});
}

Result<Response> ListWorkers(ApiContext& c) {
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  ASSIGN_OR_RETURN(o.cluster_id, QueryInt(c.http, "cluster_id"));
  return ListResponse(c.s.store.ListWorkers(o), o);
}

Result<Response> GetWorker(ApiContext& c) {
  return RowResponse(RowById(c, &store::Store::GetWorker));
}

Result<Response> UpdateWorker(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  json::object storage;
  JsonReader r = c.Body(storage);
  store::WorkerPatch patch;
  if (storage.contains("labels")) {
    ASSIGN_OR_RETURN(patch.labels, ReadLabels(r));
  }
  patch.maintenance = r.OptionalBool("maintenance");
  patch.maintenance_message = r.OptionalString("maintenance_message");
  RETURN_IF_ERROR(r.Finish());
  if (patch.maintenance_message && patch.maintenance_message->size() > 1024) {
    return InvalidArgumentError("maintenance_message must be at most 1024 characters");
  }
  return RowResponse(c.s.store.UpdateWorker(id, patch));
}

Result<Response> DeleteWorker(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  return NoContentResponse(c.s.store.DeleteWorker(id));
}

// ---- GPUs ---------------------------------------------------------------------------------------

// What segma's instances hold: bytes claimed on each GPU ((worker id, GPU index) → Σ claims),
// and who each instance is, to name the slices workers report.
struct Allocations {
  std::map<std::pair<int64_t, int>, int64_t> claimed;
  std::map<int64_t, std::pair<std::string, int64_t>> instances;  // id → (name, model id)
};

Result<Allocations> LoadAllocations(store::Store& store) {
  ASSIGN_OR_RETURN(std::vector<types::ModelInstance> instances,
                   controllers::ListAllInstances(store));
  Allocations out;
  for (const types::ModelInstance& i : instances) {
    if (!controllers::HoldsClaims(i)) continue;
    out.instances[i.id] = {i.name, i.model_id};
    for (const auto& [index, bytes] : i.claim.vram) out.claimed[{i.worker_id, index}] += bytes;
    for (const auto& d : i.distributed_servers) {
      for (const auto& [index, bytes] : d.claim.vram) out.claimed[{d.worker_id, index}] += bytes;
    }
  }
  return out;
}

json::object GpuJson(const types::Worker& w, const types::GpuDevice& g,
                     const Allocations& allocations) {
  json::object o = types::ToJson(g);
  auto it = allocations.claimed.find({w.id, g.index});
  o["memory_allocated"] = it == allocations.claimed.end() ? 0 : it->second;
  // The enforced slices as the worker's last heartbeat read them, named after their instances.
  if (auto slices = o.find("slices"); slices != o.end() && slices->value().is_array()) {
    for (json::value& s : slices->value().as_array()) {
      json::object& slice = s.as_object();
      auto inst = allocations.instances.find(slice.at("instance_id").as_int64());
      if (inst == allocations.instances.end()) continue;
      slice["instance_name"] = inst->second.first;
      slice["model_id"] = inst->second.second;
    }
  }
  o["id"] = fmt::format("{}:{}", w.name, g.index);
  o["worker_id"] = w.id;
  o["worker_name"] = w.name;
  o["worker_state"] = types::WorkerStateName(w.state);
  o["cluster_id"] = w.cluster_id;
  return o;
}

Result<Response> ListGpus(ApiContext& c) {
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  ASSIGN_OR_RETURN(std::optional<int64_t> worker_id, QueryInt(c.http, "worker_id"));
  ASSIGN_OR_RETURN(o.cluster_id, QueryInt(c.http, "cluster_id"));
  // GPUs live inside worker status: walk every worker page, then page the GPUs.
  store::ListOptions all = o;
  all.page = 1;
  all.per_page = store::ListOptions::kMaxPerPage;
  all.q.clear();
  all.sort.clear();
  ASSIGN_OR_RETURN(Allocations allocations, LoadAllocations(c.s.store));
  // Only the GPUs of the page asked for become JSON; the others are counted.
  const int64_t first = static_cast<int64_t>(o.page - 1) * o.per_page;
  int64_t total = 0;
  json::array page;
  for (;;) {
    ASSIGN_OR_RETURN(auto workers, c.s.store.ListWorkers(all));
    for (const types::Worker& w : workers.items) {
      if (worker_id && w.id != *worker_id) continue;
      for (const types::GpuDevice& g : w.status.gpus) {
        if (!o.q.empty() && g.name.find(o.q) == std::string::npos) continue;
        if (total >= first && total < first + o.per_page) {
          page.push_back(GpuJson(w, g, allocations));
        }
        ++total;
      }
    }
    if (static_cast<int64_t>(all.page) * all.per_page >= workers.total) break;
    ++all.page;
  }
  return ListJson(std::move(page), total, o);
}

// ---- backends -----------------------------------------------------------------------------------

Result<std::string> NameParam(const ApiContext& c, const std::string& key) {
  auto it = c.http.path_params.find(key);
  if (it == c.http.path_params.end() || it->second.empty()) {
    return InvalidArgumentError(key + " is required");
  }
  return it->second;
}

// Parses one version's JSON (the shape of a value of "versions") of backend `name`, with the
// same checks as a whole backend.
Result<engines::BackendVersion> ParseVersion(const std::string& name, const std::string& version,
                                             const json::value& body) {
  json::object versions;
  versions[version] = body;
  json::object wrapper{{"name", name}, {"versions", std::move(versions)}};
  ASSIGN_OR_RETURN(engines::Backend b, engines::BackendFromJson(wrapper));
  return b.versions.begin()->second;
}

json::object VersionsJson(const std::map<std::string, engines::BackendVersion>& versions) {
  json::object o;
  for (const auto& [k, v] : versions) o[k] = engines::ToJson(v);
  return o;
}

// The versions users added to built-in backend `name` (its row's spec is {"versions": {...}}).
Result<std::map<std::string, engines::BackendVersion>> AddedVersions(
    const store::BackendRecord& row) {
  std::map<std::string, engines::BackendVersion> out;
  Result<json::value> v = ParseJson(row.spec);
  if (!v.ok() || !v->is_object() || !v->as_object().contains("versions") ||
      !v->as_object().at("versions").is_object()) {
    return InternalError(fmt::format("stored versions of backend '{}' are malformed", row.name));
  }
  for (const auto& kv : v->as_object().at("versions").as_object()) {
    Result<engines::BackendVersion> ver = ParseVersion(row.name, std::string(kv.key()), kv.value());
    if (!ver.ok()) {
      return InternalError(fmt::format("stored version '{}' of backend '{}': {}",
                                       std::string(kv.key()), row.name, ver.status().message()));
    }
    out.emplace(std::string(kv.key()), std::move(ver).value());
  }
  return out;
}

Result<engines::Backend> ParseStoredBackend(const store::BackendRecord& row) {
  Result<json::value> v = ParseJson(row.spec);
  if (!v.ok() || !v->is_object()) {
    return InternalError(fmt::format("stored backend '{}' is not a JSON object", row.name));
  }
  Result<engines::Backend> b = engines::BackendFromJson(v->as_object());
  if (!b.ok()) {
    return InternalError(
        fmt::format("stored backend '{}' is invalid: {}", row.name, b.status().message()));
  }
  return b;
}

// The API view: the definition, plus the row's id and times for custom backends and the versions
// users added for built-in ones.
json::object BackendView(const engines::Backend& b, const store::BackendRecord* row) {
  json::object o = engines::ToJson(b);
  if (b.built_in) {
    json::array added;
    const engines::Backend* original = engines::FindBuiltInBackend(b.name);
    for (const auto& [k, v] : b.versions) {
      if (original != nullptr && !original->versions.count(k)) added.emplace_back(k);
    }
    o["custom_versions"] = std::move(added);
  } else if (row != nullptr) {
    o["id"] = row->id;
    o["created_at"] = FormatRfc3339(row->created_at);
    o["updated_at"] = FormatRfc3339(row->updated_at);
  }
  return o;
}

Result<Response> ListBackends(ApiContext& c) {
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  ASSIGN_OR_RETURN(std::vector<store::BackendRecord> rows, c.s.store.ListBackends());
  json::array all;
  for (const engines::Backend& b : engines::BuiltInBackends()) {
    ASSIGN_OR_RETURN(engines::Backend resolved, ResolveBackend(c.s.store, b.name));
    all.push_back(BackendView(resolved, nullptr));
  }
  for (const store::BackendRecord& row : rows) {
    if (engines::FindBuiltInBackend(row.name) != nullptr) continue;
    ASSIGN_OR_RETURN(engines::Backend b, ParseStoredBackend(row));
    all.push_back(BackendView(b, &row));
  }
  std::string q = o.q;
  std::transform(q.begin(), q.end(), q.begin(), [](unsigned char ch) { return std::tolower(ch); });
  json::array matching;
  for (json::value& v : all) {
    std::string name(v.as_object().at("name").as_string());
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char ch) { return std::tolower(ch); });
    if (q.empty() || name.find(q) != std::string::npos) matching.push_back(std::move(v));
  }
  return PageOfListJson(std::move(matching), o);
}

Result<Response> GetBackend(ApiContext& c) {
  ASSIGN_OR_RETURN(std::string name, NameParam(c, "name"));
  ASSIGN_OR_RETURN(engines::Backend b, ResolveBackend(c.s.store, name));
  if (b.built_in) return ObjectResponse(BackendView(b, nullptr));
  ASSIGN_OR_RETURN(store::BackendRecord row, c.s.store.GetBackend(name));
  return ObjectResponse(BackendView(b, &row));
}

Status RefuseBuiltIn(const std::string& name, std::string_view what) {
  return FailedPreconditionError(fmt::format(
      "backend '{}' is built in and cannot be {}; add a version with POST /v2/backends/{}/versions "
      "or create a custom backend under another name",
      name, what, name));
}

Result<Response> CreateBackend(ApiContext& c) {
  ASSIGN_OR_RETURN(json::object body, c.BodyObject());
  ASSIGN_OR_RETURN(engines::Backend b, engines::BackendFromJson(body));
  if (engines::FindBuiltInBackend(b.name) != nullptr) {
    return AlreadyExistsError(
        fmt::format("backend '{}' is built in: pick another name, or add a version with POST "
                    "/v2/backends/{}/versions",
                    b.name, b.name));
  }
  store::BackendRecord row;
  row.name = b.name;
  row.spec = ToJsonString(engines::ToJson(b));
  ASSIGN_OR_RETURN(store::BackendRecord created, c.s.store.CreateBackend(row));
  return ObjectResponse(BackendView(b, &created), status::created);
}

std::vector<std::string> RemovedVersions(const engines::Backend& before,
                                         const engines::Backend& after) {
  std::vector<std::string> removed;
  for (const auto& [k, v] : before.versions) {
    if (!after.versions.count(k)) removed.push_back(k);
  }
  return removed;
}

// PATCH: the fields present replace the stored ones (a present "versions" replaces all
// versions); the result is validated as a whole.
Result<Response> UpdateBackend(ApiContext& c) {
  ASSIGN_OR_RETURN(std::string name, NameParam(c, "name"));
  if (engines::FindBuiltInBackend(name) != nullptr) return RefuseBuiltIn(name, "changed");
  ASSIGN_OR_RETURN(json::object body, c.BodyObject());
  ASSIGN_OR_RETURN(store::BackendRecord row, c.s.store.GetBackend(name));
  ASSIGN_OR_RETURN(engines::Backend current, ParseStoredBackend(row));
  json::object merged = engines::ToJson(current);
  for (const auto& kv : body) {
    if (kv.key() == "name" && !(kv.value().is_string() && kv.value().as_string() == name)) {
      return InvalidArgumentError("name cannot be changed: create a new backend instead");
    }
    merged[kv.key()] = kv.value();
  }
  if (body.contains("versions") && !body.contains("default_version")) {
    merged.erase("default_version");  // re-derived when one version is left
    if (body.at("versions").is_object() &&
        body.at("versions").as_object().contains(current.default_version)) {
      merged["default_version"] = current.default_version;
    }
  }
  ASSIGN_OR_RETURN(engines::Backend updated, engines::BackendFromJson(merged));
  row.spec = ToJsonString(engines::ToJson(updated));
  ASSIGN_OR_RETURN(store::BackendRecord saved,
                   c.s.store.UpdateBackend(row, RemovedVersions(current, updated)));
  return ObjectResponse(BackendView(updated, &saved));
}

Result<Response> DeleteBackend(ApiContext& c) {
  ASSIGN_OR_RETURN(std::string name, NameParam(c, "name"));
  if (engines::FindBuiltInBackend(name) != nullptr) return RefuseBuiltIn(name, "deleted");
  return NoContentResponse(c.s.store.DeleteBackend(name));
}

// POST /v2/backends/{name}/versions {"version": "v2", "command": [...], ...}: a version added
// to a custom or a built-in backend.
Result<Response> AddBackendVersion(ApiContext& c) {
  ASSIGN_OR_RETURN(std::string name, NameParam(c, "name"));
  ASSIGN_OR_RETURN(json::object body, c.BodyObject());
  auto v = body.find("version");
  if (v == body.end() || !v->value().is_string() || v->value().as_string().empty()) {
    return InvalidArgumentError("version is required (a string)");
  }
  const std::string version(v->value().as_string());
  body.erase("version");
  ASSIGN_OR_RETURN(engines::BackendVersion parsed, ParseVersion(name, version, body));
  ASSIGN_OR_RETURN(engines::Backend current, ResolveBackend(c.s.store, name));
  if (current.versions.count(version)) {
    return AlreadyExistsError(
        fmt::format("backend '{}' already has a version '{}'", name, version));
  }
  if (current.built_in) {
    Result<store::BackendRecord> row = c.s.store.GetBackend(name);
    std::map<std::string, engines::BackendVersion> added;
    if (row.ok()) {
      ASSIGN_OR_RETURN(added, AddedVersions(*row));
    } else if (row.status().code() != StatusCode::kNotFound) {
      return row.status();
    }
    added[version] = parsed;
    store::BackendRecord next;
    next.name = name;
    next.spec = ToJsonString(json::object{{"versions", VersionsJson(added)}});
    if (row.ok()) {
      RETURN_IF_ERROR(c.s.store.UpdateBackend(next, {}).status());
    } else {
      RETURN_IF_ERROR(c.s.store.CreateBackend(next).status());
    }
  } else {
    ASSIGN_OR_RETURN(store::BackendRecord row, c.s.store.GetBackend(name));
    current.versions[version] = parsed;
    row.spec = ToJsonString(engines::ToJson(current));
    RETURN_IF_ERROR(c.s.store.UpdateBackend(row, {}).status());
  }
  ASSIGN_OR_RETURN(engines::Backend after, ResolveBackend(c.s.store, name));
  return ObjectResponse(BackendView(after, nullptr), status::created);
}

Result<Response> DeleteBackendVersion(ApiContext& c) {
  ASSIGN_OR_RETURN(std::string name, NameParam(c, "name"));
  ASSIGN_OR_RETURN(std::string version, NameParam(c, "version"));
  ASSIGN_OR_RETURN(engines::Backend current, ResolveBackend(c.s.store, name));
  if (!current.versions.count(version)) {
    return NotFoundError(fmt::format("backend '{}' has no version '{}'", name, version));
  }
  ASSIGN_OR_RETURN(store::BackendRecord row, c.s.store.GetBackend(name));
  if (current.built_in) {
    const engines::Backend* original = engines::FindBuiltInBackend(name);
    if (original->versions.count(version)) {
      return FailedPreconditionError(fmt::format(
          "version '{}' of backend '{}' is built in and cannot be deleted", version, name));
    }
    ASSIGN_OR_RETURN(auto added, AddedVersions(row));
    added.erase(version);
    row.spec = ToJsonString(json::object{{"versions", VersionsJson(added)}});
  } else {
    if (version == current.default_version) {
      return FailedPreconditionError(fmt::format(
          "version '{}' is the default_version of backend '{}': make another version the "
          "default first (PATCH /v2/backends/{})",
          version, name, name));
    }
    current.versions.erase(version);
    row.spec = ToJsonString(engines::ToJson(current));
  }
  return NoContentResponse(c.s.store.UpdateBackend(row, {version}).status());
}

}  // namespace

Result<engines::Backend> ResolveBackend(store::Store& store, const std::string& name) {
  const engines::Backend* built_in = engines::FindBuiltInBackend(name);
  Result<store::BackendRecord> row = store.GetBackend(name);
  if (!row.ok() && row.status().code() != StatusCode::kNotFound) return row.status();
  if (built_in != nullptr) {
    engines::Backend b = *built_in;
    if (row.ok()) {
      ASSIGN_OR_RETURN(auto added, AddedVersions(*row));
      for (auto& [k, v] : added) b.versions.emplace(k, std::move(v));
    }
    return b;
  }
  if (!row.ok()) {
    return NotFoundError(
        fmt::format("backend '{}' not found (GET /v2/backends lists the backends)", name));
  }
  return ParseStoredBackend(*row);
}

Result<types::BackendProfile> StoreBackendCatalog::Find(const std::string& name) const {
  ASSIGN_OR_RETURN(engines::Backend b, ResolveBackend(store_, name));
  return engines::ProfileOf(b);
}

Result<types::EngineChoice> CheckModelBackend(store::Store& store, const types::Model& m) {
  ASSIGN_OR_RETURN(
      types::EngineChoice choice,
      types::ChooseEngine(m, controllers::FormatOnServer(m), StoreBackendCatalog(store)));
  RETURN_IF_ERROR(types::CheckEngineFits(m, choice));
  return choice;
}

std::vector<Route> InfraRoutes() {
  using A = Access;
  return {
      {verb::get, "/v2/clusters", A::kGlobal, Resource::kClusters, Action::kRead, ListClusters,
       "clusters"},
      {verb::post, "/v2/clusters", A::kGlobal, Resource::kClusters, Action::kCreate, CreateCluster,
       ""},
      {verb::get, "/v2/clusters/{id}", A::kGlobal, Resource::kClusters, Action::kRead, GetCluster,
       ""},
      {verb::patch, "/v2/clusters/{id}", A::kGlobal, Resource::kClusters, Action::kUpdate,
       UpdateCluster, ""},
      {verb::post, "/v2/clusters/{id}/registration-token", A::kGlobal, Resource::kClusters,
       Action::kUpdate, RotateRegistrationToken, ""},
      {verb::delete_, "/v2/clusters/{id}", A::kGlobal, Resource::kClusters, Action::kDelete,
       DeleteCluster, ""},

      {verb::post, "/v2/workers", A::kPublic, Resource::kWorkerSelf, Action::kCreate,
       RegisterWorker, ""},
      {verb::post, "/v2/worker-heartbeat", A::kGlobal, Resource::kWorkerSelf, Action::kUpdate,
       Heartbeat, ""},
      {verb::get, "/v2/workers", A::kGlobal, Resource::kWorkers, Action::kRead, ListWorkers,
       "workers"},
      {verb::get, "/v2/workers/{id}", A::kGlobal, Resource::kWorkers, Action::kRead, GetWorker, ""},
      {verb::patch, "/v2/workers/{id}", A::kGlobal, Resource::kWorkers, Action::kUpdate,
       UpdateWorker, ""},
      {verb::delete_, "/v2/workers/{id}", A::kGlobal, Resource::kWorkers, Action::kDelete,
       DeleteWorker, ""},

      {verb::get, "/v2/gpus", A::kGlobal, Resource::kGpus, Action::kRead, ListGpus, "workers"},

      {verb::get, "/v2/backends", A::kGlobal, Resource::kBackends, Action::kRead, ListBackends, ""},
      {verb::post, "/v2/backends", A::kGlobal, Resource::kBackends, Action::kCreate, CreateBackend,
       ""},
      {verb::get, "/v2/backends/{name}", A::kGlobal, Resource::kBackends, Action::kRead, GetBackend,
       ""},
      {verb::patch, "/v2/backends/{name}", A::kGlobal, Resource::kBackends, Action::kUpdate,
       UpdateBackend, ""},
      {verb::delete_, "/v2/backends/{name}", A::kGlobal, Resource::kBackends, Action::kDelete,
       DeleteBackend, ""},
      {verb::post, "/v2/backends/{name}/versions", A::kGlobal, Resource::kBackends, Action::kUpdate,
       AddBackendVersion, ""},
      {verb::delete_, "/v2/backends/{name}/versions/{version}", A::kGlobal, Resource::kBackends,
       Action::kUpdate, DeleteBackendVersion, ""},
  };
}

std::vector<Route> ControlPlaneRoutes() {
  std::vector<Route> routes = IdentityRoutes();
  for (Route& r : InfraRoutes()) routes.push_back(std::move(r));
  for (Route& r : ModelRoutes()) routes.push_back(std::move(r));
  for (Route& r : WorkerRoutes()) routes.push_back(std::move(r));
  for (Route& r : UsageRoutes()) routes.push_back(std::move(r));
  for (Route& r : ModelFileRoutes()) routes.push_back(std::move(r));
  for (Route& r : ModelRouteRoutes()) routes.push_back(std::move(r));
  return routes;
}

}  // namespace segma::api
