#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include "http/client.h"
#include "http/router.h"
#include "http/server.h"
#include "metrics/registry.h"
#include "worker/gpu/gpu_probe.h"
#include "worker/gpu/host_probe.h"
#include "worker/instance_manager.h"
#include "worker/worker_metrics.h"

namespace segma::worker {

struct AgentConfig {
  std::string server_url;          // http://host:port of the segma server
  std::string registration_token;  // the cluster's registration token
  std::string name;                // unique in the cluster; default: the host name
  std::string data_dir = "./worker-data";
  std::string listen_address = "0.0.0.0";
  std::string advertise_address;  // how the server reaches us; default: what it sees
  uint16_t port = 10150;          // the worker's own HTTP port (0 = any)
  std::chrono::milliseconds heartbeat_interval{10'000};
  std::map<std::string, std::string> labels;
  // Engines: where their executables are per backend ("llama.cpp" → llama.cpp's build/bin), and
  // the port range for them.
  std::map<std::string, std::string> engine_binary_dirs;
  int engine_port_min = 40000;
  int engine_port_max = 40999;
  // From an engine's start to its first healthy answer; longer is an ERROR (then a restart).
  std::chrono::seconds engine_ready_timeout{600};
  // Where engines listen and the gateway reaches them.
  std::string engine_host = "127.0.0.1";
  // How often the worker scrapes the /metrics of its RUNNING engines (re-exported on its own
  // /metrics); 0: never.
  std::chrono::milliseconds engine_metrics_interval{10'000};
  // Liveness of RUNNING engines (engines::SupervisorOptions): period, timeout of each request,
  // failed checks in a row that make an engine hung (0: no liveness checks).
  std::chrono::milliseconds engine_liveness_period{2000};
  std::chrono::milliseconds engine_liveness_timeout{2000};
  int engine_liveness_failures = 3;
  // The guard started with each engine ({"/path/to/segma", "engine-guard"}; empty: none) and how
  // long an engine may stay without a live worker before it stops itself.
  std::vector<std::string> engine_guard_command;
  std::chrono::milliseconds engine_orphan_grace{std::chrono::minutes(5)};
  // Model files: cache directory ("" = <data_dir>/models), hub endpoints and tokens, CA file,
  // parallel downloads.
  models::DownloaderConfig downloads;
};

// The agent on a GPU node: registers with the server (cluster token → its own worker token),
// sends heartbeats with host and GPU status, re-registers when the server forgets it, and serves
// /healthz and /metrics on its own port. /metrics has the GPUs (DCGM names), the engines and the
// engines' own metrics, scraped every engine_metrics_interval (worker_metrics.h), all from the
// latest heartbeat and scrape: a Prometheus scrape costs no probe and no engine request.
// Runs on the given io_context; Start/Stop from any thread. Must outlive the io_context's run().
class WorkerAgent {
 public:
  WorkerAgent(boost::asio::io_context& ioc, AgentConfig config,
              std::unique_ptr<gpu::GpuProbe> gpu_probe, metrics::Registry& registry);
  ~WorkerAgent();

  // Binds the worker port, creates the engine supervisor and starts the register/heartbeat loop
  // and the instance follower. Returns the bound port.
  Result<uint16_t> Start();
  // Stops the loops; engines keep running for the next worker process to adopt unless
  // `stop_engines`.
  void Stop(bool stop_engines = false);

  int64_t worker_id() const { return worker_id_.load(); }
  gpu::GpuProbe& gpu_probe() { return *gpu_probe_; }

 private:
  boost::asio::awaitable<void> Loop();
  boost::asio::awaitable<Status> Register();
  boost::asio::awaitable<Status> SendHeartbeat();
  http::Response ServeLog(http::RequestContext& ctx);
  // The engines and their labels, for the metrics; the VRAM they claim per GPU index.
  std::map<int, int64_t> UpdateEngineMetrics();
  boost::asio::awaitable<void> ScrapeEngines();

  boost::asio::io_context& ioc_;
  AgentConfig config_;
  std::unique_ptr<gpu::GpuProbe> gpu_probe_;
  gpu::HostProbe host_probe_;
  metrics::Registry& registry_;
  WorkerMetrics metrics_;
  boost::asio::thread_pool probe_pool_{1};  // NVML and /proc reads block
  std::unique_ptr<InstanceManager> instances_;
  http::HttpClient client_;
  http::Router router_;
  std::unique_ptr<http::HttpServer> server_;
  std::string worker_token_;
  std::mutex proxy_mu_;
  std::string proxy_token_;  // what the server presents here; GUARDED_BY(proxy_mu_)
  std::atomic<int64_t> worker_id_{0};
  std::atomic<bool> stopping_{false};
  uint16_t bound_port_ = 0;
};

// The body of `POST /v2/workers` (registration) for this worker listening on `port`.
json::object RegistrationBody(const AgentConfig& config, uint16_t port);

// Picks the GPU inventory: `fake_spec` when given; else NVML when a driver is present; else the
// documented demo pool when `demo_fallback` (segma start), else no GPUs. Logs which.
// kInvalidArgument for a bad fake spec.
Result<std::unique_ptr<gpu::GpuProbe>> MakeGpuProbe(const std::string& fake_spec,
                                                    bool demo_fallback, const std::string& seed);

}  // namespace segma::worker
