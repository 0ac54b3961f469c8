// Scheduler benchmarks: placement decisions per second on a large snapshot, and packing quality
// (allocation rate, stranded VRAM) when replaying a mixed trace onto real and synthetic pools.
// Results and the command line: docs/benchmarks.md ("Scheduler").

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "scheduler/scheduler.h"

namespace segma::scheduler {
namespace {

types::GpuDevice Gpu(int index, int64_t mib, const std::string& name, const std::string& cc) {
  types::GpuDevice g;
  g.index = index;
  g.uuid = "GPU-" + std::to_string(index);
  g.name = name;
  g.compute_capability = cc;
  g.memory_total = mib * kMiB;
  return g;
}

WorkerInfo Worker(int64_t id, int gpus, int64_t mib, const std::string& gpu_name,
                  const std::string& cc = "9.0") {
  WorkerInfo w;
  w.id = id;
  w.name = "w" + std::to_string(id);
  w.cluster_id = 1;
  w.ram_total = 1024 * kGiB;
  w.cpu_count = 64;
  for (int i = 0; i < gpus; ++i) w.gpus.push_back(Gpu(i, mib, gpu_name, cc));
  // NVLink between every pair, like an HGX board.
  for (auto& a : w.gpus) {
    for (auto& b : w.gpus) {
      if (a.index != b.index) a.links[b.index] = "nvlink";
    }
  }
  return w;
}

struct Request {
  types::Model model;
  FixedEstimator estimator;
};

// A mixed trace: sizes 1B-70B, fp16 and 4-bit, contexts 4k-32k, some with fixed 2/4-GPU tensor
// parallelism. Deterministic for a given seed.
std::vector<Request> MakeTrace(int n, uint64_t seed, types::PlacementStrategy strategy) {
  struct Shape {
    double params_b;
    double bytes_per_param;
    int64_t context;
    int tp;
    double weight;
  };
  static constexpr Shape kShapes[] = {
      {1, 2, 8192, 0, 15},    {3, 2, 8192, 0, 10}, {8, 2, 8192, 0, 20},    {8, 0.56, 32768, 0, 10},
      {14, 2, 16384, 0, 10},  {32, 2, 8192, 2, 8}, {32, 0.56, 8192, 0, 7}, {70, 2, 8192, 4, 6},
      {70, 0.56, 4096, 0, 8}, {8, 2, 131072, 0, 6}};
  std::vector<double> weights;
  for (const Shape& s : kShapes) weights.push_back(s.weight);
  std::mt19937_64 rng(seed);
  std::discrete_distribution<int> pick(weights.begin(), weights.end());
  std::vector<Request> trace;
  trace.reserve(n);
  for (int i = 0; i < n; ++i) {
    const Shape& s = kShapes[pick(rng)];
    types::Model m;
    m.id = 1 + i % 400;  // replicas of a few hundred deployments
    m.name = "m" + std::to_string(m.id);
    m.source.type = types::SourceType::kSimulated;
    m.source.params_b = s.params_b;
    m.context_length = s.context;
    m.backend = "llama.cpp";
    m.placement_strategy = strategy;
    m.gpu_selector.gpus_per_replica = s.tp;
    FixedEstimator::Options o = FixedEstimator::ForParams(s.params_b, s.context);
    o.bytes_per_param = s.bytes_per_param;
    trace.push_back({std::move(m), FixedEstimator(o)});
  }
  return trace;
}

// 5,000 workers × 8 H100 80GB at ~50 % VRAM load: each GPU holds 0-3 instances of other models.
const ClusterSnapshot& LargeSnapshot() {
  static const ClusterSnapshot* snapshot = [] {
    auto* s = new ClusterSnapshot();
    std::mt19937_64 rng(42);
    std::uniform_real_distribution<double> load(0.0, 1.0);
    int64_t instance = 1;
    for (int w = 1; w <= 5000; ++w) {
      (void)s->AddWorker(Worker(w, 8, 81559, "NVIDIA H100 80GB HBM3"));
      for (int g = 0; g < 8; ++g) {
        const int64_t total = 81559 * kMiB;
        int64_t remaining = static_cast<int64_t>(load(rng) * static_cast<double>(total));
        const int parts = 1 + static_cast<int>(rng() % 3);
        for (int p = 0; p < parts && remaining > 0; ++p) {
          const int64_t bytes = p + 1 == parts ? remaining : remaining / 2;
          remaining -= bytes;
          (void)s->AddInstance(PlacedInstance{
              instance++, 1000 + static_cast<int64_t>(rng() % 600), w, {{g, bytes}}, kGiB});
        }
      }
    }
    return s;
  }();
  return *snapshot;
}

void ReportLatency(benchmark::State& state, std::vector<double>& us) {
  if (us.empty()) return;
  std::sort(us.begin(), us.end());
  state.counters["p50_ms"] = us[us.size() / 2] / 1000.0;
  state.counters["p99_ms"] = us[std::min(us.size() - 1, us.size() * 99 / 100)] / 1000.0;
  state.counters["max_ms"] = us.back() / 1000.0;
}

// Decisions on a fixed 40,000-GPU snapshot (nothing is applied, so the load stays at 50 %).
void BM_Decide5000x8(benchmark::State& state) {
  const ClusterSnapshot& s = LargeSnapshot();
  const auto strategy = static_cast<types::PlacementStrategy>(state.range(0));
  std::vector<Request> trace = MakeTrace(1024, 7, strategy);
  Scheduler scheduler;
  std::vector<double> us;
  us.reserve(1 << 20);
  size_t i = 0;
  int64_t placed = 0;
  for (auto _ : state) {
    const Request& r = trace[i++ % trace.size()];
    const auto t0 = std::chrono::steady_clock::now();
    Decision d = scheduler.Decide(s, r.model, r.estimator, {});
    const auto t1 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(d);
    placed += d.placed ? 1 : 0;
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["placed_pct"] = 100.0 * static_cast<double>(placed) /
                                 static_cast<double>(std::max<int64_t>(1, state.iterations()));
  ReportLatency(state, us);
}
BENCHMARK(BM_Decide5000x8)
    ->ArgName("binpack")
    ->Arg(static_cast<int>(types::PlacementStrategy::kSpread))
    ->Arg(static_cast<int>(types::PlacementStrategy::kBinpack))
    ->MinTime(3.0)
    ->Unit(benchmark::kMicrosecond);

// Decide, apply to the snapshot, then release: what a controller does per replica.
void BM_DecideAndApply5000x8(benchmark::State& state) {
  static ClusterSnapshot s = LargeSnapshot();  // a private copy we may change
  std::vector<Request> trace = MakeTrace(1024, 11, types::PlacementStrategy::kSpread);
  Scheduler scheduler;
  std::vector<double> us;
  us.reserve(1 << 20);
  size_t i = 0;
  int64_t instance = 10'000'000;
  for (auto _ : state) {
    const Request& r = trace[i++ % trace.size()];
    const auto t0 = std::chrono::steady_clock::now();
    Decision d = scheduler.Decide(s, r.model, r.estimator, {});
    if (d.placed) {
      for (const PlacedInstance& p : ToPlacedInstances(d.placement, instance, r.model.id)) {
        (void)s.AddInstance(p);
      }
    }
    const auto t1 = std::chrono::steady_clock::now();
    if (d.placed) (void)s.RemoveInstance(instance++);
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  state.SetItemsProcessed(state.iterations());
  ReportLatency(state, us);
}
BENCHMARK(BM_DecideAndApply5000x8)->MinTime(3.0)->Unit(benchmark::kMicrosecond);

enum Pool { kDataCentre = 0, kThousandGpus = 1 };

ClusterSnapshot MakePool(Pool pool) {
  ClusterSnapshot s;
  if (pool == kDataCentre) {
    // 3 × 4 H200 NVL 141 GB, 1 × 4 and 1 × 2 RTX PRO 6000 Blackwell 96 GB.
    for (int w = 1; w <= 3; ++w) (void)s.AddWorker(Worker(w, 4, 143771, "NVIDIA H200 NVL"));
    (void)s.AddWorker(Worker(4, 4, 97887, "NVIDIA RTX PRO 6000 Blackwell", "12.0"));
    (void)s.AddWorker(Worker(5, 2, 97887, "NVIDIA RTX PRO 6000 Blackwell", "12.0"));
  } else {
    // 1,000 GPUs: 100 × 8 H100 80GB and 50 × 4 L40S 48GB.
    for (int w = 1; w <= 100; ++w) (void)s.AddWorker(Worker(w, 8, 81559, "NVIDIA H100 80GB HBM3"));
    for (int w = 101; w <= 150; ++w) (void)s.AddWorker(Worker(w, 4, 46068, "NVIDIA L40S", "8.9"));
  }
  return s;
}

// Replays a trace whose total demand exceeds the pool, in order, onto an empty pool.
void BM_Packing(benchmark::State& state) {
  const auto pool = static_cast<Pool>(state.range(0));
  const auto strategy = static_cast<types::PlacementStrategy>(state.range(1));
  const int requests = pool == kDataCentre ? 120 : 6000;
  std::vector<Request> trace = MakeTrace(requests, 2026, strategy);
  int placed = 0;
  double stranded_gib = 0;
  double used_pct = 0;
  double total_gib = 0;
  int first_unplaced = 0;
  for (auto _ : state) {
    ClusterSnapshot s = MakePool(pool);
    Scheduler scheduler;
    placed = 0;
    first_unplaced = -1;
    int64_t smallest_pending = INT64_MAX;
    for (size_t i = 0; i < trace.size(); ++i) {
      const Request& r = trace[i];
      Decision d = scheduler.Decide(s, r.model, r.estimator, {});
      if (!d.placed) {
        if (first_unplaced < 0) first_unplaced = static_cast<int>(i);
        // The smallest slice of one GPU this pending request could use.
        const int tp = std::max(1, r.model.gpu_selector.gpus_per_replica);
        Result<Requirement> req = r.estimator.ForGpus(tp);
        if (req.ok()) smallest_pending = std::min(smallest_pending, req->vram_per_gpu);
        continue;
      }
      ++placed;
      for (const PlacedInstance& p :
           ToPlacedInstances(d.placement, static_cast<int64_t>(i) + 1, r.model.id)) {
        (void)s.AddInstance(p);
      }
    }
    // Stranded: free VRAM on partially used GPUs that no pending request can use.
    int64_t stranded = 0;
    int64_t used = 0;
    int64_t total = 0;
    for (int u = 0; u < s.unit_count(); ++u) {
      const int64_t free = std::max<int64_t>(0, s.unit_free(u));
      total += s.unit_total(u);
      used += s.unit_total(u) - free;
      if (s.unit_instances(u) > 0 && free > 0 && free < smallest_pending) stranded += free;
    }
    stranded_gib = static_cast<double>(stranded) / static_cast<double>(kGiB);
    total_gib = static_cast<double>(total) / static_cast<double>(kGiB);
    used_pct = 100.0 * static_cast<double>(used) / static_cast<double>(total);
  }
  state.SetItemsProcessed(state.iterations() * requests);
  state.counters["requested"] = requests;
  state.counters["placed"] = placed;
  state.counters["first_unplaced"] = first_unplaced;
  state.counters["allocation_rate"] = static_cast<double>(placed) / requests;
  state.counters["vram_used_pct"] = used_pct;
  state.counters["stranded_gib"] = stranded_gib;
  state.counters["stranded_pct"] = 100.0 * stranded_gib / total_gib;
}
BENCHMARK(BM_Packing)
    ->ArgNames({"pool", "binpack"})
    ->Args({kDataCentre, static_cast<int>(types::PlacementStrategy::kSpread)})
    ->Args({kDataCentre, static_cast<int>(types::PlacementStrategy::kBinpack)})
    ->Args({kThousandGpus, static_cast<int>(types::PlacementStrategy::kSpread)})
    ->Args({kThousandGpus, static_cast<int>(types::PlacementStrategy::kBinpack)})
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace segma::scheduler
