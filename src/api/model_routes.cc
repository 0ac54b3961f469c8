// /v2/models (deployments), /v2/model-instances and /v2/model-evaluations (dry-run placement).
// Project-scoped: every handler authorizes against the project of the row it acts on.

#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "api/api.h"
#include "controllers/cluster_state.h"
#include "controllers/estimate_adapter.h"
#include "http/client.h"
#include "scheduler/serving_prediction.h"

namespace segma::api {

namespace {

using auth::Action;
using auth::Resource;
using http::Response;
using http::bhttp::status;
using http::bhttp::verb;

constexpr int64_t kMaxLogTail = 100'000;

// A GGUF file the server can read must parse: a corrupt one is refused at once rather than left
// to fail on a worker. A path the server cannot see may still exist on the workers: not checked.
Status CheckModelFiles(const types::Model& m, const types::EngineChoice& engine) {
  const types::ModelSource& src = m.source;
  std::error_code ec;
  if (src.type != types::SourceType::kLocalPath || engine.format != types::ModelFormat::kGguf ||
      !std::filesystem::is_regular_file(src.path, ec)) {
    return OkStatus();
  }
  Result<std::unique_ptr<controllers::EstimateAdapter>> est =
      controllers::EstimatorForModel(m, engine);
  if (est.ok()) return OkStatus();
  return InvalidArgumentError(fmt::format("source.path {} is not a usable GGUF file: {}", src.path,
                                          est.status().message()));
}

// Parses a POST body into a model of an existing project the caller may write to.
Result<types::Model> ModelFromBody(ApiContext& c) {
  ASSIGN_OR_RETURN(types::Model m, ProjectRowFromBody(c, types::ModelFromJson));
  ASSIGN_OR_RETURN(types::EngineChoice engine, CheckModelBackend(c.s.store, m));
  RETURN_IF_ERROR(CheckModelFiles(m, engine));
  return m;
}

// ---- models -------------------------------------------------------------------------------------

Result<Response> ListModels(ApiContext& c) {
  return ProjectListResponse(c, &store::Store::ListModels);
}

Result<Response> CreateModel(ApiContext& c) {
  ASSIGN_OR_RETURN(types::Model m, ModelFromBody(c));
  RETURN_IF_ERROR(c.s.store.GetProject(m.project_id).status());
  return RowResponse(c.s.store.CreateModel(m), status::created);
}

Result<Response> GetModel(ApiContext& c) {
  return RowResponse(ProjectRowById(c, &store::Store::GetModel));
}

Result<Response> UpdateModel(ApiContext& c) {
  ASSIGN_OR_RETURN(types::Model current, ProjectRowById(c, &store::Store::GetModel));
  ASSIGN_OR_RETURN(types::Model patched, PatchedFromBody(c, current, types::PatchModelFromJson));
  // The engine is checked whole on every patch: a new source, backend or
  // distributed_inference_across_workers can each make it unfit.
  ASSIGN_OR_RETURN(types::EngineChoice engine, CheckModelBackend(c.s.store, patched));
  if (!(patched.source == current.source)) RETURN_IF_ERROR(CheckModelFiles(patched, engine));
  return RowResponse(c.s.store.UpdateModel(patched));
}

Result<Response> DeleteModel(ApiContext& c) {
  ASSIGN_OR_RETURN(types::Model m, ProjectRowById(c, &store::Store::GetModel));
  return NoContentResponse(c.s.store.DeleteModel(m.id));
}

// ---- model instances ----------------------------------------------------------------------------

Result<Response> ListInstances(ApiContext& c) {
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  ASSIGN_OR_RETURN(o.project_id, QueryInt(c.http, "project_id"));
  store::ModelInstanceFilter f;
  ASSIGN_OR_RETURN(f.model_id, QueryInt(c.http, "model_id"));
  ASSIGN_OR_RETURN(f.worker_id, QueryInt(c.http, "worker_id"));
  if (std::optional<std::string> state = c.http.Query("state")) {
    f.state = types::ParseInstanceState(*state);
    if (!f.state) return InvalidArgumentError(fmt::format("state '{}' is unknown", *state));
  }
  if (f.model_id && !o.project_id) {
    // A model's instances are its project's: authorize there (and 404 for a missing model).
    ASSIGN_OR_RETURN(types::Model m, c.s.store.GetModel(*f.model_id));
    o.project_id = m.project_id;
  }
  ASSIGN_OR_RETURN(bool any, ScopeToReadableProjects(c, o));
  if (!any) return ListJson(json::array(), 0, o);
  return ListResponse(c.s.store.ListModelInstances(o, f), o);
}

Result<Response> GetInstance(ApiContext& c) {
  return RowResponse(ProjectRowById(c, &store::Store::GetModelInstance));
}

// GET /v2/model-instances/{id}/logs?tail=N&follow=true: the engine's log, read from the worker's
// own HTTP port with the worker's proxy token. The first read happens here, so that a worker that
// cannot be reached is a 503 before any byte is sent; with follow, the stream then continues
// from where that read ended until the client leaves or the worker ends it (instance gone).
Result<Response> InstanceLogs(ApiContext& c) {
  ASSIGN_OR_RETURN(types::ModelInstance i, ProjectRowById(c, &store::Store::GetModelInstance));
  ASSIGN_OR_RETURN(std::optional<int64_t> tail, QueryInt(c.http, "tail"));
  if (tail && (*tail < 0 || *tail > kMaxLogTail)) {
    return InvalidArgumentError(fmt::format("tail must be 0-{}", kMaxLogTail));
  }
  const std::string follow_param = c.http.Query("follow").value_or("false");
  if (follow_param != "true" && follow_param != "false") {
    return InvalidArgumentError("follow must be true or false");
  }
  const bool follow = follow_param == "true";
  if (i.worker_id == 0) {
    return FailedPreconditionError(
        fmt::format("model instance {} is not placed on a worker: it has no log yet", i.id));
  }
  ASSIGN_OR_RETURN(types::Worker w, c.s.store.GetWorker(i.worker_id));
  const std::string base = fmt::format("http://{}:{}/v2/instance-logs/{}", w.address, w.port, i.id);
  const std::string token = WorkerProxyToken(c.s.options.worker_proxy_key, w.token_hash);
  http::ClientRequest req;
  req.url = fmt::format("{}?tail={}", base, tail.value_or(100));
  req.Bearer(token);
  req.timeout = std::chrono::seconds(10);
  Result<http::ClientResponse> first = http::FetchSync(std::move(req));
  if (!first.ok()) {
    return UnavailableError(fmt::format("worker '{}' at {}:{} cannot be reached: {}", w.name,
                                        w.address, w.port, first.status().message()));
  }
  if (first->status == 404) {
    return NotFoundError(fmt::format("worker '{}' has no log for model instance {}", w.name, i.id));
  }
  if (first->status != 200) {
    return UnavailableError(fmt::format("worker '{}' answered HTTP {}: {}", w.name, first->status,
                                        first->body.substr(0, 200)));
  }
  if (!follow) return Response::Text(status::ok, std::move(first->body));
  const std::string from = first->Header("x-segma-log-offset");
  return Response::Stream(
      "text/plain; charset=utf-8",
      [body = std::move(first->body), url = fmt::format("{}?follow=true&from={}", base, from),
       token](http::ResponseStream& out) -> boost::asio::awaitable<void> {
        if (!body.empty() && !co_await out.Write(body)) co_return;
        http::HttpClient client(co_await boost::asio::this_coro::executor);
        http::ClientRequest follow_req;
        follow_req.url = url;
        follow_req.Bearer(token);
        follow_req.timeout = std::chrono::hours(24);  // a quiet engine writes nothing for long
        Result<std::unique_ptr<http::ClientStream>> upstream =
            co_await client.OpenStream(std::move(follow_req));
        if (!upstream.ok() || (*upstream)->response().status != 200) co_return;
        while (!out.stopping()) {
          Result<std::string_view> piece = co_await (*upstream)->Next();
          if (!piece.ok() || piece->empty()) break;
          if (!co_await out.Write(*piece)) {
            (*upstream)->Cancel();  // the client left: stop following on the worker too
            break;
          }
        }
      });
}

// Replica sync creates a replacement, placed afresh.
Result<Response> DeleteInstance(ApiContext& c) {
  ASSIGN_OR_RETURN(types::ModelInstance i, ProjectRowById(c, &store::Store::GetModelInstance));
  return NoContentResponse(c.s.store.DeleteModelInstance(i.id));
}

// ---- evaluations (dry run) ----------------------------------------------------------------------

json::object PlacementJson(const scheduler::Placement& p) {
  json::object vram;
  for (const auto& [index, bytes] : p.vram) vram[std::to_string(index)] = bytes;
  json::array gpus;
  for (int g : p.gpu_indexes) gpus.emplace_back(g);
  json::array subs;
  for (const auto& s : p.subordinates) {
    json::array sg;
    for (int g : s.gpu_indexes) sg.emplace_back(g);
    json::object sv;
    for (const auto& [index, bytes] : s.vram) sv[std::to_string(index)] = bytes;
    subs.emplace_back(json::object{{"worker_id", s.worker_id},
                                   {"worker_name", s.worker_name},
                                   {"gpu_indexes", std::move(sg)},
                                   {"vram", std::move(sv)},
                                   {"ram", s.ram}});
  }
  return json::object{{"kind", scheduler::PlacementKindName(p.kind)},
                      {"worker_id", p.worker_id},
                      {"worker_name", p.worker_name},
                      {"gpu_indexes", std::move(gpus)},
                      {"vram", std::move(vram)},
                      {"ram", p.ram},
                      {"offload_layers", p.offload_layers},
                      {"total_layers", p.total_layers},
                      {"tensor_parallel_size", p.tensor_parallel_size},
                      {"subordinates", std::move(subs)}};
}

// What the claim allows: {sequences, context_length, target_sequences}; null members when the
// estimate does not model concurrency.
json::object ServesJson(const scheduler::Placement& p) {
  if (p.target_sequences <= 0) {
    return json::object{
        {"sequences", nullptr}, {"context_length", nullptr}, {"target_sequences", nullptr}};
  }
  return json::object{{"sequences", p.sequences},
                      {"context_length", p.context_length},
                      {"target_sequences", p.target_sequences}};
}

// What one replica placed as `d` is expected to serve (scheduler::PredictServing), or why segma
// cannot say (no measurements for the engine, GPU or placement); the contract's targets it
// misses are added to `warnings`.
json::object PerformanceJson(const controllers::ClusterState& state, const types::Model& m,
                             const types::EngineChoice& engine, const scheduler::Decision& d,
                             json::array& warnings) {
  scheduler::ServingQuery q;
  q.backend = engine.backend;
  q.kind = d.placement.kind;
  q.sequences = d.placement.sequences;
  const int w = state.snapshot.FindWorker(d.placement.worker_id);
  if (w >= 0 && !d.placement.gpu_indexes.empty()) {
    for (int u = state.snapshot.units_begin(w); u < state.snapshot.units_end(w); ++u) {
      if (state.snapshot.unit_gpu_index(u) == d.placement.gpu_indexes.front()) {
        q.gpu_name = state.snapshot.unit_device(u).name;
      }
    }
  }
  if (auto estimator = controllers::EstimatorForModel(m, engine); estimator.ok()) {
    q.parameter_count = (*estimator)->resource_estimate().parameter_count;
  }
  const scheduler::ServingPrediction p = scheduler::PredictServing(q);
  if (!p.available) {
    return json::object{{"available", false}, {"reason", p.reason}};
  }
  const std::vector<std::string> missed = scheduler::ContractWarnings(p);
  for (const std::string& w : missed) warnings.emplace_back(w);
  return json::object{
      {"available", true},
      {"basis", p.basis},
      {"extrapolated", p.extrapolated},
      {"gpu", q.gpu_name},
      {"sequences", p.sequences},
      {"tokens_per_second_per_user", std::round(p.tokens_per_second_per_user * 10) / 10},
      {"ttft_ms", std::round(p.ttft_ms)},
      {"total_tokens_per_second", std::round(p.total_tokens_per_second)},
      {"single_user_tokens_per_second", std::round(p.single_user_tokens_per_second * 10) / 10},
      {"single_user_ttft_ms", std::round(p.single_user_ttft_ms)},
      {"meets_targets", missed.empty()}};
}

// Same body as POST /v2/models; nothing is stored. The decision comes from
// controllers::DecideForModel on the current cluster, exactly as the scheduler controller would
// decide for the model's next instance.
Result<Response> EvaluateModel(ApiContext& c) {
  ASSIGN_OR_RETURN(types::Model m, ModelFromBody(c));
  ASSIGN_OR_RETURN(controllers::ClusterState state, controllers::LoadClusterState(c.s.store));
  ASSIGN_OR_RETURN(scheduler::QuotaUsage usage,
                   controllers::LoadQuotaUsage(c.s.store, m.project_id, state));
  scheduler::SchedulerOptions options;
  options.min_useful_sequences = c.s.options.min_useful_sequences;
  scheduler::Scheduler scheduler(options);
  std::optional<types::EngineChoice> engine;
  scheduler::Decision d = controllers::DecideForModel(scheduler, state, m, usage,
                                                      StoreBackendCatalog(c.s.store), &engine);
  json::object reasons;
  for (const auto& [worker, why] : d.reasons) reasons[worker] = why;
  json::object body{{"fits", d.placed}, {"summary", d.summary}, {"reasons", std::move(reasons)}};
  if (engine) {
    body["engine"] = json::object{{"backend", engine->backend},
                                  {"backend_version", engine->version},
                                  {"format", std::string(types::ModelFormatName(engine->format))},
                                  {"automatic", engine->automatic},
                                  {"reason", engine->reason}};
  } else {
    body["engine"] = nullptr;
  }
  body["placement_strategy"] = types::PlacementStrategyName(m.placement_strategy);
  body["replica_spread"] = types::ReplicaSpreadName(m.replica_spread);
  json::array warnings;
  for (const std::string& w : d.warnings) warnings.emplace_back(w);
  if (d.placed) {
    body["placement"] = PlacementJson(d.placement);
    body["claim"] = types::ToJson(controllers::ClaimOf(d.placement));
    body["serves"] = ServesJson(d.placement);
    body["performance"] = PerformanceJson(state, m, *engine, d, warnings);
  } else {
    body["placement"] = nullptr;
    body["claim"] = nullptr;
    body["serves"] = nullptr;
    body["performance"] = nullptr;
  }
  body["warnings"] = std::move(warnings);
  return ObjectResponse(body);
}

}  // namespace

std::vector<Route> ModelRoutes() {
  using A = Access;
  return {
      {verb::get, "/v2/models", A::kProject, Resource::kModels, Action::kRead, ListModels,
       "models"},
      {verb::post, "/v2/models", A::kProject, Resource::kModels, Action::kCreate, CreateModel, ""},
      {verb::get, "/v2/models/{id}", A::kProject, Resource::kModels, Action::kRead, GetModel, ""},
      {verb::patch, "/v2/models/{id}", A::kProject, Resource::kModels, Action::kUpdate, UpdateModel,
       ""},
      {verb::delete_, "/v2/models/{id}", A::kProject, Resource::kModels, Action::kDelete,
       DeleteModel, ""},
      {verb::get, "/v2/model-instances", A::kProject, Resource::kModelInstances, Action::kRead,
       ListInstances, "model-instances"},
      {verb::get, "/v2/model-instances/{id}", A::kProject, Resource::kModelInstances, Action::kRead,
       GetInstance, ""},
      {verb::get, "/v2/model-instances/{id}/logs", A::kProject, Resource::kModelInstances,
       Action::kRead, InstanceLogs, ""},
      {verb::delete_, "/v2/model-instances/{id}", A::kProject, Resource::kModelInstances,
       Action::kDelete, DeleteInstance, ""},
      {verb::post, "/v2/model-evaluations", A::kProject, Resource::kModelEvaluations,
       Action::kCreate, EvaluateModel, ""},
  };
}

}  // namespace segma::api
