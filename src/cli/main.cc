// segma: one binary; main only parses flags and wires objects together.

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "api/demo.h"
#include "api/embedded_worker.h"
#include "api/server_app.h"
#include "cli/bench_commands.h"
#include "cli/ctl.h"
#include "cli/sim_commands.h"
#include "common/cidr.h"
#include "common/json.h"
#include "common/logging.h"
#include "gateway/replica.h"
#include "http/io_loop.h"
#include "store/sqlite/sqlite_store.h"
#include "worker/agent.h"
#include "worker/drain.h"
#include "worker/engines/engine_guard.h"
#include "worker/gpu/fake_gpu_probe.h"
#include "worker/gpu/host_probe.h"

namespace {

using segma::Logger;

struct Flags {
  std::string data_dir;
  std::string address = "0.0.0.0";
  uint16_t port = 8080;
  int heartbeat_grace_s = 60;
  int reschedule_grace_s = 300;
  int min_useful_sequences = 8;
  std::string gateway_routing = "affinity";
  std::string metrics_token_file;
  // worker
  std::string server_url;
  std::string token;
  std::string worker_name;
  std::string advertise_address;
  std::string fake_gpus;
  double heartbeat_interval_s = 10;
  double engine_metrics_interval_s = 10;
  int engine_ready_timeout_s = 600;
  double engine_liveness_period_s = 2;
  double engine_liveness_timeout_s = 2;
  int engine_liveness_failures = 3;
  double engine_orphan_grace_s = 300;
  bool keep_engines = false;  // start only
  bool drain = false;         // worker only
  std::vector<std::string> labels;
  std::vector<std::string> engine_dirs;
  bool no_demo = false;  // start only
  int io_threads = 0;    // server/start/gateway; 0: one per core this process may run on
  int busy_poll_us = 0;  // off unless the HTTP threads have cores of their own
  // The gateway's usage journal (server/start/gateway; ADR 0024, 0025)
  bool usage_journal = true;
  int usage_fsync_ms = 100;
  std::string usage_journal_full = "serve";
  int audit_retention_days = 0;  // server/start
  std::string trusted_proxies;   // server/start/gateway: CIDR,...
  // model files
  std::string model_cache_dir;
  std::string hf_endpoint = "https://huggingface.co";
  std::string hf_token;
  std::string modelscope_endpoint = "https://www.modelscope.cn";
  std::string modelscope_token;
  std::string ca_file;
  int max_parallel_downloads = 4;
};

// The HTTP serving threads of server, start and gateway.
void AddIoFlags(CLI::App* cmd, Flags& f) {
  cmd->add_option("--io-threads", f.io_threads,
                  "Threads serving HTTP (API and gateway); 0: one per core the process may run "
                  "on (its CPU affinity), like nginx's worker_processes auto")
      ->envname("SEGMA_IO_THREADS")
      ->check(CLI::Range(0, 256))
      ->capture_default_str();
  cmd->add_option("--busy-poll-us", f.busy_poll_us,
                  "Microseconds an HTTP thread keeps polling after its work before it sleeps, "
                  "sparing a wake-up per request; only for HTTP threads with cores of their own "
                  "(it takes CPU from anything sharing them; ADR 0018). 0: off")
      ->envname("SEGMA_BUSY_POLL_US")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
}

// The proxies in front (an ADC, nginx) whose forwarding headers are believed: server, start and
// gateway (docs/security.md "Behind an ADC or reverse proxy").
void AddTrustedProxiesFlag(CLI::App* cmd, Flags& f) {
  cmd->add_option("--trusted-proxies", f.trusted_proxies,
                  "CIDR,... of the load balancers or reverse proxies in front: only from these "
                  "peers are X-Forwarded-For, Forwarded and X-Forwarded-Proto believed; the client "
                  "address found (logs, audit, sign-in limits, key allow-lists) is the first one "
                  "from the right outside these ranges. Default: none (the peer is the client)")
      ->envname("SEGMA_TRUSTED_PROXIES");
}

// --trusted-proxies as a set, or exits with the parse error.
segma::CidrSet TrustedProxiesOrDie(const Flags& f) {
  segma::Result<segma::CidrSet> set = segma::CidrSet::ParseList(f.trusted_proxies);
  if (!set.ok()) {
    std::cerr << "segma: --trusted-proxies: " << set.status().message() << "\n";
    std::exit(2);
  }
  return *set;
}

// The usage journal of the gateway in server, start and gateway.
void AddUsageJournalFlags(CLI::App* cmd, Flags& f) {
  cmd->add_flag("--usage-journal,!--no-usage-journal", f.usage_journal,
                "Append each usage record to <data-dir>/usage-journal before the response ends, "
                "so that a crash loses no billing (ADR 0024)")
      ->envname("SEGMA_USAGE_JOURNAL")
      ->capture_default_str();
  cmd->add_option("--usage-fsync-ms", f.usage_fsync_ms,
                  "Milliseconds between fsyncs of the usage journal: what a power loss can lose")
      ->envname("SEGMA_USAGE_FSYNC_MS")
      ->check(CLI::Range(1, 60000))
      ->capture_default_str();
  cmd->add_option("--usage-journal-full", f.usage_journal_full,
                  "While the usage journal cannot be written (disk full): serve (records kept in "
                  "memory only) or refuse (503) (ADR 0025)")
      ->envname("SEGMA_USAGE_JOURNAL_FULL")
      ->check(CLI::IsMember({"serve", "refuse"}))
      ->capture_default_str();
}

void AddServerFlags(CLI::App* cmd, Flags& f, uint16_t default_port) {
  f.port = default_port;
  cmd->add_option("--data-dir", f.data_dir, "State directory (database, keys)")
      ->envname("SEGMA_DATA_DIR");
  cmd->add_option("--address", f.address, "Listen address")->envname("SEGMA_ADDRESS");
  cmd->add_option("--port", f.port, "Listen port")->envname("SEGMA_PORT");
  cmd->add_option("--heartbeat-grace", f.heartbeat_grace_s,
                  "Seconds without heartbeat before a worker is NOT_READY")
      ->envname("SEGMA_HEARTBEAT_GRACE")
      ->check(CLI::Range(1, 86400));
  cmd->add_option("--reschedule-grace", f.reschedule_grace_s,
                  "Seconds a worker stays NOT_READY before its instances move elsewhere")
      ->envname("SEGMA_RESCHEDULE_GRACE")
      ->check(CLI::Range(1, 86400));
  cmd->add_option("--audit-retention-days", f.audit_retention_days,
                  "Days the audit trail keeps its records (older ones are pruned hourly; the "
                  "chain still verifies); 0: forever")
      ->envname("SEGMA_AUDIT_RETENTION_DAYS")
      ->check(CLI::Range(0, 36500))
      ->capture_default_str();
  cmd->add_option("--min-useful-sequences", f.min_useful_sequences,
                  "Warn when a placement's claim serves fewer concurrent sequences than this")
      ->envname("SEGMA_MIN_USEFUL_SEQUENCES")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--gateway-routing", f.gateway_routing,
                  "Replica choice: affinity (session/prefix, then least outstanding), "
                  "least-outstanding, round-robin")
      ->envname("SEGMA_GATEWAY_ROUTING")
      ->check(CLI::IsMember({"affinity", "least-outstanding", "round-robin"}))
      ->capture_default_str();
  cmd->add_option("--metrics-token-file", f.metrics_token_file,
                  "File with the token Prometheus presents to GET /v2/metrics/targets (mode "
                  "600; created with a random token when missing). Default: "
                  "<data-dir>/metrics_token")
      ->envname("SEGMA_METRICS_TOKEN_FILE");
  AddIoFlags(cmd, f);
  AddUsageJournalFlags(cmd, f);
  AddTrustedProxiesFlag(cmd, f);
}

void AddWorkerFlags(CLI::App* cmd, Flags& f, bool standalone) {
  if (standalone) {
    cmd->add_option("--server", f.server_url, "Server URL, e.g. http://10.0.0.1:8080")
        ->envname("SEGMA_SERVER")
        ->required();
    cmd->add_option("--token", f.token, "The cluster's registration token")
        ->envname("SEGMA_TOKEN")
        ->required();
    cmd->add_option("--data-dir", f.data_dir, "Worker state directory")->envname("SEGMA_DATA_DIR");
    cmd->add_option("--port", f.port, "Worker port")->envname("SEGMA_PORT");
    cmd->add_option("--address", f.address, "Listen address")->envname("SEGMA_ADDRESS");
    cmd->add_option("--advertise-address", f.advertise_address,
                    "Address the server reaches this worker at")
        ->envname("SEGMA_ADVERTISE_ADDRESS");
  }
  cmd->add_option("--name", f.worker_name, "Worker name (default: host name)")
      ->envname("SEGMA_WORKER_NAME");
  cmd->add_option("--fake-gpus", f.fake_gpus,
                  "Simulated GPUs: COUNTxNAME:GiB,... e.g. 4xH200-NVL:141,2xRTX-PRO-6000:96")
      ->envname("SEGMA_FAKE_GPUS");
  cmd->add_option("--heartbeat-interval", f.heartbeat_interval_s, "Seconds between heartbeats")
      ->envname("SEGMA_HEARTBEAT_INTERVAL")
      ->check(CLI::Range(0.05, 3600.0));
  cmd->add_option("--engine-metrics-interval", f.engine_metrics_interval_s,
                  "Seconds between scrapes of the engines' own /metrics (re-exported on the "
                  "worker's /metrics); 0: never")
      ->envname("SEGMA_ENGINE_METRICS_INTERVAL")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  cmd->add_option("--label", f.labels, "Worker label k=v (repeatable)")->envname("SEGMA_LABELS");
  cmd->add_option("--engine-ready-timeout", f.engine_ready_timeout_s,
                  "Seconds an engine may take from start to its first healthy answer before it is "
                  "an ERROR (and restarted)")
      ->envname("SEGMA_ENGINE_READY_TIMEOUT")
      ->check(CLI::Range(1, 86400));
  cmd->add_option("--engine-liveness-period", f.engine_liveness_period_s,
                  "Seconds between liveness checks of a RUNNING engine (its health path, GET "
                  "/v1/models, and that the port's listener is the engine's)")
      ->envname("SEGMA_ENGINE_LIVENESS_PERIOD")
      ->check(CLI::Range(0.05, 3600.0))
      ->capture_default_str();
  cmd->add_option("--engine-liveness-timeout", f.engine_liveness_timeout_s,
                  "Seconds each request of a liveness check may take")
      ->envname("SEGMA_ENGINE_LIVENESS_TIMEOUT")
      ->check(CLI::Range(0.05, 3600.0))
      ->capture_default_str();
  cmd->add_option("--engine-liveness-failures", f.engine_liveness_failures,
                  "Failed liveness checks in a row after which an engine is hung: out of rotation, "
                  "stopped and restarted with the backoff (0: no liveness checks)")
      ->envname("SEGMA_ENGINE_LIVENESS_FAILURES")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  cmd->add_option("--engine-orphan-grace", f.engine_orphan_grace_s,
                  "Seconds an engine keeps running without a live worker process (for a "
                  "restarted worker to adopt it) before its guard stops it")
      ->envname("SEGMA_ENGINE_ORPHAN_GRACE")
      ->check(CLI::Range(0.05, 30.0 * 86400))
      ->capture_default_str();
  cmd->add_option("--engine-dir", f.engine_dirs,
                  "Directory of a backend's executables, BACKEND=DIR (repeatable), e.g. "
                  "llama.cpp=/opt/llama.cpp/bin")
      ->envname("SEGMA_ENGINE_DIRS");
  cmd->add_option("--model-cache-dir", f.model_cache_dir,
                  "Directory of downloaded model files, shareable by workers over NFS "
                  "(default: <data-dir>/models)")
      ->envname("SEGMA_MODEL_CACHE_DIR");
  cmd->add_option("--hf-endpoint", f.hf_endpoint,
                  "Hugging Face endpoint, or an internal mirror with the same URL layout")
      ->envname("HF_ENDPOINT");
  cmd->add_option("--hf-token", f.hf_token, "Hugging Face token for private or gated repositories")
      ->envname("HF_TOKEN");
  cmd->add_option("--modelscope-endpoint", f.modelscope_endpoint,
                  "ModelScope endpoint, or an internal mirror with the same URL layout")
      ->envname("MODELSCOPE_ENDPOINT");
  cmd->add_option("--modelscope-token", f.modelscope_token, "ModelScope access token")
      ->envname("MODELSCOPE_API_TOKEN");
  cmd->add_option("--ca-file", f.ca_file,
                  "PEM file of CA certificates trusted for HTTPS besides the system store")
      ->envname("SEGMA_CA_FILE");
  cmd->add_option("--max-parallel-downloads", f.max_parallel_downloads,
                  "Model files downloaded at once on this worker")
      ->envname("SEGMA_MAX_PARALLEL_DOWNLOADS")
      ->check(CLI::Range(1, 64));
}

segma::Result<std::map<std::string, std::string>> ParseLabels(const std::vector<std::string>& kvs) {
  std::map<std::string, std::string> out;
  for (const std::string& kv : kvs) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return segma::InvalidArgumentError("labels are k=v, got '" + kv + "'");
    }
    out[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return out;
}

segma::worker::AgentConfig AgentConfigFrom(const Flags& f) {
  segma::worker::AgentConfig c;
  c.server_url = f.server_url;
  c.registration_token = f.token;
  c.name = f.worker_name;
  c.data_dir = f.data_dir.empty() ? "./worker-data" : f.data_dir;
  c.listen_address = f.address;
  c.advertise_address = f.advertise_address;
  // Engines (and llama.cpp's rpc-servers) must be reachable where the worker is: on every
  // interface unless the worker itself only listens on loopback (`segma start`'s own worker).
  const bool loopback =
      f.address.starts_with("127.") || f.address == "::1" || f.address == "localhost";
  c.engine_host = loopback ? f.address : "0.0.0.0";
  c.port = f.port;
  c.heartbeat_interval =
      std::chrono::milliseconds(static_cast<int64_t>(f.heartbeat_interval_s * 1000));
  c.engine_ready_timeout = std::chrono::seconds(f.engine_ready_timeout_s);
  auto ms = [](double s) { return std::chrono::milliseconds(static_cast<int64_t>(s * 1000)); };
  c.engine_metrics_interval = ms(f.engine_metrics_interval_s);
  c.engine_liveness_period = ms(f.engine_liveness_period_s);
  c.engine_liveness_timeout = ms(f.engine_liveness_timeout_s);
  c.engine_liveness_failures = f.engine_liveness_failures;
  c.engine_orphan_grace = ms(f.engine_orphan_grace_s);
  // Each engine's guard is this very binary (docs/adr/0030-engine-guard.md).
  std::error_code self_ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", self_ec);
  if (!self_ec) c.engine_guard_command = {self.string(), "engine-guard"};
  // llama.cpp as `scripts/build-llama` caches it, unless told otherwise.
  const std::string cached_llama = "/var/cache/segma/llama.cpp-3.21.1/build/bin";
  if (std::filesystem::exists(cached_llama + "/llama-server")) {
    c.engine_binary_dirs["llama.cpp"] = cached_llama;
  }
  c.downloads.cache_dir = f.model_cache_dir;
  // "https://hf-mirror.internal/" and "https://hf-mirror.internal" name the same endpoint.
  auto trim = [](std::string s) {
    while (!s.empty() && s.back() == '/') s.pop_back();
    return s;
  };
  c.downloads.huggingface = {trim(f.hf_endpoint), f.hf_token};
  c.downloads.modelscope = {trim(f.modelscope_endpoint), f.modelscope_token};
  c.downloads.tls.ca_file = f.ca_file;
  c.downloads.max_parallel_files = f.max_parallel_downloads;
  for (const std::string& kv : f.engine_dirs) {
    size_t eq = kv.find('=');
    if (eq != std::string::npos) c.engine_binary_dirs[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return c;
}

// Cores this process may run on (its CPU affinity, e.g. under taskset), at least 1.
int UsableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

int Die(const segma::Status& s) {
  std::cerr << "segma: " << s.ToString() << "\n";
  return 1;
}

// segma server / segma start (with_worker).
int RunServer(const Flags& f, bool with_worker) {
  segma::api::ServerConfig config;
  config.data_dir = f.data_dir.empty() ? "./data" : f.data_dir;
  config.address = f.address;
  config.port = f.port;
  config.heartbeat_grace = std::chrono::seconds(f.heartbeat_grace_s);
  config.reschedule_grace = std::chrono::seconds(f.reschedule_grace_s);
  config.min_useful_sequences = f.min_useful_sequences;
  config.audit_retention_days = f.audit_retention_days;
  config.http.trusted_proxies = TrustedProxiesOrDie(f);
  config.io_threads = f.io_threads > 0 ? f.io_threads : UsableCores();
  config.busy_poll = std::chrono::microseconds(f.busy_poll_us);
  config.metrics_token_file = f.metrics_token_file;
  config.routing_policy = segma::gateway::ParseRoutingPolicy(f.gateway_routing)
                              .value_or(segma::gateway::RoutingPolicy::kAffinity);
  config.usage_journal = f.usage_journal;
  config.usage_fsync_interval = std::chrono::milliseconds(f.usage_fsync_ms);
  config.usage_journal_failure = segma::gateway::ParseJournalFailurePolicy(f.usage_journal_full)
                                     .value_or(segma::gateway::JournalFailurePolicy::kServe);
  if (const char* pw = std::getenv("SEGMA_BOOTSTRAP_PASSWORD"); pw != nullptr && *pw != '\0') {
    config.bootstrap_password = pw;
  }
  auto app = segma::api::ServerApp::Create(config);
  if (!app.ok()) return Die(app.status());
  segma::Result<uint16_t> port = (*app)->Start();
  if (!port.ok()) return Die(port.status());
  if (const auto& pw = (*app)->initial_admin_password(); pw && !config.bootstrap_password) {
    std::cout << "Initial admin password (shown once; also in " << config.data_dir
              << "/initial_admin_password until you change it): " << *pw << std::endl;
  }
  Logger("server")->info("segma {} listening on {}:{} (data dir {})",
                         with_worker ? "start" : "server", config.address, *port, config.data_dir);

  // The embedded worker has its own /metrics (its port), as a stand-alone worker would: one
  // Prometheus target per role, whatever the layout.
  segma::metrics::Registry worker_registry;
  std::unique_ptr<segma::worker::WorkerAgent> agent;
  if (with_worker) {
    segma::Result<std::string> token = (*app)->DefaultRegistrationToken();
    if (!token.ok()) return Die(token.status());
    Flags wf = f;
    wf.server_url = "http://127.0.0.1:" + std::to_string(*port);
    wf.token = *token;
    wf.data_dir = config.data_dir + "/worker";
    wf.port = 0;
    wf.address = "127.0.0.1";
    wf.advertise_address = "127.0.0.1";
    segma::worker::AgentConfig ac = AgentConfigFrom(wf);
    auto labels = ParseLabels(f.labels);
    if (!labels.ok()) return Die(labels.status());
    ac.labels = *labels;
    auto probe = segma::worker::MakeGpuProbe(f.fake_gpus, /*demo_fallback=*/true,
                                             ac.name.empty() ? "embedded" : ac.name);
    if (!probe.ok()) return Die(probe.status());
    agent = std::make_unique<segma::worker::WorkerAgent>((*app)->io(), ac, std::move(*probe),
                                                         worker_registry);
    segma::Result<uint16_t> wport = agent->Start();
    if (!wport.ok()) return Die(wport.status());
  }
  // The first-run demo (start only): a project, a simulated chat model and a key, then a curl
  // command to paste once the model is RUNNING. Off the main thread: Run() serves meanwhile.
  std::atomic<bool> stopping{false};
  std::thread demo;
  if (with_worker && !f.no_demo) {
    const std::string host =
        config.address == "0.0.0.0" || config.address == "::" ? "127.0.0.1" : config.address;
    const std::string base_url = "http://" + host + ":" + std::to_string(*port);
    demo = std::thread([&app, &stopping, &config, base_url] {
      segma::Result<segma::api::DemoState> state =
          segma::api::EnsureDemo((*app)->store(), (*app)->api_keys(), config.data_dir);
      if (!state.ok()) {
        Logger("server")->warn("demo not set up: {}", state.status().ToString());
        return;
      }
      segma::Status ready =
          segma::api::WaitForDemo((*app)->gateway(), *state, std::chrono::minutes(5), stopping);
      if (!ready.ok()) {
        if (ready.code() != segma::StatusCode::kCancelled) {
          Logger("server")->warn("demo: {}", ready.ToString());
        }
        return;
      }
      std::cout << segma::api::DemoInstructions(*state, base_url) << std::flush;
    });
  }
  (*app)->Run();
  stopping = true;
  if (demo.joinable()) demo.join();
  // A foreground `segma start` takes its engines with it, unless they are kept for the next
  // start to adopt (an upgrade).
  if (agent) {
    agent->Stop(/*stop_engines=*/!f.keep_engines);
    if (!f.keep_engines && agent->worker_id() > 0) {
      segma::Result<int> marked = segma::api::MarkEnginesStopped(
          (*app)->store(), agent->worker_id(), "engine stopped with segma start");
      if (!marked.ok()) {
        Logger("server")->warn("instances of the stopped engines not marked: {}",
                               marked.status().ToString());
      }
    }
  }
  return 0;
}

// `segma probe`: what this machine's worker would report, as JSON (an admin's check of a new
// node; bench/gpu compares it with nvidia-smi).
int RunProbe(const std::string& fake_gpus, const std::string& data_dir) {
  auto probe = segma::worker::MakeGpuProbe(fake_gpus, /*demo_fallback=*/false, "probe");
  if (!probe.ok()) return Die(probe.status());
  segma::gpu::HostProbe host(data_dir);
  segma::Result<segma::types::WorkerStatus> st = host.Probe();
  if (!st.ok()) return Die(st.status());
  segma::Result<std::vector<segma::types::GpuDevice>> gpus = (*probe)->Probe();
  if (!gpus.ok()) return Die(gpus.status());
  st->gpus = std::move(*gpus);
  st->gpu_source = std::string((*probe)->source());
  st->driver_version = (*probe)->driver_version();
  std::cout << segma::ToJsonString(segma::types::ToJson(*st)) << "\n";
  return 0;
}

// `segma worker --drain`: stops the engines a stopped worker left in its data dir, one line each.
int RunDrain(const segma::worker::AgentConfig& ac) {
  auto drained = segma::worker::DrainEngines(ac, segma::SystemClock::Get());
  if (!drained.ok()) return Die(drained.status());
  if (drained->empty()) std::cout << "no engines running in " << ac.data_dir << "\n";
  bool all_ok = true;
  for (const segma::worker::DrainedEngine& d : *drained) {
    const bool rpc = d.instance_id < 0;
    std::cout << (rpc ? "rpc-server of instance " : "instance ")
              << (rpc ? -d.instance_id : d.instance_id) << " (" << d.name << "): engine pid "
              << d.pid << " on port " << d.port << (d.stopped ? " stopped" : " NOT stopped")
              << "; server "
              << (d.report.empty() ? "told (ERROR: stopped by segma worker --drain)"
                                   : "not told: " + d.report)
              << "\n";
    all_ok = all_ok && d.stopped && d.report.empty();
  }
  return all_ok ? 0 : 1;
}

int RunWorker(const Flags& f) {
  segma::worker::AgentConfig ac = AgentConfigFrom(f);
  auto labels = ParseLabels(f.labels);
  if (!labels.ok()) return Die(labels.status());
  ac.labels = *labels;
  if (f.drain) return RunDrain(ac);
  auto probe = segma::worker::MakeGpuProbe(f.fake_gpus, /*demo_fallback=*/false,
                                           ac.name.empty() ? "worker" : ac.name);
  if (!probe.ok()) return Die(probe.status());
  boost::asio::io_context ioc;
  segma::metrics::Registry registry;
  segma::worker::WorkerAgent agent(ioc, ac, std::move(*probe), registry);
  segma::Result<uint16_t> port = agent.Start();
  if (!port.ok()) return Die(port.status());
  Logger("worker")->info("worker listening on {}:{}, server {}", ac.listen_address, *port,
                         ac.server_url);
  boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code, int) {
    agent.Stop();
    ioc.stop();
  });
  ioc.run();
  return 0;
}

// segma gateway: a stand-alone /v1 replica following a server (ADR 0009).
int RunGateway(const Flags& f) {
  const segma::CidrSet trusted_proxies = TrustedProxiesOrDie(f);
  const int io_threads = f.io_threads > 0 ? f.io_threads : UsableCores();
  boost::asio::io_context ioc(io_threads);
  segma::EventBus bus;
  // The replica has no database: this empty in-memory store only satisfies the Gateway's
  // constructor (keys come from the server, usage goes to it).
  auto store = segma::store::OpenSqliteStore(":memory:", bus, segma::SystemClock::Get());
  if (!store.ok()) return Die(store.status());
  segma::metrics::Registry registry;
  segma::gateway::ReplicaOptions ro;
  ro.server_url = f.server_url;
  ro.token = f.token;
  ro.watch_timeout = std::chrono::seconds(5);
  segma::gateway::RemoteUsageSink sink(ro);
  segma::gateway::GatewayOptions go;
  go.keys.follow_store = false;
  // Records stay in the journal until the server has acknowledged their batch (ADR 0024).
  if (f.usage_journal) {
    go.usage.journal.dir = (f.data_dir.empty() ? "./gateway-data" : f.data_dir) + "/usage-journal";
    go.usage.journal.fsync_interval = std::chrono::milliseconds(f.usage_fsync_ms);
  }
  go.usage.on_journal_failure = segma::gateway::ParseJournalFailurePolicy(f.usage_journal_full)
                                    .value_or(segma::gateway::JournalFailurePolicy::kServe);
  // Limits: those the server's state ships with keys and projects (each replica counts its own).
  segma::gateway::Gateway gw(ioc.get_executor(), **store, bus, segma::SystemClock::Get(), registry,
                             /*limits=*/nullptr, &sink, go);
  segma::http::Router router;
  gw.Install(router);
  router.Add(segma::http::bhttp::verb::get, "/healthz",
             [](segma::http::RequestContext&) -> boost::asio::awaitable<segma::http::Response> {
               co_return segma::http::Response::Json(segma::http::bhttp::status::ok,
                                                     segma::json::object{{"status", "ok"}});
             });
  router.Add(
      segma::http::bhttp::verb::get, "/metrics",
      [&registry](segma::http::RequestContext&) -> boost::asio::awaitable<segma::http::Response> {
        co_return segma::http::Response::Text(segma::http::bhttp::status::ok, registry.Serialize(),
                                              "text/plain; version=0.0.4; charset=utf-8");
      });
  if (segma::Status s = gw.Start(); !s.ok()) return Die(s);
  segma::gateway::ReplicaFollower follower(gw, ro);
  if (segma::Status s = follower.Start(); !s.ok()) {
    if (s.code() == segma::StatusCode::kPermissionDenied) return Die(s);  // wrong token
    Logger("gateway")->warn("server not reachable yet, retrying: {}", s.ToString());
  }
  segma::http::ServerOptions options;
  options.name = "gateway";
  options.trusted_proxies = trusted_proxies;
  options.strand_per_connection = io_threads > 1;
  segma::http::HttpServer server(ioc, router, registry, options);
  segma::Result<uint16_t> port = server.Listen(f.address, f.port);
  if (!port.ok()) return Die(port.status());
  Logger("gateway")->info("gateway replica listening on {}:{}, following {}", f.address, *port,
                          f.server_url);
  boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int) {
    if (ec) return;
    server.Stop();
    // In-flight requests get a short grace, then every connection is closed.
    auto grace = std::make_shared<boost::asio::steady_timer>(ioc, std::chrono::seconds(2));
    grace->async_wait([&, grace](boost::system::error_code) {
      server.CloseAll();
      ioc.stop();
    });
  });
  segma::http::RunIoThreads(ioc, io_threads, std::chrono::microseconds(f.busy_poll_us));
  gw.Stop();  // writes every usage record to the server
  follower.Stop();
  Logger("gateway")->info("gateway replica stopped; usage flushed");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"segma: GPU compute sharing, model deployment and an OpenAI-compatible gateway"};
  app.set_config("--config", "", "Config file (TOML or INI) with the same option names");
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")
      ->envname("SEGMA_LOG_LEVEL");
  // The long-running commands log as text or as JSON lines (one object per line, for Loki).
  std::string log_format = "text";
  const auto add_log_format = [&log_format](CLI::App* cmd) {
    cmd->add_option("--log-format", log_format,
                    "text, or json: one JSON object per line (time, level, component, message, "
                    "request_id and ids)")
        ->envname("SEGMA_LOG_FORMAT")
        ->check(CLI::IsMember({"text", "json"}))
        ->capture_default_str();
  };
  const auto apply_logging = [&log_level, &log_format] {
    segma::SetLogLevel(log_level);
    if (segma::Status s = segma::SetLogFormat(log_format); !s.ok()) std::exit(Die(s));
  };

  // Each command has its own flag values (their defaults differ, e.g. the port).
  Flags start_flags, server_flags, worker_flags;
  CLI::App* start = app.add_subcommand("start", "Server + gateway + an embedded worker");
  AddServerFlags(start, start_flags, 8080);
  AddWorkerFlags(start, start_flags, /*standalone=*/false);
  start
      ->add_flag("--no-demo", start_flags.no_demo,
                 "Do not create the demo project, simulated chat model and API key")
      ->envname("SEGMA_NO_DEMO");
  add_log_format(start);
  start
      ->add_flag("--keep-engines", start_flags.keep_engines,
                 "On SIGINT/SIGTERM leave the engines running for the next start on this data dir "
                 "to adopt (an upgrade); their guards stop them if none does within "
                 "--engine-orphan-grace")
      ->envname("SEGMA_KEEP_ENGINES");
  start->callback([&] {
    apply_logging();
    std::exit(RunServer(start_flags, /*with_worker=*/true));
  });

  CLI::App* server = app.add_subcommand("server", "Control plane: REST /v2, gateway /v1");
  AddServerFlags(server, server_flags, 8080);
  add_log_format(server);
  server->callback([&] {
    apply_logging();
    std::exit(RunServer(server_flags, /*with_worker=*/false));
  });

  Flags gateway_flags;
  gateway_flags.port = 8090;
  CLI::App* gateway = app.add_subcommand(
      "gateway", "A stand-alone OpenAI-compatible gateway (/v1) following a server");
  gateway->add_option("--server", gateway_flags.server_url, "Server URL, e.g. http://10.0.0.1:8080")
      ->envname("SEGMA_SERVER")
      ->required();
  gateway
      ->add_option("--token", gateway_flags.token,
                   "The server's gateway token (<server data dir>/gateway_token)")
      ->envname("SEGMA_GATEWAY_TOKEN")
      ->required();
  gateway->add_option("--address", gateway_flags.address, "Listen address")
      ->envname("SEGMA_ADDRESS");
  gateway->add_option("--port", gateway_flags.port, "Listen port")->envname("SEGMA_PORT");
  gateway
      ->add_option("--data-dir", gateway_flags.data_dir,
                   "State directory: the usage journal (default ./gateway-data)")
      ->envname("SEGMA_DATA_DIR");
  AddIoFlags(gateway, gateway_flags);
  AddTrustedProxiesFlag(gateway, gateway_flags);
  add_log_format(gateway);
  AddUsageJournalFlags(gateway, gateway_flags);
  gateway->callback([&] {
    apply_logging();
    std::exit(RunGateway(gateway_flags));
  });

  CLI::App* worker = app.add_subcommand("worker", "Agent on a GPU node");
  worker_flags.port = 10150;
  AddWorkerFlags(worker, worker_flags, /*standalone=*/true);
  add_log_format(worker);
  worker->add_flag("--drain", worker_flags.drain,
                   "Stop every engine a stopped worker left running in --data-dir, report each "
                   "instance to the server (ERROR: stopped by segma worker --drain), and exit");
  worker->callback([&] {
    apply_logging();
    std::exit(RunWorker(worker_flags));
  });

  std::string probe_fake_gpus;
  std::string probe_dir = ".";
  CLI::App* probe = app.add_subcommand(
      "probe", "Print the GPUs (NVML) and host this machine's worker would report, as JSON");
  probe->add_option("--fake-gpus", probe_fake_gpus, "Simulated GPUs instead of NVML");
  probe->add_option("--data-dir", probe_dir, "Directory whose file system is reported as disk")
      ->capture_default_str();
  probe->callback([&] {
    segma::SetLogLevel(log_level);
    std::exit(RunProbe(probe_fake_gpus, probe_dir));
  });

  CLI::App* engine_guard = app.add_subcommand(
      "engine-guard",
      "Started by the worker beside each engine: stops the engine when no worker process has "
      "owned it for the orphan grace (docs/adr/0030-engine-guard.md). Flags: --state-file, "
      "--engine-pid, --engine-start-ticks, --orphan-grace-ms, --stop-grace-ms, "
      "--check-interval-ms");
  engine_guard->prefix_command();  // its flags are ParseEngineGuardArgs's
  engine_guard->callback([&] {
    segma::Result<segma::engines::EngineGuardOptions> guard =
        segma::engines::ParseEngineGuardArgs(engine_guard->remaining());
    if (!guard.ok()) std::exit(Die(guard.status()));
    std::exit(segma::engines::RunEngineGuard(*guard, segma::SystemClock::Get(), std::cerr));
  });

  segma::cli::AddCtlCommands(app);
  segma::cli::AddSimCommands(app);
  segma::cli::AddBenchCommands(app);

  app.add_subcommand("version", "Print the version")->callback([] {
    std::cout << "segma 0.1.0\n";
  });

  CLI11_PARSE(app, argc, argv);
  return 0;
}
