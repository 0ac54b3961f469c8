// Routes for workers themselves (worker token): the instances assigned to them, with a watch
// stream, the models behind them, and state reports from the engine supervisor.

#include <algorithm>

#include <fmt/format.h>

#include "api/api.h"

namespace segma::api {

namespace {

using auth::Action;
using auth::Resource;
using http::Response;
using http::bhttp::verb;

bool AssignedTo(const types::ModelInstance& i, int64_t worker_id) {
  if (i.worker_id == worker_id) return true;
  for (const auto& d : i.distributed_servers) {
    if (d.worker_id == worker_id) return true;
  }
  return false;
}

// GET /v2/worker/instances[?watch=true]&worker_id=<own id> | &distributed_worker_id=<own id>
// worker_id: the instances whose engine runs here (the list also has those this worker serves as
// a distributed server, watch events only the former); distributed_worker_id: only those this
// worker serves as a distributed server (llama.cpp's rpc-server).
Result<Response> ListOwnInstances(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t self, SelfWorker(c));
  ASSIGN_OR_RETURN(std::optional<int64_t> asked, QueryInt(c.http, "worker_id"));
  ASSIGN_OR_RETURN(std::optional<int64_t> asked_distributed,
                   QueryInt(c.http, "distributed_worker_id"));
  // The id is required so that watch streams filter events to this worker's instances.
  if (asked.has_value() == asked_distributed.has_value()) {
    return InvalidArgumentError(
        fmt::format("one of worker_id={0} or distributed_worker_id={0} is required", self));
  }
  if (asked.value_or(self) != self || asked_distributed.value_or(self) != self) {
    return PermissionDeniedError("a worker may only follow its own instances");
  }
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  o.per_page = store::ListOptions::kMaxPerPage;
  store::ModelInstanceFilter filter;
  if (asked) {
    filter.worker_id = self;
  } else {
    filter.distributed_worker_id = self;
  }
  return ListResponse(c.s.store.ListModelInstances(o, filter), o);
}

// GET /v2/worker/models/{id}: a model that has an instance on this worker, with the definition
// of its backend ("backend_definition") unless that is a built-in version.
Result<Response> GetOwnModel(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t self, SelfWorker(c));
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  store::ListOptions o;
  o.per_page = store::ListOptions::kMaxPerPage;
  store::ModelInstanceFilter filter;
  filter.model_id = id;
  filter.worker_id = self;
  ASSIGN_OR_RETURN(auto list, c.s.store.ListModelInstances(o, filter));
  if (list.items.empty()) return NotFoundError(fmt::format("model {} not found", id));
  ASSIGN_OR_RETURN(types::Model model, c.s.store.GetModel(id));
  // A model that leaves gpu_sharing to its cluster is held as this worker's cluster says.
  if (!model.gpu_sharing) {
    ASSIGN_OR_RETURN(types::Worker worker, c.s.store.GetWorker(self));
    ASSIGN_OR_RETURN(types::Cluster cluster, c.s.store.GetCluster(worker.cluster_id));
    model.gpu_sharing = cluster.gpu_sharing;
  }
  json::object body = types::ToJson(model);
  // Workers know the built-in backends; anything else travels with the model.
  if (!model.backend.empty()) {
    const engines::Backend* built_in = engines::FindBuiltInBackend(model.backend);
    const std::string version = model.backend_version.empty() && built_in
                                    ? built_in->default_version
                                    : model.backend_version;
    if (built_in == nullptr || !built_in->versions.count(version)) {
      ASSIGN_OR_RETURN(engines::Backend backend, ResolveBackend(c.s.store, model.backend));
      body["backend_definition"] = engines::ToJson(backend);
    }
  }
  return ObjectResponse(body);
}

// PATCH /v2/worker/instances/{id} {"state","state_message","port","restart_count","engine_secret"}
// From the main worker: the instance's own fields, and the secret its engine requires (stored
// for the gateways, never answered: docs/adr/0035-engine-secrets.md). From a subordinate worker:
// the same fields of its distributed_servers entry (with its address as the server knows it),
// nothing else.
Result<Response> ReportInstance(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t self, SelfWorker(c));
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  json::object storage;
  JsonReader r = c.Body(storage);
  std::optional<std::string> state_name = r.OptionalString("state");
  std::optional<std::string> message = r.OptionalString("state_message");
  std::optional<int64_t> port = r.OptionalInt("port");
  std::optional<int64_t> restart_count = r.OptionalInt("restart_count");
  std::optional<std::string> engine_secret = r.OptionalString("engine_secret");
  RETURN_IF_ERROR(r.Finish());
  // Never quoted in an error: a bad secret is still a secret.
  if (engine_secret && !engine_secret->empty() &&
      (engine_secret->size() < 16 || engine_secret->size() > 256 ||
       !std::all_of(engine_secret->begin(), engine_secret->end(),
                    [](char ch) { return ch > 0x20 && ch < 0x7f; }))) {
    return InvalidArgumentError(
        "engine_secret must be empty or 16-256 printable ASCII characters without spaces");
  }
  ASSIGN_OR_RETURN(types::ModelInstance inst, c.s.store.GetModelInstance(id));
  if (!AssignedTo(inst, self)) {
    return NotFoundError(fmt::format("model instance {} not found on this worker", id));
  }
  std::optional<types::InstanceState> state;
  if (state_name) {
    state = types::ParseInstanceState(*state_name);
    if (!state || !types::IsWorkerReportedState(*state)) {
      return InvalidArgumentError("state must be one of DOWNLOADING, STARTING, RUNNING, ERROR");
    }
  }
  if (message && message->size() > 4096) message->resize(4096);
  if (port && (*port < 0 || *port > 65535)) return InvalidArgumentError("port must be 0-65535");
  if (restart_count && *restart_count < 0) {
    return InvalidArgumentError("restart_count must be >= 0");
  }
  store::ModelInstancePatch patch;
  // Never resurrect an instance the server has since moved on (rescheduled, stopping).
  const std::vector<types::InstanceState> live = {
      types::InstanceState::kScheduled, types::InstanceState::kDownloading,
      types::InstanceState::kStarting, types::InstanceState::kRunning,
      types::InstanceState::kError};
  if (inst.worker_id != self) {
    // A subordinate reports on its own distributed server (rpc-server): only its entry changes,
    // never the instance's own state, which belongs to the main worker.
    if (state == types::InstanceState::kDownloading) {
      return InvalidArgumentError("a distributed server's state is STARTING, RUNNING or ERROR");
    }
    if (engine_secret) {
      return InvalidArgumentError("engine_secret is reported by the instance's main worker");
    }
    auto entry =
        std::find_if(inst.distributed_servers.begin(), inst.distributed_servers.end(),
                     [&](const types::DistributedServer& d) { return d.worker_id == self; });
    types::DistributedServer report = *entry;
    ASSIGN_OR_RETURN(types::Worker worker, c.s.store.GetWorker(self));
    report.address = worker.address;
    if (state) report.state = std::string(types::InstanceStateName(*state));
    if (message) report.state_message = *message;
    if (port) report.port = static_cast<int>(*port);
    if (restart_count) report.restart_count = static_cast<int>(*restart_count);
    patch.distributed_server_status = std::move(report);
    patch.if_state_in = live;
    return RowResponse(c.s.store.UpdateModelInstance(id, patch));
  }
  if (state) {
    patch.state = *state;
    patch.if_state_in = live;
  }
  if (message) patch.state_message = *message;
  if (port) patch.port = static_cast<int>(*port);
  if (engine_secret && *engine_secret != inst.engine_secret) patch.engine_secret = *engine_secret;
  if (restart_count) {
    if (*restart_count != inst.restart_count) {
      patch.restart_count = static_cast<int>(*restart_count);
      patch.last_restart_at = c.s.clock.Now();
    }
  }
  return RowResponse(c.s.store.UpdateModelInstance(id, patch));
}

}  // namespace

std::vector<Route> WorkerRoutes() {
  using A = Access;
  return {
      {verb::get, "/v2/worker/instances", A::kGlobal, Resource::kWorkerSelf, Action::kRead,
       ListOwnInstances, "model-instances"},
      {verb::get, "/v2/worker/models/{id}", A::kGlobal, Resource::kWorkerSelf, Action::kRead,
       GetOwnModel, ""},
      {verb::patch, "/v2/worker/instances/{id}", A::kGlobal, Resource::kWorkerSelf, Action::kUpdate,
       ReportInstance, ""},
  };
}

}  // namespace segma::api
