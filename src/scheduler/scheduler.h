#pragma once

// Placement of one model instance: pure (no I/O, no clock), deterministic, and the same code path
// for real placement and for the dry run of POST /v2/model-evaluations. See docs/scheduler.md.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "scheduler/cluster_snapshot.h"
#include "scheduler/resource_estimator.h"
#include "scheduler/scorer.h"
#include "types/engine_choice.h"
#include "types/model.h"

namespace segma::scheduler {

// A project's limits; absent = unlimited.
struct ProjectQuota {
  std::optional<double> max_gpus;      // GPU-equivalents: x bytes on a GPU of T count x / T
  std::optional<double> max_vram_gib;  // sum of VRAM claims
  std::optional<int> max_instances;
};

// A project's limits and what its placed instances already use.
struct QuotaUsage {
  ProjectQuota quota;
  double gpus = 0;
  int64_t vram_bytes = 0;
  int instances = 0;
};

struct WorkerPlacement {
  int64_t worker_id = 0;
  std::string worker_name;
  std::vector<int> gpu_indexes;
  std::map<int, int64_t> vram;  // GPU index → claimed bytes
  int64_t ram = 0;
};

struct Placement {
  PlacementKind kind = PlacementKind::kSingleGpu;
  int64_t worker_id = 0;
  std::string worker_name;
  std::vector<int> gpu_indexes;  // ascending; empty for CPU only
  std::map<int, int64_t> vram;   // GPU index → claimed bytes
  int64_t ram = 0;
  int offload_layers = 0;  // layers on the GPU (partial offload); total_layers when all are
  int total_layers = 0;
  int tensor_parallel_size = 0;  // GPUs over all workers; 0 for CPU only
  std::vector<WorkerPlacement> subordinates;
  double score = 0;
  // Launch inputs the engine's command needs (types::ResourceClaim's fields of the same names);
  // the scheduler leaves them 0 and the caller that holds the estimate fills them
  // (controllers::DecideForModel).
  int64_t kv_cache_bytes = 0;
  int64_t weight_bytes_per_gpu = 0;
  // What the claim serves (docs/scheduler.md "Concurrency"): sequences of context_length tokens
  // whose KV cache fits in it (for engines that take a fraction of the GPU, what that fraction
  // holds). 0 when the estimator does not model concurrency. target_sequences is what the
  // deployment asked for (its max_concurrent_sequences or the default target).
  int sequences = 0;
  int64_t context_length = 0;
  int target_sequences = 0;
  // The model's gpu_compute_percent on each GPU of the placement (subordinates' too); 0 = none or
  // CPU only.
  int compute_percent = 0;
};

struct Decision {
  bool placed = false;
  Placement placement;  // meaningful when placed
  // worker name → why it was not used; filled when not placed (every worker that was rejected).
  std::map<std::string, std::string> reasons;
  // Filter → how many workers it rejected, when not placed; filters: "cluster", "gpu_type",
  // "labels", "worker_state", "backend", "vram", "compute", "ram", "quota" (for metrics).
  std::map<std::string, int> rejections;
  // One line: "placed on w1 GPU 0 (single_gpu, 21.5 GiB)" or "0/5 workers fit: 3 lacked VRAM
  // (need 40.2 GiB, best has 20.1 GiB free), 2 NOT_READY".
  std::string summary;
  // Placed, but not as asked: "serves 4 sequences of 8192 tokens, below the minimum of 8".
  std::vector<std::string> warnings;
};

struct SchedulerOptions {
  int64_t gpu_headroom_bytes = 256 * kMiB;  // kept free on every GPU
  int64_t ram_headroom_bytes = 1 * kGiB;    // kept free on every worker
  // Scoring a sample on big clusters (kube-scheduler's percentageOfNodesToScore): single-GPU
  // placement stops looking once this many workers with a fitting GPU were found...
  int min_feasible_workers = 100;
  // ...or this percentage of all workers, whichever is larger. 0 = adaptive like kube:
  // max(5, 50 - workers / 125) %; 100 = always score every worker.
  int percentage_of_workers_to_score = 0;
  int max_tensor_parallel = 16;   // on one worker
  int max_distributed_gpus = 64;  // over several workers
  // A placement whose claim serves fewer sequences than this gets a warning.
  int min_useful_sequences = 8;
};

// Reusable decision engine: holds options, scorer chains and scratch buffers so that a decision
// allocates nothing proportional to the cluster. Not thread-safe (one per thread, or serialise).
class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options = {});
  ~Scheduler();
  Scheduler(Scheduler&&) noexcept;
  Scheduler& operator=(Scheduler&&) noexcept;

  // Replaces the scorer chain used for models with `strategy`.
  void SetScorers(types::PlacementStrategy strategy, ScorerChain chain);

  // Decides where one new instance of `model` goes. Filters in order: cluster, GPU matching
  // (gpu_type, gpu_selector.gpu_ids), labels, status (READY only), backend framework, resource
  // fit (VRAM; with the model's gpu_compute_percent p, only GPUs whose claimed shares leave p:
  // ClusterSnapshot::unit_compute + p <= 100). Candidates, first kind that fits: one GPU, several
  // GPUs of one worker, several workers (distributed_inference_across_workers), partial CPU
  // offload (cpu_offloading), CPU only (cpu_offloading). Quotas reject candidates that would
  // exceed them. Deterministic.
  // `engine` is the backend chosen for the model (types::ChooseEngine): its profile decides which
  // GPUs (vendor, compute capability) and CPUs qualify, whether it reads the model's format (if
  // not, every worker gets that reason), whether partial offload is offered and whether several
  // workers may be combined (only versions with a distributed command). nullptr: any hardware,
  // any format, partial offload and several workers allowed.
  // The GPU kinds are tried with the estimator's sequences() first; when the model leaves
  // max_concurrent_sequences unset and nothing fits, again with half as many, down to one.
  // Candidates are ranked by the replica-spread preference first, then by the strategy's scorer
  // chain.
  Decision Decide(const ClusterSnapshot& snapshot, const types::Model& model,
                  const ResourceEstimator& estimator, const QuotaUsage& quota,
                  const types::EngineChoice* engine = nullptr);

  // Per-decision buffers, reused; defined in scheduler.cc.
  struct Scratch;

 private:
  SchedulerOptions options_;
  ScorerChain chains_[3];  // by types::PlacementStrategy
  std::unique_ptr<Scratch> scratch_;
};

// One-shot convenience with default options (allocates its scratch; prefer a Scheduler).
Decision Decide(const ClusterSnapshot& snapshot, const types::Model& model,
                const ResourceEstimator& estimator, const QuotaUsage& quota,
                const types::EngineChoice* engine = nullptr);

// GPU-equivalents (Σ claim / GPU total) of a placement on `snapshot`.
double GpuEquivalents(const Placement& p, const ClusterSnapshot& snapshot);

// Writes the placement into an instance (worker, GPU indexes, claim, distributed servers).
void ApplyToInstance(const Placement& p, types::ModelInstance& instance);

// The claims of a placement, one per worker, for ClusterSnapshot::AddInstance.
std::vector<PlacedInstance> ToPlacedInstances(const Placement& p, int64_t instance_id,
                                              int64_t model_id);

// "40.2 GiB"
std::string FormatGiB(int64_t bytes);

}  // namespace segma::scheduler
