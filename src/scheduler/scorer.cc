#include "scheduler/scorer.h"

#include <algorithm>

namespace segma::scheduler {

std::string_view PlacementKindName(PlacementKind k) {
  switch (k) {
    case PlacementKind::kSingleGpu:
      return "single_gpu";
    case PlacementKind::kMultiGpu:
      return "multi_gpu";
    case PlacementKind::kMultiWorker:
      return "multi_worker";
    case PlacementKind::kPartialOffload:
      return "partial_offload";
    case PlacementKind::kCpuOnly:
      return "cpu_only";
  }
  return "single_gpu";
}

double BinpackScorer::Score(const Candidate& c, const ScoreContext& ctx) const {
  const ClusterSnapshot& s = ctx.snapshot();
  if (c.num_units == 0) {
    const int64_t total = s.worker(c.worker).ram_total;
    if (total <= 0) return 0;
    const int64_t used = total - s.worker_ram_free(c.worker) + c.ram;
    return 100.0 * std::clamp(static_cast<double>(used) / static_cast<double>(total), 0.0, 1.0);
  }
  double sum = 0;
  for (int i = 0; i < c.num_units; ++i) {
    const int u = c.units[i];
    const int64_t total = s.unit_total(u);
    if (total <= 0) continue;
    const int64_t used = total - s.unit_free(u) + c.vram[i];
    sum += std::clamp(static_cast<double>(used) / static_cast<double>(total), 0.0, 1.0);
  }
  return 100.0 * sum / c.num_units;
}

double SpreadScorer::Score(const Candidate& c, const ScoreContext& ctx) const {
  const ClusterSnapshot& s = ctx.snapshot();
  const int mine = ctx.model_instances_on_worker(c.worker);
  const int others = s.worker_instances(c.worker) - mine;
  int busiest = 0;
  double free_fraction = 1;
  for (int i = 0; i < c.num_units; ++i) {
    const int u = c.units[i];
    busiest = std::max(busiest, s.unit_instances(u));
    const int64_t total = s.unit_total(u);
    if (total > 0) {
      free_fraction =
          std::min(free_fraction, std::max(0.0, static_cast<double>(s.unit_free(u) - c.vram[i]) /
                                                    static_cast<double>(total)));
    }
  }
  return 100.0 / (1 + mine) * (0.9 + 0.1 / (1 + others)) *
         (0.96 + 0.03 / (1 + busiest) + 0.01 * free_fraction);
}

double FragmentationScorer::Fragment(const ClusterSnapshot& s, int64_t free, int64_t request) {
  // The request being placed counts as one more slice of the workload.
  const int64_t slices = s.slice_count() + 1;
  if (free <= 0) return 0;
  const int64_t above = s.slices_above(free) + (request > free ? 1 : 0);
  return static_cast<double>(free) * static_cast<double>(above) / static_cast<double>(slices);
}

double FragmentationScorer::Score(const Candidate& c, const ScoreContext& ctx) const {
  const ClusterSnapshot& s = ctx.snapshot();
  if (c.num_units == 0) return 50;
  // Σ ΔF × slices, in integers: free × (slices larger than free) before and after.
  double delta = 0;
  int64_t total = 0;
  for (int i = 0; i < c.num_units; ++i) {
    const int u = c.units[i];
    const int64_t claim = c.vram[i];
    const int64_t before = std::max<int64_t>(0, s.unit_free(u));
    const int64_t after = std::max<int64_t>(0, s.unit_free(u) - claim);
    const int64_t above_after = after > 0 ? s.slices_above(after) + (claim > after ? 1 : 0) : 0;
    const int64_t above_before = before > 0 ? s.slices_above(before) + (claim > before ? 1 : 0) : 0;
    delta += static_cast<double>(after) * static_cast<double>(above_after) -
             static_cast<double>(before) * static_cast<double>(above_before);
    total += s.unit_total(u);
  }
  if (total <= 0) return 50;
  const double slices = static_cast<double>(s.slice_count() + 1);
  return std::clamp(50.0 * (1.0 - delta / (slices * static_cast<double>(total))), 0.0, 100.0);
}

double ReplicaSpreadScore(const Candidate& c, const ScoreContext& ctx) {
  const types::ReplicaSpread spread = ctx.model().replica_spread;
  if (spread == types::ReplicaSpread::kNone) return 100;
  if (c.num_units == 0) {
    return spread == types::ReplicaSpread::kWorker && ctx.model_instances_on_worker(c.worker) > 0
               ? 0
               : 100;
  }
  bool shares_gpu = false;
  bool shares_worker = false;
  const ClusterSnapshot& s = ctx.snapshot();
  for (int i = 0; i < c.num_units; ++i) {
    const int u = c.units[i];
    shares_gpu = shares_gpu || ctx.model_instances_on_unit(u) > 0;
    shares_worker = shares_worker || ctx.model_instances_on_worker(s.unit_worker(u)) > 0;
  }
  if (shares_gpu) return 0;
  return spread == types::ReplicaSpread::kWorker && shares_worker ? 50 : 100;
}

double LocalityScorer::Score(const Candidate& c, const ScoreContext& ctx) const {
  if (c.kind != PlacementKind::kMultiWorker) return ctx.worker_has_files(c.worker) ? 100 : 0;
  // Share of the distinct workers involved that hold the files.
  int workers = 0;
  int holding = 0;
  int last = -1;
  for (int i = 0; i < c.num_units; ++i) {
    const int w = ctx.snapshot().unit_worker(c.units[i]);
    if (w == last) continue;  // units of one worker are adjacent
    last = w;
    ++workers;
    if (ctx.worker_has_files(w)) ++holding;
  }
  return workers == 0 ? 0 : 100.0 * holding / workers;
}

double TopologyScorer::Score(const Candidate& c, const ScoreContext& /*ctx*/) const {
  return c.num_units > 1 && c.nvlink ? 100 : 0;
}

ScorerChain& ScorerChain::Add(std::unique_ptr<Scorer> scorer, double weight) {
  scorers_.push_back({std::move(scorer), weight});
  return *this;
}

double ScorerChain::Score(const Candidate& c, const ScoreContext& ctx) const {
  double total = 0;
  for (const Entry& e : scorers_) total += e.weight * e.scorer->Score(c, ctx);
  return total;
}

ScorerChain ScorerChain::Default(types::PlacementStrategy strategy) {
  ScorerChain chain;
  switch (strategy) {
    case types::PlacementStrategy::kBinpack:
      chain.Add(std::make_unique<BinpackScorer>(), 1.0);
      break;
    case types::PlacementStrategy::kSpread:
      chain.Add(std::make_unique<SpreadScorer>(), 1.0);
      break;
    case types::PlacementStrategy::kFragmentation:
      chain.Add(std::make_unique<FragmentationScorer>(), 1.0);
      chain.Add(std::make_unique<BinpackScorer>(), 0.01);
      break;
  }
  chain.Add(std::make_unique<LocalityScorer>(), 0.05);
  chain.Add(std::make_unique<TopologyScorer>(), 0.1);
  return chain;
}

}  // namespace segma::scheduler
