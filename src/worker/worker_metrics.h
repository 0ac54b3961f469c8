#pragma once

// What a worker's /metrics says beyond HTTP counters (docs/observability.md has the reference):
//  - per GPU, the DCGM exporter's names and labels (DCGM_FI_DEV_GPU_UTIL, _FB_USED, _FB_FREE,
//    _GPU_TEMP, _POWER_USAGE, _SM_CLOCK, _MEM_CLOCK with gpu, UUID, device, modelName, Hostname),
//    so dashboards and alerts written for dcgm-exporter work unchanged;
//  - segma's own: VRAM claimed per GPU, VRAM used outside segma, engines by state, restarts;
//  - each RUNNING engine's own metrics, scraped by the worker: normalised as segma_engine_*
//    (whatever the backend) and raw (llamacpp:*, vllm:*, sglang:*), both with the engine's
//    deployment, instance, project and backend labels.

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "types/worker.h"
#include "worker/engines/backend.h"
#include "worker/engines/supervisor.h"

namespace segma::worker {

// Who an engine is, for the labels of its series.
struct EngineLabels {
  std::string instance;    // the instance's name ("chat-x7k2")
  std::string deployment;  // the model's name
  std::string project;     // the project id, as a string
  std::string backend;     // "vllm", "llama.cpp", "sglang", "simulator", ...
  engines::MetricsFormat format = engines::MetricsFormat::kNone;
};

// One family of an engine's scraped metrics, rewritten with the engine's labels: its sample
// lines, ready to be concatenated with the same family of other engines.
struct ScrapedFamily {
  std::string type;
  std::string help;
  std::string samples;
};
// An engine's families by name: the segma_engine_* ones and the raw ones.
using ScrapedEngine = std::map<std::string, ScrapedFamily, std::less<>>;

// Rewrites one engine's /metrics text (the pure part of scraping). Normalised families: the
// engine's samples of a known name summed over its own labels (histograms keep `le`), renamed
// to segma_engine_requests_running, _requests_waiting, _kv_cache_usage_ratio (0-1),
// _prompt_tokens_total, _generation_tokens_total, and the histograms
// segma_engine_time_to_first_token_seconds, _inter_token_latency_seconds and
// _e2e_request_latency_seconds where the engine has them. Raw families: every family as the
// engine wrote it, with the labels of `labels` added (replacing the engine's labels of the same
// names). Unparseable lines are skipped.
ScrapedEngine RelabelEngineMetrics(std::string_view text, const EngineLabels& labels);

// The state a worker's metrics are written from; the agent updates each part as it learns it
// (GPUs at every heartbeat, engines' metrics at every scrape) and /metrics renders the latest.
// Thread-safe.
class WorkerMetrics {
 public:
  explicit WorkerMetrics(std::string hostname) : hostname_(std::move(hostname)) {}

  // The latest probe (host and GPUs) and the VRAM segma's engines claim per GPU index.
  void SetStatus(types::WorkerStatus status, std::map<int, int64_t> claimed);
  // The supervisor's engines with their labels (engines without labels are labelled by id).
  void SetEngines(std::vector<engines::EngineStatus> engines,
                  std::map<int64_t, EngineLabels> labels);
  // One engine's scrape: its families (RelabelEngineMetrics), or `ok` false when the scrape
  // failed (its families are dropped). Engines not in the last SetEngines() are forgotten.
  void SetScrape(int64_t instance_id, bool ok, ScrapedEngine families, double seconds);

  // Appends every family in the text format (for metrics::Registry::AddCollector).
  void Render(std::string& out) const;

 private:
  struct Scrape {
    bool ok = false;
    double seconds = 0;
    ScrapedEngine families;
  };
  const std::string hostname_;
  mutable std::mutex mu_;
  types::WorkerStatus status_;                  // guarded by mu_
  std::map<int, int64_t> claimed_;              // guarded by mu_
  std::vector<engines::EngineStatus> engines_;  // guarded by mu_
  std::map<int64_t, EngineLabels> labels_;      // guarded by mu_
  std::map<int64_t, Scrape> scrapes_;           // guarded by mu_
};

}  // namespace segma::worker
