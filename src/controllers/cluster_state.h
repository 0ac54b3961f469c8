#pragma once

// What the scheduling controllers and the dry run (POST /v2/model-evaluations) read from the
// store before deciding: every worker, every instance, the scheduler's ClusterSnapshot built from
// them, and each project's quota usage. One function builds it so that real placement and the
// dry run see the cluster the same way.

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "common/status.h"
#include "scheduler/cluster_snapshot.h"
#include "scheduler/estimate/estimator.h"
#include "scheduler/scheduler.h"
#include "store/store.h"
#include "types/engine_choice.h"

namespace segma::controllers {

// Every row of a list, all pages.
// kWithoutStatus: the workers' statuses (every GPU with its readings: most of what a worker row
// holds) are not read; for passes that need names and states only.
enum class WorkerFields { kWithStatus, kWithoutStatus };
Result<std::vector<types::Worker>> ListAllWorkers(store::Store& store,
                                                  WorkerFields fields = WorkerFields::kWithStatus);
Result<std::vector<types::Model>> ListAllModels(store::Store& store);
Result<std::vector<types::ModelInstance>> ListAllInstances(
    store::Store& store, const store::ModelInstanceFilter& filter = {});

// Whether `i` holds its claims (placed and not waiting to be placed again).
bool HoldsClaims(const types::ModelInstance& i);

struct ClusterState {
  std::vector<types::Worker> workers;
  std::vector<types::ModelInstance> instances;  // id order
  // Every worker (the status filter explains why non-READY ones are skipped) with the GPUs of its
  // last heartbeat, and the claims of every instance that holds some.
  scheduler::ClusterSnapshot snapshot;
};

// Reads workers and instances and builds the snapshot. Claims that no longer match a reported
// GPU (a worker that lost a GPU) are logged and left out. kUnavailable from the store.
Result<ClusterState> LoadClusterState(store::Store& store);

// GPU-equivalents (Σ claim / GPU total) of an instance's claims on `snapshot`.
double InstanceGpuEquivalents(const types::ModelInstance& i,
                              const scheduler::ClusterSnapshot& snapshot);
// Adds the usage of `i` (GPU-equivalents, VRAM, one instance) to `usage`.
void AddUsage(const types::ModelInstance& i, const scheduler::ClusterSnapshot& snapshot,
              scheduler::QuotaUsage& usage);

// Project `project_id`'s quota (from types::Project) and what its instances in `state` use.
// kNotFound if the project is gone.
Result<scheduler::QuotaUsage> LoadQuotaUsage(store::Store& store, int64_t project_id,
                                             const ClusterState& state);

// The decision for one new instance of `model` on `state`: chooses its engine
// (types::ChooseEngine over `catalog`, with the format FormatOnServer sees), estimates
// (EstimatorForModel), then Scheduler::Decide with that engine; a placement gets its launch
// inputs (SetLaunchInputs). When no engine can be chosen or the model cannot be estimated, the
// decision is "not placed" with that error as summary and no per-worker reasons. `engine`, when
// not null, receives the choice (unset when there is none). Used by the scheduler controller and
// by the dry run: the same code path.
scheduler::Decision DecideForModel(scheduler::Scheduler& scheduler, const ClusterState& state,
                                   const types::Model& model, const scheduler::QuotaUsage& usage,
                                   const types::BackendCatalog& catalog,
                                   std::optional<types::EngineChoice>* engine = nullptr);

// Fills the placement's launch inputs from the estimate it was decided with:
// weight_bytes_per_gpu = weights / GPUs (the layers on the GPU for a partial offload, 0 on CPU
// only) and kv_cache_bytes = the estimate's KV cache plus, for engines that fill a fixed share
// of each GPU (vLLM, SGLang), what their claims hold beyond the need: that share goes to KV cache.
void SetLaunchInputs(const estimate::ResourceEstimate& est, scheduler::Placement& placement);

// The claim an instance placed by `p` would hold (as ApplyToInstance writes it).
types::ResourceClaim ClaimOf(const scheduler::Placement& p);

}  // namespace segma::controllers
