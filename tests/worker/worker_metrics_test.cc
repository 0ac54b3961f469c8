#include "worker/worker_metrics.h"

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "integration/harness.h"
#include "metrics/exposition.h"

namespace segma::worker {
namespace {

using metrics::ParsedFamily;
using metrics::ParseText;

constexpr int64_t kGiB = int64_t{1} << 30;

// What engine-sim (and vLLM) write, two model_name label sets included.
constexpr std::string_view kVllmText =
    "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
    "# TYPE vllm:num_requests_running gauge\n"
    "vllm:num_requests_running{model_name=\"chat\"} 3\n"
    "# TYPE vllm:num_requests_waiting gauge\n"
    "vllm:num_requests_waiting{model_name=\"chat\"} 1\n"
    "# TYPE vllm:kv_cache_usage_perc gauge\n"
    "vllm:kv_cache_usage_perc{model_name=\"chat\"} 0.25\n"
    "# TYPE vllm:prompt_tokens_total counter\n"
    "vllm:prompt_tokens_total{model_name=\"chat\"} 100\n"
    "vllm:prompt_tokens_total{model_name=\"chat-lora\"} 20\n"
    "# TYPE vllm:generation_tokens_total counter\n"
    "vllm:generation_tokens_total{model_name=\"chat\"} 400\n"
    "# TYPE vllm:time_to_first_token_seconds histogram\n"
    "vllm:time_to_first_token_seconds_bucket{model_name=\"chat\",le=\"0.1\"} 2\n"
    "vllm:time_to_first_token_seconds_bucket{model_name=\"chat\",le=\"1\"} 4\n"
    "vllm:time_to_first_token_seconds_bucket{model_name=\"chat\",le=\"+Inf\"} 5\n"
    "vllm:time_to_first_token_seconds_sum{model_name=\"chat\"} 2.5\n"
    "vllm:time_to_first_token_seconds_count{model_name=\"chat\"} 5\n"
    "# TYPE vllm:time_per_output_token_seconds histogram\n"
    "vllm:time_per_output_token_seconds_bucket{model_name=\"chat\",le=\"+Inf\"} 99\n"
    "vllm:time_per_output_token_seconds_sum{model_name=\"chat\"} 9\n"
    "vllm:time_per_output_token_seconds_count{model_name=\"chat\"} 99\n"
    "# TYPE vllm:inter_token_latency_seconds histogram\n"
    "vllm:inter_token_latency_seconds_bucket{model_name=\"chat\",le=\"0.05\"} 30\n"
    "vllm:inter_token_latency_seconds_bucket{model_name=\"chat\",le=\"+Inf\"} 40\n"
    "vllm:inter_token_latency_seconds_sum{model_name=\"chat\"} 1\n"
    "vllm:inter_token_latency_seconds_count{model_name=\"chat\"} 40\n";

// llama-server --metrics (b6xxx): counters and gauges, no histograms.
constexpr std::string_view kLlamaText =
    "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n"
    "# TYPE llamacpp:prompt_tokens_total counter\n"
    "llamacpp:prompt_tokens_total 512\n"
    "# TYPE llamacpp:tokens_predicted_total counter\n"
    "llamacpp:tokens_predicted_total 2048\n"
    "# TYPE llamacpp:kv_cache_usage_ratio gauge\n"
    "llamacpp:kv_cache_usage_ratio 0.5\n"
    "# TYPE llamacpp:requests_processing gauge\n"
    "llamacpp:requests_processing 2\n"
    "# TYPE llamacpp:requests_deferred gauge\n"
    "llamacpp:requests_deferred 0\n";

// SGLang (--enable-metrics).
constexpr std::string_view kSglangText =
    "# TYPE sglang:num_running_reqs gauge\n"
    "sglang:num_running_reqs{model_name=\"q\"} 4\n"
    "# TYPE sglang:num_queue_reqs gauge\n"
    "sglang:num_queue_reqs{model_name=\"q\"} 2\n"
    "# TYPE sglang:token_usage gauge\n"
    "sglang:token_usage{model_name=\"q\"} 0.75\n"
    "# TYPE sglang:prompt_tokens_total counter\n"
    "sglang:prompt_tokens_total{model_name=\"q\"} 10\n"
    "# TYPE sglang:generation_tokens_total counter\n"
    "sglang:generation_tokens_total{model_name=\"q\"} 30\n"
    "# TYPE sglang:time_to_first_token_seconds histogram\n"
    "sglang:time_to_first_token_seconds_bucket{model_name=\"q\",le=\"+Inf\"} 3\n"
    "sglang:time_to_first_token_seconds_sum{model_name=\"q\"} 0.3\n"
    "sglang:time_to_first_token_seconds_count{model_name=\"q\"} 3\n";

EngineLabels Labels(std::string instance, std::string backend) {
  EngineLabels l;
  l.instance = std::move(instance);
  l.deployment = "chat";
  l.project = "7";
  l.backend = std::move(backend);
  return l;
}

// family → (sample name + sorted labels → value)
using Values = std::map<std::string, double>;
Values Flatten(std::string_view text) {
  Values out;
  for (const ParsedFamily& f : ParseText(text)) {
    for (const auto& s : f.samples) {
      std::map<std::string, std::string> sorted(s.labels.begin(), s.labels.end());
      std::string key = s.name + "{";
      for (const auto& [k, v] : sorted) key += k + "=" + v + ",";
      out[key + "}"] += s.value;
    }
  }
  return out;
}

std::string Join(const ScrapedEngine& e) {
  std::string out;
  metrics::TextWriter w(out);
  for (const auto& [name, f] : e) {
    w.Family(name, f.type, f.help);
    out += f.samples;
  }
  return out;
}

const std::string kOurs = "backend=vllm,deployment=chat,instance=chat-1,project=7,";

// The Flatten key of `name` with the labels of engine chat-1 and `extra`.
std::string Key(const std::string& name, std::map<std::string, std::string> extra) {
  extra.insert(
      {{"backend", "vllm"}, {"deployment", "chat"}, {"instance", "chat-1"}, {"project", "7"}});
  std::string key = name + "{";
  for (const auto& [k, v] : extra) key += k + "=" + v + ",";
  return key + "}";
}

TEST(RelabelEngineMetricsTest, NormalisesVllmAndKeepsRawSeriesWithOurLabels) {
  const Values v = Flatten(Join(RelabelEngineMetrics(kVllmText, Labels("chat-1", "vllm"))));
  EXPECT_EQ(v.at("segma_engine_requests_running{" + kOurs + "}"), 3);
  EXPECT_EQ(v.at("segma_engine_requests_waiting{" + kOurs + "}"), 1);
  EXPECT_EQ(v.at("segma_engine_kv_cache_usage_ratio{" + kOurs + "}"), 0.25);
  EXPECT_EQ(v.at("segma_engine_prompt_tokens_total{" + kOurs + "}"), 120);  // both label sets
  EXPECT_EQ(v.at("segma_engine_generation_tokens_total{" + kOurs + "}"), 400);
  EXPECT_EQ(v.at(Key("segma_engine_time_to_first_token_seconds_bucket", {{"le", "0.1"}})), 2);
  EXPECT_EQ(v.at(Key("segma_engine_time_to_first_token_seconds_bucket", {{"le", "+Inf"}})), 5);
  EXPECT_EQ(v.at("segma_engine_time_to_first_token_seconds_sum{" + kOurs + "}"), 2.5);
  EXPECT_EQ(v.at("segma_engine_time_to_first_token_seconds_count{" + kOurs + "}"), 5);
  // vLLM's current inter-token histogram wins over the older per-output-token one.
  EXPECT_EQ(v.at("segma_engine_inter_token_latency_seconds_count{" + kOurs + "}"), 40);
  // Raw: the engine's labels and ours.
  EXPECT_EQ(v.at(Key("vllm:num_requests_running", {{"model_name", "chat"}})), 3);
  EXPECT_EQ(v.at(Key("vllm:prompt_tokens_total", {{"model_name", "chat-lora"}})), 20);
}

TEST(RelabelEngineMetricsTest, NormalisesLlamaCppAndSglang) {
  const std::string llama_labels = "backend=llama.cpp,deployment=chat,instance=l,project=7,";
  const Values l = Flatten(Join(RelabelEngineMetrics(kLlamaText, Labels("l", "llama.cpp"))));
  EXPECT_EQ(l.at("segma_engine_requests_running{" + llama_labels + "}"), 2);
  EXPECT_EQ(l.at("segma_engine_requests_waiting{" + llama_labels + "}"), 0);
  EXPECT_EQ(l.at("segma_engine_kv_cache_usage_ratio{" + llama_labels + "}"), 0.5);
  EXPECT_EQ(l.at("segma_engine_prompt_tokens_total{" + llama_labels + "}"), 512);
  EXPECT_EQ(l.at("segma_engine_generation_tokens_total{" + llama_labels + "}"), 2048);
  EXPECT_EQ(l.count("segma_engine_time_to_first_token_seconds_count{" + llama_labels + "}"), 0u);

  const std::string sg = "backend=sglang,deployment=chat,instance=s,project=7,";
  const Values s = Flatten(Join(RelabelEngineMetrics(kSglangText, Labels("s", "sglang"))));
  EXPECT_EQ(s.at("segma_engine_requests_running{" + sg + "}"), 4);
  EXPECT_EQ(s.at("segma_engine_requests_waiting{" + sg + "}"), 2);
  EXPECT_EQ(s.at("segma_engine_kv_cache_usage_ratio{" + sg + "}"), 0.75);
  EXPECT_EQ(s.at("segma_engine_generation_tokens_total{" + sg + "}"), 30);
  EXPECT_EQ(s.at("segma_engine_time_to_first_token_seconds_count{" + sg + "}"), 3);
}

TEST(RelabelEngineMetricsTest, AnEngineCannotWriteOurNamesOrLabels) {
  const std::string text =
      "# TYPE segma_workers gauge\nsegma_workers 99\n"
      "# TYPE vllm:num_requests_running gauge\n"
      "vllm:num_requests_running{instance=\"evil\",project=\"0\"} 1\n";
  const Values v = Flatten(Join(RelabelEngineMetrics(text, Labels("chat-1", "vllm"))));
  EXPECT_EQ(v.count("segma_workers{}"), 0u);
  EXPECT_EQ(v.at("vllm:num_requests_running{" + kOurs + "}"), 1);
}

types::WorkerStatus TwoGpus() {
  types::WorkerStatus s;
  s.gpu_source = "fake";
  s.disk_total = 100 * kGiB;
  s.disk_used = 40 * kGiB;
  for (int i = 0; i < 2; ++i) {
    types::GpuDevice g;
    g.index = i;
    g.uuid = "GPU-" + std::to_string(i);
    g.name = "NVIDIA H200 NVL";
    g.memory_total = 141 * kGiB;
    g.memory_used = i == 0 ? 70 * kGiB : 0;
    g.memory_used_external = i == 0 ? 2 * kGiB : 0;
    g.utilization = i == 0 ? 55 : 1;
    g.temperature = 61;
    g.power = 300.5;
    g.sm_clock = 1755;
    g.memory_clock = 2619;
    s.gpus.push_back(g);
  }
  return s;
}

TEST(WorkerMetricsTest, RendersGpusUnderDcgmNamesAndEnginesWithTheirLabels) {
  WorkerMetrics m("gpu-node-1");
  m.SetStatus(TwoGpus(), {{0, 68 * kGiB}});
  engines::EngineStatus running;
  running.instance_id = 5;
  running.state = engines::EngineState::kRunning;
  running.restart_count = 2;
  engines::EngineStatus error;
  error.instance_id = 6;
  error.state = engines::EngineState::kError;
  m.SetEngines({running, error}, {{5, Labels("chat-1", "vllm")}});
  m.SetScrape(5, true, RelabelEngineMetrics(kVllmText, Labels("chat-1", "vllm")), 0.002);
  m.SetScrape(6, false, {}, 2);
  std::string text;
  m.Render(text);
  const Values v = Flatten(text);
  const std::string gpu0 =
      "Hostname=gpu-node-1,UUID=GPU-0,device=nvidia0,gpu=0,modelName=NVIDIA H200 NVL,";
  EXPECT_EQ(v.at("DCGM_FI_DEV_GPU_UTIL{" + gpu0 + "}"), 55);
  EXPECT_EQ(v.at("DCGM_FI_DEV_FB_USED{" + gpu0 + "}"), 70 * 1024);
  EXPECT_EQ(v.at("DCGM_FI_DEV_FB_FREE{" + gpu0 + "}"), 71 * 1024);
  EXPECT_EQ(v.at("DCGM_FI_DEV_GPU_TEMP{" + gpu0 + "}"), 61);
  EXPECT_EQ(v.at("DCGM_FI_DEV_POWER_USAGE{" + gpu0 + "}"), 300.5);
  EXPECT_EQ(v.at("DCGM_FI_DEV_SM_CLOCK{" + gpu0 + "}"), 1755);
  EXPECT_EQ(v.at("DCGM_FI_DEV_MEM_CLOCK{" + gpu0 + "}"), 2619);
  EXPECT_EQ(v.at("segma_worker_gpu_vram_claimed_bytes{" + gpu0 + "}"), 68.0 * kGiB);
  EXPECT_EQ(v.at("segma_worker_gpu_vram_external_bytes{" + gpu0 + "}"), 2.0 * kGiB);
  EXPECT_EQ(v.at("segma_worker_engines{Hostname=gpu-node-1,state=RUNNING,}"), 1);
  EXPECT_EQ(v.at("segma_worker_engines{Hostname=gpu-node-1,state=ERROR,}"), 1);
  EXPECT_EQ(v.at("segma_worker_engines{Hostname=gpu-node-1,state=STARTING,}"), 0);
  EXPECT_EQ(v.at("segma_engine_restarts_total{" + kOurs + "}"), 2);
  EXPECT_EQ(v.at("segma_engine_up{" + kOurs + "}"), 1);
  EXPECT_EQ(v.at("segma_engine_up{backend=,deployment=,instance=instance-6,project=,}"), 0);
  EXPECT_EQ(v.at("segma_engine_requests_running{" + kOurs + "}"), 3);
  EXPECT_EQ(v.at("segma_worker_disk_used_bytes{Hostname=gpu-node-1,}"), 40.0 * kGiB);

  // The format's rule: every family once, in one piece.
  std::set<std::string> seen;
  for (const ParsedFamily& f : ParseText(text)) {
    EXPECT_TRUE(seen.insert(f.name).second) << f.name << " appears twice";
  }
}

TEST(WorkerMetricsTest, EnforcedSlicesAreSeriesOfTheirEngine) {
  WorkerMetrics m("gpu-node-1");
  types::WorkerStatus status = TwoGpus();
  status.gpus[0].slices = {
      {.instance_id = 5, .memory_limit = 12 * kGiB, .memory_used = 11 * kGiB, .limit_hits = 3}};
  m.SetStatus(status, {});
  engines::EngineStatus running;
  running.instance_id = 5;
  running.state = engines::EngineState::kRunning;
  m.SetEngines({running}, {{5, Labels("chat-1", "vllm")}});
  std::string text;
  m.Render(text);
  const Values v = Flatten(text);
  const std::string slice =
      "UUID=GPU-0,backend=vllm,deployment=chat,gpu=0,instance=chat-1,project=7,";
  EXPECT_EQ(v.at("segma_engine_vram_limit_bytes{" + slice + "}"), 12.0 * kGiB) << text;
  EXPECT_EQ(v.at("segma_engine_vram_used_bytes{" + slice + "}"), 11.0 * kGiB);
  EXPECT_EQ(v.at("segma_engine_vram_limit_hits_total{" + slice + "}"), 3);
}

TEST(WorkerMetricsTest, FamiliesOfSeveralEnginesAreWrittenOnce) {
  WorkerMetrics m("n");
  std::vector<engines::EngineStatus> list;
  std::map<int64_t, EngineLabels> labels;
  for (int64_t id = 1; id <= 3; ++id) {
    engines::EngineStatus e;
    e.instance_id = id;
    e.state = engines::EngineState::kRunning;
    list.push_back(e);
    labels[id] = Labels("chat-" + std::to_string(id), "vllm");
  }
  m.SetEngines(list, labels);
  for (int64_t id = 1; id <= 3; ++id) {
    m.SetScrape(id, true, RelabelEngineMetrics(kVllmText, labels[id]), 0.001);
  }
  std::string text;
  m.Render(text);
  std::map<std::string, size_t> samples;
  std::set<std::string> seen;
  for (const ParsedFamily& f : ParseText(text)) {
    EXPECT_TRUE(seen.insert(f.name).second) << f.name << " appears twice";
    samples[f.name] = f.samples.size();
  }
  EXPECT_EQ(samples["segma_engine_requests_running"], 3u);
  EXPECT_EQ(samples["vllm:prompt_tokens_total"], 6u);
  // A forgotten engine's series go with it.
  m.SetEngines({list[0]}, labels);
  text.clear();
  m.Render(text);
  for (const ParsedFamily& f : ParseText(text)) {
    if (f.name == "segma_engine_requests_running") {
      EXPECT_EQ(f.samples.size(), 1u);
    }
  }
}

// promtool accepts the text; the one lint it reports is the camelCase of DCGM's own label names
// (modelName), kept so that dashboards written for dcgm-exporter work unchanged.
TEST(WorkerMetricsTest, PromtoolAcceptsTheExposition) {
  if (std::system("command -v promtool > /dev/null 2>&1") != 0) GTEST_SKIP() << "no promtool";
  WorkerMetrics m("gpu-node-1");
  m.SetStatus(TwoGpus(), {});
  engines::EngineStatus running;
  running.instance_id = 5;
  running.state = engines::EngineState::kRunning;
  m.SetEngines({running}, {{5, Labels("chat-1", "vllm")}});
  m.SetScrape(5, true, RelabelEngineMetrics(kVllmText, Labels("chat-1", "vllm")), 0.002);
  std::string text;
  m.Render(text);
  testing::TempDir dir;
  const std::string file = dir.path() + "/metrics.txt";
  std::ofstream(file) << text;
  const std::string out = dir.path() + "/promtool.txt";
  const int rc = std::system(("promtool check metrics < " + file + " > " + out + " 2>&1").c_str());
  std::ifstream in(out);
  std::string line;
  std::vector<std::string> problems;
  while (std::getline(in, line)) {
    if (line.find("camelCase") != std::string::npos) continue;
    if (line.find("vllm:") != std::string::npos) continue;  // vLLM's own names, as vLLM has them
    problems.push_back(line);
  }
  EXPECT_TRUE(problems.empty()) << "rc " << rc << ": " << testing::ReadFile(out);
}

}  // namespace
}  // namespace segma::worker
