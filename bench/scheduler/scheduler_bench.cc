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
    ->ArgName("strategy")
    ->Arg(static_cast<int>(types::PlacementStrategy::kSpread))
    ->Arg(static_cast<int>(types::PlacementStrategy::kBinpack))
    ->Arg(static_cast<int>(types::PlacementStrategy::kFragmentation))
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

// The per-GPU slice each request of the trace needs (what FGD calls the target workload).
std::vector<int64_t> TraceSlices(const std::vector<Request>& trace) {
  std::vector<int64_t> slices;
  for (const Request& r : trace) {
    const int tp = std::max(1, r.model.gpu_selector.gpus_per_replica);
    Result<Requirement> req = r.estimator.ForGpus(tp);
    if (req.ok()) slices.push_back(req->vram_per_gpu);
  }
  return slices;
}

// FGD's fragmentation of the pool for the trace's mix: Σ over GPUs of the free VRAM, weighted by
// the share of the trace's requests whose slice is larger than it (so they cannot use it).
int64_t ExpectedStranded(const ClusterSnapshot& s, const std::vector<int64_t>& sorted_slices) {
  double stranded = 0;
  for (int u = 0; u < s.unit_count(); ++u) {
    const int64_t free = std::max<int64_t>(0, s.unit_free(u));
    const auto above =
        sorted_slices.end() - std::upper_bound(sorted_slices.begin(), sorted_slices.end(), free);
    stranded += static_cast<double>(free) * static_cast<double>(above) /
                static_cast<double>(sorted_slices.size());
  }
  return static_cast<int64_t>(stranded);
}

struct Replay {
  int placed = 0;
  int first_unplaced = -1;
  int64_t stranded_end = 0;  // free on used GPUs smaller than any unplaced request's slice
  int64_t used = 0;
  int64_t total = 0;
  std::vector<int64_t> expected_stranded;  // after each request
  std::vector<int64_t> allocated;          // VRAM claimed after each request
};

Replay RunReplay(Pool pool, const std::vector<Request>& trace) {
  std::vector<int64_t> slices = TraceSlices(trace);
  std::sort(slices.begin(), slices.end());
  Replay out;
  ClusterSnapshot s = MakePool(pool);
  Scheduler scheduler;
  int64_t smallest_pending = INT64_MAX;
  int64_t allocated = 0;
  for (size_t i = 0; i < trace.size(); ++i) {
    const Request& r = trace[i];
    Decision d = scheduler.Decide(s, r.model, r.estimator, {});
    if (!d.placed) {
      if (out.first_unplaced < 0) out.first_unplaced = static_cast<int>(i);
      const int tp = std::max(1, r.model.gpu_selector.gpus_per_replica);
      Result<Requirement> req = r.estimator.ForGpus(tp);
      if (req.ok()) smallest_pending = std::min(smallest_pending, req->vram_per_gpu);
    } else {
      ++out.placed;
      for (const PlacedInstance& p :
           ToPlacedInstances(d.placement, static_cast<int64_t>(i) + 1, r.model.id)) {
        (void)s.AddInstance(p);
        for (const auto& [index, bytes] : p.vram) allocated += bytes;
      }
    }
    out.expected_stranded.push_back(ExpectedStranded(s, slices));
    out.allocated.push_back(allocated);
  }
  for (int u = 0; u < s.unit_count(); ++u) {
    const int64_t free = std::max<int64_t>(0, s.unit_free(u));
    out.total += s.unit_total(u);
    out.used += s.unit_total(u) - free;
    if (s.unit_instances(u) > 0 && free > 0 && free < smallest_pending) out.stranded_end += free;
  }
  return out;
}

// The first request any strategy rejects: up to it every strategy has placed the same requests,
// so the allocation rate (100 %) and the VRAM allocated are the same and only the layout differs.
int CommonFirstRejection(Pool pool, const std::vector<Request>& trace) {
  int first = static_cast<int>(trace.size());
  for (auto strategy : {types::PlacementStrategy::kSpread, types::PlacementStrategy::kBinpack,
                        types::PlacementStrategy::kFragmentation}) {
    std::vector<Request> t = trace;
    for (Request& r : t) r.model.placement_strategy = strategy;
    const Replay replay = RunReplay(pool, t);
    if (replay.first_unplaced >= 0) first = std::min(first, replay.first_unplaced);
  }
  return first;
}

// Replays a trace whose total demand exceeds the pool, in order, onto an empty pool.
void BM_Packing(benchmark::State& state) {
  const auto pool = static_cast<Pool>(state.range(0));
  const auto strategy = static_cast<types::PlacementStrategy>(state.range(1));
  const int requests = pool == kDataCentre ? 120 : 6000;
  std::vector<Request> trace = MakeTrace(requests, 2026, strategy);
  const int common = CommonFirstRejection(pool, trace);
  Replay replay;
  for (auto _ : state) replay = RunReplay(pool, trace);
  const double gib = static_cast<double>(kGiB);
  const double total_gib = static_cast<double>(replay.total) / gib;
  state.SetItemsProcessed(state.iterations() * requests);
  state.counters["requested"] = requests;
  state.counters["placed"] = replay.placed;
  state.counters["first_unplaced"] = replay.first_unplaced;
  state.counters["allocation_rate"] = static_cast<double>(replay.placed) / requests;
  state.counters["vram_used_pct"] = 100.0 * static_cast<double>(replay.used) / replay.total;
  state.counters["stranded_gib"] = static_cast<double>(replay.stranded_end) / gib;
  state.counters["stranded_pct"] =
      100.0 * static_cast<double>(replay.stranded_end) / gib / total_gib;
  // At the common first rejection (index `common` - 1): same requests placed by every strategy.
  if (common > 0) {
    state.counters["common_index"] = common - 1;
    state.counters["alloc_pct_at_common"] =
        100.0 * static_cast<double>(replay.allocated[common - 1]) / replay.total;
    state.counters["frag_gib_at_common"] =
        static_cast<double>(replay.expected_stranded[common - 1]) / gib;
  }
  // Mean over the whole replay of FGD's fragmentation, and at the end.
  double mean = 0;
  for (int64_t v : replay.expected_stranded) mean += static_cast<double>(v);
  state.counters["frag_gib_mean"] =
      mean / static_cast<double>(replay.expected_stranded.size()) / gib;
  state.counters["frag_gib_end"] = static_cast<double>(replay.expected_stranded.back()) / gib;
}
BENCHMARK(BM_Packing)
    ->ArgNames({"pool", "strategy"})
    ->Args({kDataCentre, static_cast<int>(types::PlacementStrategy::kSpread)})
    ->Args({kDataCentre, static_cast<int>(types::PlacementStrategy::kBinpack)})
    ->Args({kDataCentre, static_cast<int>(types::PlacementStrategy::kFragmentation)})
    ->Args({kThousandGpus, static_cast<int>(types::PlacementStrategy::kSpread)})
    ->Args({kThousandGpus, static_cast<int>(types::PlacementStrategy::kBinpack)})
    ->Args({kThousandGpus, static_cast<int>(types::PlacementStrategy::kFragmentation)})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace segma::scheduler
