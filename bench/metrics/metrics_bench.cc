// Scrape cost (docs/benchmarks.md, "Observability"):
//  - a worker's /metrics with 8 GPUs and 16 engines, each engine's own metrics the size of a
//    vLLM server's (gauges, counters and 8 histograms): the render a Prometheus scrape pays,
//    and the per-engine parse and relabel the worker's scrape loop pays off the request path;
//  - the server's GET /v2/metrics/targets for 1,000 workers (8 GPUs each in their last
//    heartbeat) and 2,000 RUNNING instances: the store reads (SQLite) and the JSON.

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include "api/metrics_targets.h"
#include "common/clock.h"
#include "common/event_bus.h"
#include "metrics/registry.h"
#include "store/sqlite/sqlite_store.h"
#include "worker/worker_metrics.h"

namespace segma {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

// An engine's /metrics shaped like vLLM 0.10's: 12 gauges and counters, 8 histograms of 20-30
// buckets, two label sets where vLLM has them.
std::string VllmLikeText(int seed) {
  std::string out;
  const auto gauge = [&](const char* name, double v) {
    out += fmt::format(
        "# HELP {0} {0}\n# TYPE {0} gauge\n{0}{{model_name=\"m\",engine=\"0\"}} {1}\n", name, v);
  };
  const auto counter = [&](const char* name, double v) {
    out += fmt::format(
        "# HELP {0} {0}\n# TYPE {0} counter\n{0}{{model_name=\"m\",engine=\"0\"}} {1}\n", name, v);
  };
  gauge("vllm:num_requests_running", seed % 7);
  gauge("vllm:num_requests_waiting", seed % 3);
  gauge("vllm:kv_cache_usage_perc", 0.37);
  gauge("vllm:num_preemptions", 0);
  gauge("vllm:lora_requests_info", 1);
  counter("vllm:prompt_tokens_total", 123456 + seed);
  counter("vllm:generation_tokens_total", 987654 + seed);
  counter("vllm:prefix_cache_queries_total", 5555);
  counter("vllm:prefix_cache_hits_total", 4444);
  counter("vllm:num_preemptions_total", 2);
  out += "# TYPE vllm:request_success_total counter\n";
  for (const char* r : {"stop", "length", "abort"}) {
    out += fmt::format("vllm:request_success_total{{model_name=\"m\",finished_reason=\"{}\"}} 10\n",
                       r);
  }
  for (const char* h : {"vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                        "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds",
                        "vllm:request_prefill_time_seconds", "vllm:request_decode_time_seconds",
                        "vllm:request_prompt_tokens", "vllm:request_generation_tokens"}) {
    out += fmt::format("# HELP {0} {0}\n# TYPE {0} histogram\n", h);
    double le = 0.001;
    for (int b = 0; b < 24; ++b, le *= 1.8) {
      out += fmt::format("{}_bucket{{model_name=\"m\",engine=\"0\",le=\"{:.4g}\"}} {}\n", h, le,
                         b * 10 + seed);
    }
    out += fmt::format(
        "{0}_bucket{{model_name=\"m\",engine=\"0\",le=\"+Inf\"}} 300\n"
        "{0}_sum{{model_name=\"m\",engine=\"0\"}} 12.5\n"
        "{0}_count{{model_name=\"m\",engine=\"0\"}} 300\n",
        h);
  }
  return out;
}

// GPU `g` of an 8 x H200 node, busy.
types::GpuDevice H200(int g) {
  types::GpuDevice d;
  d.index = g;
  d.uuid = fmt::format("GPU-5a1b2c3d-0000-1111-2222-33334444{:04}", g);
  d.name = "NVIDIA H200";
  d.memory_total = 141 * kGiB;
  d.memory_used = 90 * kGiB;
  d.utilization = 60;
  d.temperature = 55;
  d.power = 500;
  d.power_limit = 700;
  d.sm_clock = 1980;
  d.memory_clock = 2619;
  return d;
}

worker::EngineLabels Labels(int i) {
  worker::EngineLabels l;
  l.instance = fmt::format("deployment-{}-x{:04}", i % 4, i);
  l.deployment = fmt::format("deployment-{}", i % 4);
  l.project = std::to_string(1 + i % 3);
  l.backend = "vllm";
  l.format = engines::MetricsFormat::kVllm;
  return l;
}

// What GET /metrics on a worker with 8 GPUs and 16 engines renders (the registry holds the
// worker's HTTP metrics too, as in the agent).
void BM_WorkerMetrics8Gpus16Engines(benchmark::State& state) {
  worker::WorkerMetrics m("gpu-node-001");
  types::WorkerStatus st;
  std::map<int, int64_t> claimed;
  for (int g = 0; g < 8; ++g) {
    st.gpus.push_back(H200(g));
    claimed[g] = 88 * kGiB;
  }
  m.SetStatus(st, claimed);
  std::vector<engines::EngineStatus> list;
  std::map<int64_t, worker::EngineLabels> labels;
  for (int i = 0; i < 16; ++i) {
    engines::EngineStatus e;
    e.instance_id = i + 1;
    e.state = engines::EngineState::kRunning;
    list.push_back(e);
    labels[i + 1] = Labels(i);
  }
  m.SetEngines(list, labels);
  size_t engine_bytes = 0;
  for (int i = 0; i < 16; ++i) {
    const std::string text = VllmLikeText(i);
    engine_bytes += text.size();
    m.SetScrape(i + 1, true, worker::RelabelEngineMetrics(text, labels[i + 1]), 0.001);
  }
  metrics::Registry registry;
  registry.AddCollector([&m](std::string& out) { m.Render(out); });
  size_t bytes = 0;
  for (auto _ : state) {
    std::string text = registry.Serialize();
    bytes = text.size();
    benchmark::DoNotOptimize(text);
  }
  state.counters["bytes"] = static_cast<double>(bytes);
  state.counters["engine_bytes_each"] = static_cast<double>(engine_bytes / 16);
}
BENCHMARK(BM_WorkerMetrics8Gpus16Engines)->Unit(benchmark::kMillisecond);

// The scrape loop's work per engine (off the request path): parse and relabel.
void BM_RelabelOneVllmEngine(benchmark::State& state) {
  const std::string text = VllmLikeText(1);
  const worker::EngineLabels l = Labels(1);
  for (auto _ : state) {
    benchmark::DoNotOptimize(worker::RelabelEngineMetrics(text, l));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_RelabelOneVllmEngine)->Unit(benchmark::kMicrosecond);

// GET /v2/metrics/targets with 1,000 workers and 2,000 RUNNING instances in SQLite.
void BM_HttpSd1000Workers(benchmark::State& state) {
  EventBus bus;
  auto store = store::OpenSqliteStore(":memory:", bus, SystemClock::Get()).value();
  types::Cluster c;
  c.name = "default";
  c.is_default = true;
  c.registration_token = "t";
  const int64_t cluster = store->CreateCluster(c).value().id;
  types::Project p;
  p.name = "bench";
  const int64_t project = store->CreateProject(p).value().id;
  types::Model model;
  model.name = "chat";
  model.project_id = project;
  model.source.type = types::SourceType::kSimulated;
  model.source.params_b = 8;
  model.replicas = 1;
  const int64_t model_id = store->CreateModel(model).value().id;
  types::WorkerStatus st;
  for (int g = 0; g < 8; ++g) st.gpus.push_back(H200(g));
  for (int w = 0; w < 1000; ++w) {
    const types::Worker wk = store
                                 ->UpsertWorkerByName(cluster, fmt::format("gpu-{:04}", w),
                                                      fmt::format("10.0.{}.{}", w / 250, w % 250),
                                                      10150, fmt::format("hash-{}", w), {})
                                 .value();
    (void)store->RecordHeartbeat(wk.id, st, SystemClock::Get().Now()).value();
    for (int i = 0; i < 2; ++i) {
      types::ModelInstance inst;
      inst.model_id = model_id;
      inst.name = fmt::format("chat-{:04}-{}", w, i);
      inst.state = types::InstanceState::kRunning;
      inst.worker_id = wk.id;
      inst.worker_name = wk.name;
      inst.port = 40000 + i;
      (void)store->CreateModelInstance(inst).value();
    }
  }
  size_t bytes = 0;
  for (auto _ : state) {
    const std::string body =
        json::serialize(api::MetricsTargets("server:8080", store->ListScrapeTargets().value()));
    bytes = body.size();
    benchmark::DoNotOptimize(body);
  }
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_HttpSd1000Workers)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace segma
