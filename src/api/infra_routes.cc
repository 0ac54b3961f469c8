// /v2/clusters, /v2/workers (registration, heartbeats, labels, maintenance), /v2/gpus.

#include <fmt/format.h>

#include "api/api.h"
#include "auth/validation.h"
#include "common/crypto.h"
#include "controllers/cluster_state.h"

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
  ASSIGN_OR_RETURN(auto list, c.s.store.ListClusters(o));
  return ListResponse(list, o);
}

Result<Response> CreateCluster(ApiContext& c) {
  json::object storage;
  JsonReader r = c.Body(storage);
  types::Cluster cluster;
  cluster.name = r.String("name");
  cluster.description = r.OptionalString("description").value_or("");
  cluster.is_default = r.OptionalBool("is_default").value_or(false);
  RETURN_IF_ERROR(r.Finish());
  RETURN_IF_ERROR(auth::ValidateName("cluster", cluster.name));
  cluster.registration_token = "segma_ct_" + RandomToken(24);
  ASSIGN_OR_RETURN(types::Cluster created, c.s.store.CreateCluster(cluster));
  return ObjectResponse(types::ToJson(created), status::created);
}

Result<Response> GetCluster(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  ASSIGN_OR_RETURN(types::Cluster cluster, c.s.store.GetCluster(id));
  return ObjectResponse(types::ToJson(cluster));
}

Result<Response> UpdateCluster(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  json::object storage;
  JsonReader r = c.Body(storage);
  store::ClusterPatch patch;
  patch.name = r.OptionalString("name");
  patch.description = r.OptionalString("description");
  patch.is_default = r.OptionalBool("is_default");
  RETURN_IF_ERROR(r.Finish());
  if (patch.name) RETURN_IF_ERROR(auth::ValidateName("cluster", *patch.name));
  ASSIGN_OR_RETURN(types::Cluster cluster, c.s.store.UpdateCluster(id, patch));
  return ObjectResponse(types::ToJson(cluster));
}

Result<Response> RotateRegistrationToken(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  store::ClusterPatch patch;
  patch.registration_token = "segma_ct_" + RandomToken(24);
  ASSIGN_OR_RETURN(types::Cluster cluster, c.s.store.UpdateCluster(id, patch));
  return ObjectResponse(types::ToJson(cluster));
}

Result<Response> DeleteCluster(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  RETURN_IF_ERROR(c.s.store.DeleteCluster(id));
  return Response::NoContent();
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
  json::object body{{"worker", types::ToJson(reg.worker)}, {"token", reg.worker_token}};
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
  ASSIGN_OR_RETURN(auto list, c.s.store.ListWorkers(o));
  return ListResponse(list, o);
}

Result<Response> GetWorker(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  ASSIGN_OR_RETURN(types::Worker w, c.s.store.GetWorker(id));
  return ObjectResponse(types::ToJson(w));
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
  ASSIGN_OR_RETURN(types::Worker w, c.s.store.UpdateWorker(id, patch));
  return ObjectResponse(types::ToJson(w));
}

Result<Response> DeleteWorker(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  RETURN_IF_ERROR(c.s.store.DeleteWorker(id));
  return Response::NoContent();
}

// ---- GPUs ---------------------------------------------------------------------------------------

// Bytes claimed by segma's instances on each GPU: (worker id, GPU index) → Σ claims.
using Allocations = std::map<std::pair<int64_t, int>, int64_t>;

Result<Allocations> LoadAllocations(store::Store& store) {
  ASSIGN_OR_RETURN(std::vector<types::ModelInstance> instances,
                   controllers::ListAllInstances(store));
  Allocations out;
  for (const types::ModelInstance& i : instances) {
    if (!controllers::HoldsClaims(i)) continue;
    for (const auto& [index, bytes] : i.claim.vram) out[{i.worker_id, index}] += bytes;
    for (const auto& d : i.distributed_servers) {
      for (const auto& [index, bytes] : d.claim.vram) out[{d.worker_id, index}] += bytes;
    }
  }
  return out;
}

json::object GpuJson(const types::Worker& w, const types::GpuDevice& g,
                     const Allocations& allocations) {
  json::object o = types::ToJson(g);
  auto it = allocations.find({w.id, g.index});
  o["memory_allocated"] = it == allocations.end() ? 0 : it->second;
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
  json::array gpus;
  for (;;) {
    ASSIGN_OR_RETURN(auto workers, c.s.store.ListWorkers(all));
    for (const types::Worker& w : workers.items) {
      if (worker_id && w.id != *worker_id) continue;
      for (const types::GpuDevice& g : w.status.gpus) {
        if (!o.q.empty() && g.name.find(o.q) == std::string::npos) continue;
        gpus.push_back(GpuJson(w, g, allocations));
      }
    }
    if (static_cast<int64_t>(all.page) * all.per_page >= workers.total) break;
    ++all.page;
  }
  const int64_t total = static_cast<int64_t>(gpus.size());
  const size_t begin = static_cast<size_t>(o.page - 1) * o.per_page;
  json::array page;
  for (size_t i = begin; i < gpus.size() && i < begin + o.per_page; ++i) page.push_back(gpus[i]);
  return ListJson(std::move(page), total, o);
}

}  // namespace

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
  };
}

std::vector<Route> ControlPlaneRoutes() {
  std::vector<Route> routes = IdentityRoutes();
  for (Route& r : InfraRoutes()) routes.push_back(std::move(r));
  for (Route& r : ModelRoutes()) routes.push_back(std::move(r));
  for (Route& r : WorkerRoutes()) routes.push_back(std::move(r));
  for (Route& r : UsageRoutes()) routes.push_back(std::move(r));
  return routes;
}

}  // namespace segma::api
