#include "controllers/cluster_state.h"

#include <algorithm>

#include "common/logging.h"
#include "controllers/estimate_adapter.h"

namespace segma::controllers {

namespace {

template <typename T, typename ListFn>
Result<std::vector<T>> ListAll(ListFn list) {
  store::ListOptions o;
  o.per_page = store::ListOptions::kMaxPerPage;
  std::vector<T> all;
  for (;;) {
    ASSIGN_OR_RETURN(store::ListResult<T> page, list(o));
    const bool last = page.items.size() < static_cast<size_t>(o.per_page);
    for (T& item : page.items) all.push_back(std::move(item));
    if (last || static_cast<int64_t>(all.size()) >= page.total) break;
    ++o.page;
  }
  return all;
}

}  // namespace

Result<std::vector<types::Worker>> ListAllWorkers(store::Store& store, WorkerFields fields) {
  return ListAll<types::Worker>([&](store::ListOptions o) {
    o.without_status = fields == WorkerFields::kWithoutStatus;
    return store.ListWorkers(o);
  });
}

Result<std::vector<types::Model>> ListAllModels(store::Store& store) {
  return ListAll<types::Model>([&](const store::ListOptions& o) { return store.ListModels(o); });
}

Result<std::vector<types::ModelInstance>> ListAllInstances(
    store::Store& store, const store::ModelInstanceFilter& filter) {
  return ListAll<types::ModelInstance>(
      [&](const store::ListOptions& o) { return store.ListModelInstances(o, filter); });
}

bool HoldsClaims(const types::ModelInstance& i) {
  return i.worker_id != 0 && i.state != types::InstanceState::kPending &&
         i.state != types::InstanceState::kUnschedulable;
}

Result<ClusterState> LoadClusterState(store::Store& store) {
  ClusterState state;
  ASSIGN_OR_RETURN(state.workers, ListAllWorkers(store));
  ASSIGN_OR_RETURN(state.instances, ListAllInstances(store));
  std::map<int64_t, int64_t> ram_claims;  // worker → Σ RAM claims
  for (const auto& i : state.instances) {
    if (!HoldsClaims(i)) continue;
    ram_claims[i.worker_id] += i.claim.ram;
    for (const auto& d : i.distributed_servers) ram_claims[d.worker_id] += d.claim.ram;
  }
  for (const types::Worker& w : state.workers) {
    scheduler::WorkerInfo info;
    info.id = w.id;
    info.name = w.name;
    info.cluster_id = w.cluster_id;
    info.state = w.state;
    info.labels = w.labels;
    if (!w.status.arch.empty()) info.arch = w.status.arch;
    info.cpu_count = w.status.cpu_count;
    info.ram_total = w.status.memory_total;
    // The host's used memory includes segma's own engines, whose claims are counted separately.
    info.ram_used_external = std::max<int64_t>(0, w.status.memory_used - ram_claims[w.id]);
    info.gpus = w.status.gpus;
    Status s = state.snapshot.AddWorker(std::move(info));
    if (!s.ok()) Logger("controllers")->warn("worker {} left out: {}", w.name, s.ToString());
  }
  for (const auto& i : state.instances) {
    if (!HoldsClaims(i)) continue;
    Status s = state.snapshot.AddInstance(i);
    if (!s.ok()) {
      Logger("controllers")->warn("claims of instance {} left out: {}", i.id, s.ToString());
    }
  }
  return state;
}

double InstanceGpuEquivalents(const types::ModelInstance& i,
                              const scheduler::ClusterSnapshot& snapshot) {
  double total = 0;
  auto add = [&](int64_t worker_id, const types::ResourceClaim& claim) {
    const int w = snapshot.FindWorker(worker_id);
    if (w < 0) return;
    for (const auto& [index, bytes] : claim.vram) {
      for (int u = snapshot.units_begin(w); u < snapshot.units_end(w); ++u) {
        if (snapshot.unit_gpu_index(u) == index && snapshot.unit_total(u) > 0) {
          total += static_cast<double>(bytes) / static_cast<double>(snapshot.unit_total(u));
        }
      }
    }
  };
  add(i.worker_id, i.claim);
  for (const auto& d : i.distributed_servers) add(d.worker_id, d.claim);
  return total;
}

void AddUsage(const types::ModelInstance& i, const scheduler::ClusterSnapshot& snapshot,
              scheduler::QuotaUsage& usage) {
  usage.gpus += InstanceGpuEquivalents(i, snapshot);
  for (const auto& [index, bytes] : i.claim.vram) usage.vram_bytes += bytes;
  for (const auto& d : i.distributed_servers) {
    for (const auto& [index, bytes] : d.claim.vram) usage.vram_bytes += bytes;
  }
  usage.instances += 1;
}

Result<scheduler::QuotaUsage> LoadQuotaUsage(store::Store& store, int64_t project_id,
                                             const ClusterState& state) {
  ASSIGN_OR_RETURN(types::Project project, store.GetProject(project_id));
  scheduler::QuotaUsage usage;
  usage.quota.max_gpus = project.max_gpus;
  usage.quota.max_vram_gib = project.max_vram_gib;
  if (project.max_instances) usage.quota.max_instances = static_cast<int>(*project.max_instances);
  for (const auto& i : state.instances) {
    if (i.project_id == project_id && HoldsClaims(i)) AddUsage(i, state.snapshot, usage);
  }
  return usage;
}

scheduler::Decision DecideForModel(scheduler::Scheduler& scheduler, const ClusterState& state,
                                   const types::Model& model, const scheduler::QuotaUsage& usage,
                                   const types::BackendCatalog& catalog,
                                   std::optional<types::EngineChoice>* engine) {
  scheduler::Decision d;
  Result<types::EngineChoice> choice = types::ChooseEngine(model, FormatOnServer(model), catalog);
  if (!choice.ok()) {
    d.summary = std::string(choice.status().message());
    return d;
  }
  if (engine != nullptr) *engine = *choice;
  Result<std::unique_ptr<EstimateAdapter>> estimator = EstimatorForModel(model, *choice);
  if (!estimator.ok()) {
    d.summary = std::string(estimator.status().message());
    return d;
  }
  d = scheduler.Decide(state.snapshot, model, **estimator, usage, &*choice);
  if (d.placed) SetLaunchInputs((*estimator)->resource_estimate(), d.placement);
  return d;
}

void SetLaunchInputs(const estimate::ResourceEstimate& est, scheduler::Placement& p) {
  auto bytes = [](uint64_t b) { return static_cast<int64_t>(b); };
  p.kv_cache_bytes = bytes(est.kv_cache_bytes);
  p.weight_bytes_per_gpu = 0;
  const int gpus = p.tensor_parallel_size;
  if (p.kind == scheduler::PlacementKind::kCpuOnly || gpus <= 0) return;
  if (p.kind == scheduler::PlacementKind::kPartialOffload) {
    p.weight_bytes_per_gpu = bytes(est.layer_weight_bytes) * p.offload_layers;
    return;
  }
  p.weight_bytes_per_gpu = bytes(est.weight_bytes) / gpus;
  if (est.gpu_memory_fraction > 0) {
    const int64_t need = bytes(est.vram_per_gpu(gpus));
    auto add = [&](const std::map<int, int64_t>& vram) {
      for (const auto& [index, claim] : vram)
        p.kv_cache_bytes += std::max<int64_t>(0, claim - need);
    };
    add(p.vram);
    for (const scheduler::WorkerPlacement& s : p.subordinates) add(s.vram);
  }
}

types::ResourceClaim ClaimOf(const scheduler::Placement& p) {
  types::ModelInstance tmp;
  scheduler::ApplyToInstance(p, tmp);
  return tmp.claim;
}

}  // namespace segma::controllers
