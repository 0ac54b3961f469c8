#include "worker/worker_metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <unordered_map>

#include <fmt/format.h>

#include "metrics/exposition.h"

namespace segma::worker {

namespace {

using metrics::LabelPairs;
using metrics::ParsedFamily;
using metrics::ParsedSample;

constexpr double kMiB = 1024.0 * 1024.0;

enum class Kind { kGauge, kCounter, kHistogram };

// Engine metric → segma_engine_* metric. Several sources of one target are alternatives (other
// backends, older names): the first one an engine has wins.
struct Mapping {
  std::string_view source;
  std::string_view target;
  Kind kind;
  std::string_view help;
};

constexpr std::string_view kRunningHelp = "Requests the engine is running (in its batch)";
constexpr std::string_view kWaitingHelp = "Requests waiting in the engine's queue";
constexpr std::string_view kKvHelp = "Fraction of the engine's KV cache in use (0-1)";
constexpr std::string_view kPromptHelp = "Prompt (prefill) tokens the engine processed";
constexpr std::string_view kGenerationHelp = "Tokens the engine generated";
constexpr std::string_view kTtftHelp = "Time to first token as the engine measures it";
constexpr std::string_view kItlHelp = "Time between output tokens as the engine measures it";
constexpr std::string_view kE2eHelp = "Request latency as the engine measures it";

constexpr Mapping kMappings[] = {
    {"vllm:num_requests_running", "segma_engine_requests_running", Kind::kGauge, kRunningHelp},
    {"sglang:num_running_reqs", "segma_engine_requests_running", Kind::kGauge, kRunningHelp},
    {"llamacpp:requests_processing", "segma_engine_requests_running", Kind::kGauge, kRunningHelp},
    {"vllm:num_requests_waiting", "segma_engine_requests_waiting", Kind::kGauge, kWaitingHelp},
    {"sglang:num_queue_reqs", "segma_engine_requests_waiting", Kind::kGauge, kWaitingHelp},
    {"llamacpp:requests_deferred", "segma_engine_requests_waiting", Kind::kGauge, kWaitingHelp},
    {"vllm:kv_cache_usage_perc", "segma_engine_kv_cache_usage_ratio", Kind::kGauge, kKvHelp},
    {"vllm:gpu_cache_usage_perc", "segma_engine_kv_cache_usage_ratio", Kind::kGauge, kKvHelp},
    {"sglang:token_usage", "segma_engine_kv_cache_usage_ratio", Kind::kGauge, kKvHelp},
    {"llamacpp:kv_cache_usage_ratio", "segma_engine_kv_cache_usage_ratio", Kind::kGauge, kKvHelp},
    {"vllm:prompt_tokens_total", "segma_engine_prompt_tokens_total", Kind::kCounter, kPromptHelp},
    {"sglang:prompt_tokens_total", "segma_engine_prompt_tokens_total", Kind::kCounter, kPromptHelp},
    {"llamacpp:prompt_tokens_total", "segma_engine_prompt_tokens_total", Kind::kCounter,
     kPromptHelp},
    {"vllm:generation_tokens_total", "segma_engine_generation_tokens_total", Kind::kCounter,
     kGenerationHelp},
    {"sglang:generation_tokens_total", "segma_engine_generation_tokens_total", Kind::kCounter,
     kGenerationHelp},
    {"llamacpp:tokens_predicted_total", "segma_engine_generation_tokens_total", Kind::kCounter,
     kGenerationHelp},
    {"vllm:time_to_first_token_seconds", "segma_engine_time_to_first_token_seconds",
     Kind::kHistogram, kTtftHelp},
    {"sglang:time_to_first_token_seconds", "segma_engine_time_to_first_token_seconds",
     Kind::kHistogram, kTtftHelp},
    {"vllm:inter_token_latency_seconds", "segma_engine_inter_token_latency_seconds",
     Kind::kHistogram, kItlHelp},
    {"vllm:time_per_output_token_seconds", "segma_engine_inter_token_latency_seconds",
     Kind::kHistogram, kItlHelp},
    {"sglang:inter_token_latency_seconds", "segma_engine_inter_token_latency_seconds",
     Kind::kHistogram, kItlHelp},
    {"sglang:time_per_output_token_seconds", "segma_engine_inter_token_latency_seconds",
     Kind::kHistogram, kItlHelp},
    {"vllm:e2e_request_latency_seconds", "segma_engine_e2e_request_latency_seconds",
     Kind::kHistogram, kE2eHelp},
    {"sglang:e2e_request_latency_seconds", "segma_engine_e2e_request_latency_seconds",
     Kind::kHistogram, kE2eHelp},
};

LabelPairs EngineLabelPairs(const EngineLabels& l) {
  return {{"deployment", l.deployment},
          {"instance", l.instance},
          {"project", l.project},
          {"backend", l.backend}};
}

bool IsEngineLabel(std::string_view key) {
  return key == "deployment" || key == "instance" || key == "project" || key == "backend";
}

double ParseLe(const std::string& le) {
  if (le == "+Inf" || le == "Inf") return HUGE_VAL;
  return std::strtod(le.c_str(), nullptr);
}

using SampleIndex = std::unordered_map<std::string_view, std::vector<const ParsedSample*>>;

double Sum(const SampleIndex& index, const std::string& name, bool& found) {
  auto it = index.find(name);
  found = it != index.end();
  double total = 0;
  if (found) {
    for (const ParsedSample* s : it->second) total += s->value;
  }
  return total;
}

// Appends the normalised histogram `target` from the samples of `source`; false if none.
bool NormaliseHistogram(const SampleIndex& index, std::string_view source, std::string_view target,
                        const LabelPairs& labels, std::string& out) {
  auto buckets = index.find(std::string(source) + "_bucket");
  if (buckets == index.end()) return false;
  std::map<double, std::pair<std::string, double>> by_le;  // numeric le → (text, count)
  for (const ParsedSample* s : buckets->second) {
    auto le = std::find_if(s->labels.begin(), s->labels.end(),
                           [](const auto& kv) { return kv.first == "le"; });
    if (le == s->labels.end()) continue;
    auto& slot = by_le[ParseLe(le->second)];
    if (slot.first.empty()) slot.first = le->second;
    slot.second += s->value;
  }
  metrics::TextWriter w(out);
  const std::string bucket_name = std::string(target) + "_bucket";
  for (const auto& [value, entry] : by_le) {
    LabelPairs with_le = labels;
    with_le.emplace_back("le", std::isinf(value) ? "+Inf" : entry.first);
    w.Sample(bucket_name, with_le, entry.second);
  }
  bool found = false;
  w.Sample(std::string(target) + "_sum", labels, Sum(index, std::string(source) + "_sum", found));
  w.Sample(std::string(target) + "_count", labels,
           Sum(index, std::string(source) + "_count", found));
  return true;
}

}  // namespace

ScrapedEngine RelabelEngineMetrics(std::string_view text, const EngineLabels& labels) {
  const std::vector<ParsedFamily> families = metrics::ParseText(text);
  const LabelPairs ours = EngineLabelPairs(labels);
  ScrapedEngine out;
  SampleIndex index;
  for (const ParsedFamily& f : families) {
    for (const ParsedSample& s : f.samples) index[s.name].push_back(&s);
  }
  // Normalised.
  for (const Mapping& m : kMappings) {
    if (out.contains(m.target)) continue;  // an earlier alternative was there
    std::string samples;
    if (m.kind == Kind::kHistogram) {
      if (!NormaliseHistogram(index, m.source, m.target, ours, samples)) continue;
    } else {
      bool found = false;
      const double v = Sum(index, std::string(m.source), found);
      if (!found) continue;
      metrics::TextWriter(samples).Sample(m.target, ours, v);
    }
    const std::string_view type = m.kind == Kind::kGauge     ? "gauge"
                                  : m.kind == Kind::kCounter ? "counter"
                                                             : "histogram";
    // A counter family is named without _total in the text format's TYPE line only by
    // OpenMetrics; Prometheus' 0.0.4 parser accepts the sample name, as prometheus-cpp writes it.
    out.emplace(std::string(m.target),
                ScrapedFamily{std::string(type), std::string(m.help), std::move(samples)});
  }
  // Raw, with our labels added.
  for (const ParsedFamily& f : families) {
    if (f.name.starts_with("segma_")) continue;  // never let an engine write our names
    ScrapedFamily& raw = out[f.name];
    if (raw.type.empty()) {
      raw.type = f.type;
      raw.help = f.help;
    }
    metrics::TextWriter w(raw.samples);
    for (const ParsedSample& s : f.samples) {
      LabelPairs merged;
      merged.reserve(s.labels.size() + ours.size());
      for (const auto& kv : s.labels) {
        if (!IsEngineLabel(kv.first)) merged.push_back(kv);
      }
      merged.insert(merged.end(), ours.begin(), ours.end());
      w.Sample(s.name, merged, s.value);
    }
  }
  return out;
}

void WorkerMetrics::SetStatus(types::WorkerStatus status, std::map<int, int64_t> claimed) {
  std::lock_guard lock(mu_);
  status_ = std::move(status);
  claimed_ = std::move(claimed);
}

void WorkerMetrics::SetEngines(std::vector<engines::EngineStatus> engines,
                               std::map<int64_t, EngineLabels> labels) {
  std::lock_guard lock(mu_);
  engines_ = std::move(engines);
  labels_ = std::move(labels);
  for (auto it = scrapes_.begin(); it != scrapes_.end();) {
    const bool known =
        std::any_of(engines_.begin(), engines_.end(),
                    [&](const engines::EngineStatus& e) { return e.instance_id == it->first; });
    it = known ? std::next(it) : scrapes_.erase(it);
  }
}

void WorkerMetrics::SetScrape(int64_t instance_id, bool ok, ScrapedEngine families,
                              double seconds) {
  std::lock_guard lock(mu_);
  Scrape& s = scrapes_[instance_id];
  s.ok = ok;
  s.seconds = seconds;
  s.families = ok ? std::move(families) : ScrapedEngine{};
}

void WorkerMetrics::Render(std::string& out) const {
  std::lock_guard lock(mu_);
  metrics::TextWriter w(out);

  // ---- GPUs, as dcgm-exporter names them (its default counters) ----
  std::vector<LabelPairs> gpu_labels;
  gpu_labels.reserve(status_.gpus.size());
  for (const types::GpuDevice& g : status_.gpus) {
    const int gpu = g.parent_index.value_or(g.index);
    LabelPairs l{{"gpu", std::to_string(gpu)},
                 {"UUID", g.uuid},
                 {"device", fmt::format("nvidia{}", gpu)},
                 {"modelName", g.name},
                 {"Hostname", hostname_}};
    if (!g.mig_profile.empty()) l.emplace_back("GPU_I_PROFILE", g.mig_profile);
    gpu_labels.push_back(std::move(l));
  }
  struct GpuFamily {
    std::string_view name;
    std::string_view type;
    std::string_view help;
    double (*value)(const types::GpuDevice&, int64_t claimed);
  };
  static constexpr GpuFamily kGpuFamilies[] = {
      {"DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).",
       [](const types::GpuDevice& g, int64_t) { return g.utilization; }},
      {"DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).",
       [](const types::GpuDevice& g, int64_t) {
         return std::round(static_cast<double>(g.memory_used) / kMiB);
       }},
      {"DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).",
       [](const types::GpuDevice& g, int64_t) {
         return std::round(static_cast<double>(g.memory_total - g.memory_used) / kMiB);
       }},
      {"DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).",
       [](const types::GpuDevice& g, int64_t) { return g.temperature; }},
      {"DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).",
       [](const types::GpuDevice& g, int64_t) { return g.power; }},
      {"DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).",
       [](const types::GpuDevice& g, int64_t) { return g.sm_clock; }},
      {"DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).",
       [](const types::GpuDevice& g, int64_t) { return g.memory_clock; }},
      {"segma_worker_gpu_memory_total_bytes", "gauge", "Memory of the GPU",
       [](const types::GpuDevice& g, int64_t) { return static_cast<double>(g.memory_total); }},
      {"segma_worker_gpu_vram_claimed_bytes", "gauge",
       "VRAM the engines segma placed on this GPU claim",
       [](const types::GpuDevice&, int64_t claimed) { return static_cast<double>(claimed); }},
      {"segma_worker_gpu_vram_external_bytes", "gauge",
       "VRAM used by processes segma does not manage",
       [](const types::GpuDevice& g, int64_t) {
         return static_cast<double>(g.memory_used_external);
       }},
      {"segma_worker_gpu_power_limit_watts", "gauge", "Enforced power limit of the GPU",
       [](const types::GpuDevice& g, int64_t) { return g.power_limit; }},
  };
  if (!status_.gpus.empty()) {
    for (const GpuFamily& f : kGpuFamilies) {
      w.Family(f.name, f.type, f.help);
      for (size_t i = 0; i < status_.gpus.size(); ++i) {
        const types::GpuDevice& g = status_.gpus[i];
        auto claimed = claimed_.find(g.index);
        w.Sample(f.name, gpu_labels[i],
                 f.value(g, claimed == claimed_.end() ? 0 : claimed->second));
      }
    }
  }

  // ---- the host ----
  const LabelPairs host{{"Hostname", hostname_}};
  w.Family("segma_worker_info", "gauge",
           "Always 1: the worker and where its GPU numbers come from");
  w.Sample("segma_worker_info",
           {{"Hostname", hostname_},
            {"gpu_source", status_.gpu_source},
            {"driver_version", status_.driver_version}},
           1);
  w.Family("segma_worker_gpus", "gauge", "GPUs (and MIG devices) the worker reports");
  w.Sample("segma_worker_gpus", host, static_cast<double>(status_.gpus.size()));
  w.Family("segma_worker_disk_total_bytes", "gauge", "Size of the file system of the data dir");
  w.Sample("segma_worker_disk_total_bytes", host, static_cast<double>(status_.disk_total));
  w.Family("segma_worker_disk_used_bytes", "gauge",
           "Used space of the file system of the data dir");
  w.Sample("segma_worker_disk_used_bytes", host, static_cast<double>(status_.disk_used));
  w.Family("segma_worker_memory_total_bytes", "gauge", "Host memory");
  w.Sample("segma_worker_memory_total_bytes", host, static_cast<double>(status_.memory_total));
  w.Family("segma_worker_memory_used_bytes", "gauge", "Host memory in use");
  w.Sample("segma_worker_memory_used_bytes", host, static_cast<double>(status_.memory_used));
  w.Family("segma_worker_cpu_utilization_ratio", "gauge", "Host CPU utilization (0-1)");
  w.Sample("segma_worker_cpu_utilization_ratio", host, status_.cpu_utilization / 100);

  // ---- engines ----
  std::map<std::string_view, int> by_state{{"STARTING", 0}, {"RUNNING", 0}, {"ERROR", 0}};
  for (const engines::EngineStatus& e : engines_) ++by_state[engines::EngineStateName(e.state)];
  w.Family("segma_worker_engines", "gauge", "Engine processes on this worker, by state");
  for (const auto& [state, n] : by_state) {
    w.Sample("segma_worker_engines", {{"Hostname", hostname_}, {"state", std::string(state)}}, n);
  }
  const auto labels_of = [this](int64_t id) {
    auto it = labels_.find(id);
    if (it != labels_.end()) return EngineLabelPairs(it->second);
    EngineLabels anonymous;
    anonymous.instance =
        id > 0 ? fmt::format("instance-{}", id) : fmt::format("rpc-server-{}", -id);
    return EngineLabelPairs(anonymous);
  };
  w.Family("segma_engine_restarts_total", "counter",
           "Times the worker restarted the engine after it failed");
  for (const engines::EngineStatus& e : engines_) {
    w.Sample("segma_engine_restarts_total", labels_of(e.instance_id), e.restart_count);
  }
  w.Family("segma_engine_state", "gauge", "1 for the engine's current state");
  for (const engines::EngineStatus& e : engines_) {
    LabelPairs l = labels_of(e.instance_id);
    l.emplace_back("state", std::string(engines::EngineStateName(e.state)));
    w.Sample("segma_engine_state", l, 1);
  }
  w.Family("segma_engine_up", "gauge", "1 if the last scrape of the engine's metrics succeeded");
  for (const auto& [id, s] : scrapes_) w.Sample("segma_engine_up", labels_of(id), s.ok ? 1 : 0);
  w.Family("segma_engine_scrape_duration_seconds", "gauge",
           "How long the last scrape of the engine's metrics took");
  for (const auto& [id, s] : scrapes_) {
    w.Sample("segma_engine_scrape_duration_seconds", labels_of(id), s.seconds);
  }

  // ---- enforced slices (libsegma-vgpu's accounting), per engine and GPU ----
  struct SliceFamily {
    std::string_view name;
    std::string_view type;
    std::string_view help;
    int64_t types::GpuSlice::*value;
  };
  static constexpr SliceFamily kSliceFamilies[] = {
      {"segma_engine_vram_limit_bytes", "gauge",
       "VRAM limit libsegma-vgpu holds the engine to on the GPU (its claim)",
       &types::GpuSlice::memory_limit},
      {"segma_engine_vram_used_bytes", "gauge",
       "Device memory the engine's processes hold against its limit",
       &types::GpuSlice::memory_used},
      {"segma_engine_vram_limit_hits_total", "counter",
       "Device memory allocations the limit refused (CUDA_ERROR_OUT_OF_MEMORY)",
       &types::GpuSlice::limit_hits},
  };
  for (const SliceFamily& f : kSliceFamilies) {
    w.Family(f.name, f.type, f.help);
    for (size_t i = 0; i < status_.gpus.size(); ++i) {
      for (const types::GpuSlice& slice : status_.gpus[i].slices) {
        LabelPairs l = labels_of(slice.instance_id);
        l.emplace_back("gpu", gpu_labels[i][0].second);
        l.emplace_back("UUID", status_.gpus[i].uuid);
        w.Sample(f.name, l, static_cast<double>(slice.*f.value));
      }
    }
  }

  // ---- the engines' own series: each family once, with every engine's samples ----
  std::map<std::string_view, std::vector<const ScrapedFamily*>> families;
  size_t bytes = 0;
  for (const auto& [id, s] : scrapes_) {
    for (const auto& [name, f] : s.families) {
      families[name].push_back(&f);
      bytes += f.samples.size();
    }
  }
  out.reserve(out.size() + bytes + families.size() * 256);
  for (const auto& [name, parts] : families) {
    w.Family(name, parts.front()->type, parts.front()->help);
    for (const ScrapedFamily* f : parts) out += f->samples;
  }
}

}  // namespace segma::worker
