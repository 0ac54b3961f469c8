#pragma once

// Scoring of placement candidates: a chain of weighted scorers whose sum ranks candidates of the
// same kind. Higher is better; ties go to the lower worker id, then the lower GPU index.

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "scheduler/cluster_snapshot.h"
#include "types/model.h"

namespace segma::scheduler {

enum class PlacementKind { kSingleGpu, kMultiGpu, kMultiWorker, kPartialOffload, kCpuOnly };
std::string_view PlacementKindName(PlacementKind k);  // "single_gpu", "multi_gpu", ...

inline constexpr int kMaxGpusPerPlacement = 64;

// A possible placement, in snapshot positions (not ids).
struct Candidate {
  PlacementKind kind = PlacementKind::kSingleGpu;
  int worker = -1;  // the main worker
  int num_units = 0;
  std::array<int, kMaxGpusPerPlacement> units{};     // unit positions, possibly on several workers
  std::array<int64_t, kMaxGpusPerPlacement> vram{};  // claim on each unit, bytes
  int64_t ram = 0;                                   // on the main worker
  int gpu_layers = 0;
  int total_layers = 0;
  bool nvlink = false;  // more than one unit and every pair linked by NVLink
};

// What scorers may read besides the candidate. Valid for one decision.
class ScoreContext {
 public:
  ScoreContext(const ClusterSnapshot& snapshot, const types::Model& model,
               const std::vector<int>& model_on_worker, const std::vector<int>& model_on_unit,
               const std::vector<char>& has_files)
      : snapshot_(snapshot),
        model_(model),
        model_on_worker_(model_on_worker),
        model_on_unit_(model_on_unit),
        has_files_(has_files) {}

  const ClusterSnapshot& snapshot() const { return snapshot_; }
  const types::Model& model() const { return model_; }
  // Instances of the model being placed on worker w / unit u.
  int model_instances_on_worker(int w) const { return model_on_worker_[w]; }
  int model_instances_on_unit(int u) const { return model_on_unit_[u]; }
  // Whether worker w already holds the model's files.
  bool worker_has_files(int w) const { return has_files_[w] != 0; }

 private:
  const ClusterSnapshot& snapshot_;
  const types::Model& model_;
  const std::vector<int>& model_on_worker_;
  const std::vector<int>& model_on_unit_;
  const std::vector<char>& has_files_;
};

// Thread-safety: Score must be safe to call concurrently (scorers are stateless).
class Scorer {
 public:
  virtual ~Scorer() = default;
  // A score in [0, 100].
  virtual double Score(const Candidate& c, const ScoreContext& ctx) const = 0;
};

// Fullest GPU after placement: mean over the candidate's units of 100 × (used + claim) / total;
// CPU only: the same with the worker's RAM.
class BinpackScorer final : public Scorer {
 public:
  double Score(const Candidate& c, const ScoreContext& ctx) const override;
};

// Fewest instances of this model on the worker, then fewest of other models, then on the GPU,
// then the emptiest GPU: 100 × 1/(1 + mine_w) × (0.9 + 0.1/(1 + others_w)) ×
// (0.96 + 0.03/(1 + instances on the busiest unit) + 0.01 × free fraction after).
class SpreadScorer final : public Scorer {
 public:
  double Score(const Candidate& c, const ScoreContext& ctx) const override;
};

// Fragmentation gradient descent (Weng et al., USENIX ATC '23), on VRAM: a GPU's fragment is
// the free memory that a slice drawn from the snapshot's claim sizes (and the request being
// placed) could not use,
// F(free) = free × P(slice > free), with "larger" counted to the histogram's 0.54 %
// (ClusterSnapshot::slices_above). The score prefers the candidate that grows F least (or
// shrinks it most): 50 × (1 − ΔF / Σ totals) over the candidate's GPUs, so in [0, 100]. With no
// claims in the snapshot every ΔF is 0 and the binpack tie-break of the default chain decides.
// CPU only: 50. ADR 0026.
class FragmentationScorer final : public Scorer {
 public:
  double Score(const Candidate& c, const ScoreContext& ctx) const override;
  // F(free) of one GPU on `snapshot`, bytes, with `request` (the slice being placed) counted as
  // one more slice of the workload.
  static double Fragment(const ClusterSnapshot& snapshot, int64_t free, int64_t request);
};

// The replica-spread preference of model().replica_spread, ranked before any scorer chain
// (Scheduler adds kReplicaSpreadWeight × this to the chain's score, more than a chain can give):
//   worker: 100 when none of the candidate's workers holds an instance of the model, 50 when one
//           does but none of its GPUs, 0 when one of its GPUs does;
//   gpu:    100 unless one of the candidate's GPUs holds an instance of the model, then 0;
//   none:   100.
// CPU-only candidates: as "worker" counted on the worker.
double ReplicaSpreadScore(const Candidate& c, const ScoreContext& ctx);
inline constexpr double kReplicaSpreadWeight = 10;

// 100 × share of the candidate's workers that already hold the model files.
class LocalityScorer final : public Scorer {
 public:
  double Score(const Candidate& c, const ScoreContext& ctx) const override;
};

// 100 for a multi-GPU candidate whose GPUs are all NVLink-connected, else 0.
class TopologyScorer final : public Scorer {
 public:
  double Score(const Candidate& c, const ScoreContext& ctx) const override;
};

// A weighted sum of scorers. Move-only.
class ScorerChain {
 public:
  ScorerChain() = default;
  ScorerChain& Add(std::unique_ptr<Scorer> scorer, double weight);
  double Score(const Candidate& c, const ScoreContext& ctx) const;
  bool empty() const { return scorers_.empty(); }

  // The default chains: placement (binpack, spread or fragmentation, weight 1), locality (0.05,
  // i.e. up to +5) and topology (0.1, up to +10). Fragmentation adds binpack × 0.01 as its
  // tie-break (so that an empty snapshot packs).
  static ScorerChain Default(types::PlacementStrategy strategy);

 private:
  struct Entry {
    std::unique_ptr<Scorer> scorer;
    double weight;
  };
  std::vector<Entry> scorers_;
};

}  // namespace segma::scheduler
