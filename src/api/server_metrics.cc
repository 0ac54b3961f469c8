#include "api/server_metrics.h"

#include <chrono>

#include <prometheus/gauge.h>

#include "controllers/cluster_state.h"
#include "metrics/exposition.h"

namespace segma::api {

namespace {

constexpr types::WorkerState kWorkerStates[] = {
    types::WorkerState::kRegistering, types::WorkerState::kReady, types::WorkerState::kNotReady,
    types::WorkerState::kUnreachable, types::WorkerState::kMaintenance};
constexpr types::InstanceState kInstanceStates[] = {
    types::InstanceState::kPending,       types::InstanceState::kScheduled,
    types::InstanceState::kDownloading,   types::InstanceState::kStarting,
    types::InstanceState::kRunning,       types::InstanceState::kError,
    types::InstanceState::kUnschedulable, types::InstanceState::kStopping};

}  // namespace

ServerMetrics::ServerMetrics(metrics::Registry& registry) {
  auto& r = registry.prometheus();
  pass_seconds_ = &prometheus::BuildHistogram()
                       .Name("segma_controller_pass_duration_seconds")
                       .Help(
                           "Duration of one pass of the controllers (liveness, rescheduling, "
                           "replica sync, placement)")
                       .Register(r)
                       .Add({}, metrics::LatencyBuckets());
  auto& decisions = prometheus::BuildCounter()
                        .Name("segma_scheduler_decisions_total")
                        .Help("Placement decisions for pending instances, by outcome")
                        .Register(r);
  placed_ = &decisions.Add({{"outcome", "placed"}});
  unschedulable_ = &decisions.Add({{"outcome", "unschedulable"}});
  rejections_ = &prometheus::BuildCounter()
                     .Name("segma_scheduler_rejections_total")
                     .Help(
                         "Workers rejected by a scheduling filter in decisions that placed "
                         "nothing, by filter")
                     .Register(r);
  store_queries_ = &prometheus::BuildHistogram()
                        .Name("segma_store_query_duration_seconds")
                        .Help(
                            "Latency of the store's list queries the server runs for its "
                            "controllers and metrics, by query")
                        .Register(r);
  for (const char* filter : {"worker_state", "vram", "gpu_type", "labels", "quota"}) {
    rejection_counters_[filter] = &rejections_->Add({{"filter", filter}});
  }
  registry.AddCollector([this](std::string& out) { Render(out); });
}

void ServerMetrics::ObservePass(double seconds,
                                const controllers::InstanceScheduler::PassResult& pass) {
  pass_seconds_->Observe(seconds);
  placed_->Increment(pass.placed);
  unschedulable_->Increment(pass.unschedulable);
  std::lock_guard lock(mu_);
  for (const auto& [filter, n] : pass.rejections) {
    prometheus::Counter*& c = rejection_counters_[filter];
    if (c == nullptr) c = &rejections_->Add({{"filter", filter}});
    c->Increment(n);
  }
}

prometheus::Histogram& ServerMetrics::QueryHistogram(const std::string& query) {
  std::lock_guard lock(mu_);
  prometheus::Histogram*& h = query_histograms_[query];
  if (h == nullptr) h = &store_queries_->Add({{"query", query}}, metrics::LatencyBuckets());
  return *h;
}

Status ServerMetrics::Refresh(store::Store& store) {
  const auto timed = [this](const std::string& query, auto list) {
    const auto start = std::chrono::steady_clock::now();
    auto result = list();
    QueryHistogram(query).Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return result;
  };
  ASSIGN_OR_RETURN(std::vector<types::Worker> workers,
                   timed("list_workers", [&] {
                     return controllers::ListAllWorkers(store,
                                                        controllers::WorkerFields::kWithoutStatus);
                   }));
  ASSIGN_OR_RETURN(std::vector<types::ModelInstance> instances,
                   timed("list_instances", [&] { return controllers::ListAllInstances(store); }));
  ASSIGN_OR_RETURN(std::vector<types::Model> models,
                   timed("list_models", [&] { return controllers::ListAllModels(store); }));

  std::string out;
  metrics::TextWriter w(out);
  std::map<types::WorkerState, int> worker_states;
  for (const types::Worker& wk : workers) ++worker_states[wk.state];
  w.Family("segma_workers", "gauge", "Workers by state");
  for (types::WorkerState s : kWorkerStates) {
    w.Sample("segma_workers", {{"state", std::string(types::WorkerStateName(s))}},
             worker_states[s]);
  }
  w.Family("segma_worker_ready", "gauge",
           "1 while the worker is READY, else 0 (NOT_READY, UNREACHABLE, ...), by worker");
  for (const types::Worker& wk : workers) {
    w.Sample("segma_worker_ready",
             {{"worker", wk.name},
              {"state", std::string(types::WorkerStateName(wk.state))},
              {"maintenance", wk.maintenance ? "true" : "false"}},
             wk.state == types::WorkerState::kReady ? 1 : 0);
  }
  std::map<types::InstanceState, int> instance_states;
  std::map<int64_t, int> running;  // model id → RUNNING instances
  for (const types::ModelInstance& i : instances) {
    ++instance_states[i.state];
    if (i.state == types::InstanceState::kRunning) ++running[i.model_id];
  }
  w.Family("segma_instances", "gauge", "Model instances by state");
  for (types::InstanceState s : kInstanceStates) {
    w.Sample("segma_instances", {{"state", std::string(types::InstanceStateName(s))}},
             instance_states[s]);
  }
  w.Family("segma_deployment_replicas_desired", "gauge", "Replicas a deployment (model) asks for");
  for (const types::Model& m : models) {
    w.Sample("segma_deployment_replicas_desired",
             {{"deployment", m.name}, {"project", std::to_string(m.project_id)}}, m.replicas);
  }
  w.Family("segma_deployment_replicas_ready", "gauge", "A deployment's RUNNING instances");
  for (const types::Model& m : models) {
    w.Sample("segma_deployment_replicas_ready",
             {{"deployment", m.name}, {"project", std::to_string(m.project_id)}}, running[m.id]);
  }
  std::lock_guard lock(mu_);
  snapshot_ = std::move(out);
  return OkStatus();
}

void ServerMetrics::Render(std::string& out) const {
  {
    std::lock_guard lock(mu_);
    out += snapshot_;
  }
  metrics::TextWriter w(out);
  w.Family("segma_watch_streams", "gauge", "Watch streams (?watch=true) open now");
  w.Sample("segma_watch_streams", {}, static_cast<double>(watches_.load()));
}

}  // namespace segma::api
