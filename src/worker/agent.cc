#include "worker/agent.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include "common/crypto.h"
#include "common/logging.h"
#include "worker/engines/engine_secret.h"
#include "worker/gpu/fake_gpu_probe.h"
#include "worker/gpu/nvml_gpu_probe.h"

namespace segma::worker {

namespace asio = boost::asio;
using http::bhttp::verb;

namespace {

std::string HostName() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "worker";
  return buf;
}

asio::awaitable<void> Sleep(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

}  // namespace

WorkerAgent::WorkerAgent(asio::io_context& ioc, AgentConfig config,
                         std::unique_ptr<gpu::GpuProbe> gpu_probe, metrics::Registry& registry)
    : ioc_(ioc),
      config_(std::move(config)),
      gpu_probe_(std::move(gpu_probe)),
      host_probe_(config_.data_dir),
      registry_(registry),
      metrics_(config_.name.empty() ? HostName() : config_.name),
      client_(ioc.get_executor()) {
  if (config_.name.empty()) config_.name = HostName();
}

WorkerAgent::~WorkerAgent() {
  Stop();
  probe_pool_.join();
}

Result<uint16_t> WorkerAgent::Start() {
  std::error_code ec;
  std::filesystem::create_directories(config_.data_dir, ec);
  if (ec) {
    return UnavailableError("cannot create worker data dir " + config_.data_dir + ": " +
                            ec.message());
  }
  router_.Add(verb::get, "/healthz", [](http::RequestContext&) -> asio::awaitable<http::Response> {
    co_return http::Response::Json(http::bhttp::status::ok, json::object{{"status", "ok"}});
  });
  router_.Add(verb::get, "/metrics",
              [this](http::RequestContext&) -> asio::awaitable<http::Response> {
                co_return http::Response::Text(http::bhttp::status::ok, registry_.Serialize(),
                                               "text/plain; version=0.0.4; charset=utf-8");
              });
  router_.Add(verb::get, "/v2/instance-logs/{id}",
              [this](http::RequestContext& ctx) -> asio::awaitable<http::Response> {
                co_return ServeLog(ctx);
              });
  registry_.AddCollector([this](std::string& out) { metrics_.Render(out); });
  http::ServerOptions opts;
  opts.name = "worker";
  server_ = std::make_unique<http::HttpServer>(ioc_, router_, registry_, opts);
  ASSIGN_OR_RETURN(bound_port_, server_->Listen(config_.listen_address, config_.port));
  InstanceManagerConfig ic;
  ic.server_url = config_.server_url;
  ic.data_dir = config_.data_dir;
  ic.engine_host = config_.engine_host;
  ic.binary_dirs = config_.engine_binary_dirs;
  ic.port_min = config_.engine_port_min;
  ic.port_max = config_.engine_port_max;
  ic.ready_timeout = config_.engine_ready_timeout;
  ic.liveness_period = config_.engine_liveness_period;
  ic.liveness_timeout = config_.engine_liveness_timeout;
  ic.liveness_failures = config_.engine_liveness_failures;
  ic.guard_command = config_.engine_guard_command;
  ic.orphan_grace = config_.engine_orphan_grace;
  ic.downloads = config_.downloads;
  // A file size limit (ulimit -f) must fail a model download's write() with EFBIG, as a full disk
  // fails it with ENOSPC, instead of killing the worker with SIGXFSZ.
  ::signal(SIGXFSZ, SIG_IGN);
  instances_ = std::make_unique<InstanceManager>(ioc_, ic, SystemClock::Get(), *gpu_probe_);
  RETURN_IF_ERROR(instances_->Init());
  asio::co_spawn(ioc_, Loop(), [](std::exception_ptr e) {
    if (e) Logger("worker")->error("worker loop ended by an exception");
  });
  if (config_.engine_metrics_interval.count() > 0) {
    asio::co_spawn(ioc_, ScrapeEngines(), [](std::exception_ptr e) {
      if (e) Logger("worker")->error("engine metrics scraper ended by an exception");
    });
  }
  return bound_port_;
}

void WorkerAgent::Stop(bool stop_engines) {
  stopping_ = true;
  if (instances_) instances_->Stop(stop_engines);
  if (server_) server_->Stop();
}

asio::awaitable<void> WorkerAgent::Loop() {
  auto log = Logger("worker");
  std::chrono::milliseconds backoff(500);
  while (!stopping_) {
    if (worker_token_.empty()) {
      Status s = co_await Register();
      if (!s.ok()) {
        log->warn("registration with {} failed: {}; retrying in {} ms", config_.server_url,
                  s.ToString(), backoff.count());
        co_await Sleep(backoff);
        backoff = std::min(backoff * 2, std::chrono::milliseconds(30'000));
        continue;
      }
      backoff = std::chrono::milliseconds(500);
    }
    Status s = co_await SendHeartbeat();
    if (!s.ok()) {
      if (s.code() == StatusCode::kUnauthenticated) {
        log->warn("server no longer knows this worker's token: registering again");
        worker_token_.clear();
        continue;
      }
      log->warn("heartbeat failed: {}", s.ToString());
    }
    co_await Sleep(config_.heartbeat_interval);
  }
}

json::object RegistrationBody(const AgentConfig& config, uint16_t port) {
  json::object body{{"name", config.name.empty() ? HostName() : config.name}, {"port", port}};
  if (!config.advertise_address.empty()) body["address"] = config.advertise_address;
  json::object labels;
  for (const auto& [k, v] : config.labels) labels[k] = v;
  body["labels"] = std::move(labels);
  return body;
}

asio::awaitable<Status> WorkerAgent::Register() {
  json::object body = RegistrationBody(config_, bound_port_);
  http::ClientRequest req;
  req.method = verb::post;
  req.url = config_.server_url + "/v2/workers";
  req.Bearer(config_.registration_token).JsonBody(body);
  CO_ASSIGN_OR_RETURN(http::ClientResponse res, co_await client_.Fetch(std::move(req)));
  if (res.status != 201) {
    co_return Status(
        res.status == 401 ? StatusCode::kUnauthenticated : StatusCode::kUnavailable,
        "server answered " + std::to_string(res.status) + ": " + res.body.substr(0, 300));
  }
  CO_ASSIGN_OR_RETURN(json::value v, res.Json());
  const json::object& o = v.as_object();
  worker_token_ = std::string(o.at("token").as_string());
  if (auto p = o.find("proxy_token"); p != o.end() && p->value().is_string()) {
    std::lock_guard lock(proxy_mu_);
    proxy_token_ = std::string(p->value().as_string());
  }
  worker_id_ = o.at("worker").as_object().at("id").as_int64();
  if (instances_) instances_->Start(worker_id_, worker_token_);
  Logger("worker")->info("registered with {} as worker {} ({}); GPU inventory: {}",
                         config_.server_url, worker_id_.load(), config_.name, gpu_probe_->source());
  co_return OkStatus();
}

std::map<int, int64_t> WorkerAgent::UpdateEngineMetrics() {
  std::map<int, int64_t> claimed;
  engines::Supervisor* sup = instances_ ? instances_->supervisor() : nullptr;
  if (sup == nullptr) return claimed;
  std::vector<engines::EngineStatus> engines = sup->List();
  std::map<int64_t, InstanceManager::EngineInfo> infos = instances_->EngineInfos();
  std::map<int64_t, EngineLabels> labels;
  for (const engines::EngineStatus& e : engines) {
    auto info = infos.find(e.instance_id);
    if (info == infos.end()) continue;
    labels.emplace(e.instance_id, info->second.labels);
    for (const auto& [gpu, bytes] : info->second.vram) claimed[gpu] += bytes;
  }
  metrics_.SetEngines(std::move(engines), std::move(labels));
  return claimed;
}

// Every engine_metrics_interval: GET /metrics of each RUNNING engine that has metrics, one at a
// time (a slow engine delays only the next scrape, never a request), parsed on the probe thread.
asio::awaitable<void> WorkerAgent::ScrapeEngines() {
  while (!stopping_) {
    co_await Sleep(config_.engine_metrics_interval);
    engines::Supervisor* sup = instances_ ? instances_->supervisor() : nullptr;
    if (stopping_ || sup == nullptr) continue;
    UpdateEngineMetrics();
    const std::map<int64_t, InstanceManager::EngineInfo> infos = instances_->EngineInfos();
    for (const engines::EngineStatus& e : sup->List()) {
      if (e.state != engines::EngineState::kRunning || e.port <= 0) continue;
      auto info = infos.find(e.instance_id);
      if (info == infos.end() || info->second.labels.format == engines::MetricsFormat::kNone) {
        continue;
      }
      http::ClientRequest req;
      req.url = fmt::format("http://127.0.0.1:{}/metrics", e.port);
      req.timeout = std::chrono::milliseconds(2000);
      req.Bearer(info->second.api_key);  // llama.cpp and engine-sim guard /metrics with it
      const auto start = std::chrono::steady_clock::now();
      Result<http::ClientResponse> res = co_await client_.Fetch(std::move(req));
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!res.ok() || res->status != 200) {
        metrics_.SetScrape(e.instance_id, false, {}, seconds);
        continue;
      }
      // The lambda captures references only (see SendHeartbeat on g++ 12 and temporaries).
      const std::string body = std::move(res->body);
      const EngineLabels labels = info->second.labels;
      ScrapedEngine families = co_await http::RunBlocking(
          probe_pool_, [&body, &labels] { return RelabelEngineMetrics(body, labels); });
      metrics_.SetScrape(e.instance_id, true, std::move(families), seconds);
    }
  }
}

asio::awaitable<Status> WorkerAgent::SendHeartbeat() {
  // Set here, not captured by the lambda: g++ 12 destroys non-trivial temporaries of a co_await
  // expression twice (a captured vector was a double free). The probe is thread-safe.
  if (instances_ != nullptr && instances_->supervisor() != nullptr) {
    std::vector<int> managed;
    for (pid_t pid : instances_->supervisor()->ManagedPids()) managed.push_back(pid);
    gpu_probe_->SetManagedPids(std::move(managed));
  }
  const std::map<int, int64_t> claimed = UpdateEngineMetrics();
  gpu_probe_->SetClaimedMemory(claimed);
  Result<types::WorkerStatus> status =
      co_await http::RunBlocking(probe_pool_, [this]() -> Result<types::WorkerStatus> {
        ASSIGN_OR_RETURN(types::WorkerStatus st, host_probe_.Probe());
        Result<std::vector<types::GpuDevice>> gpus = gpu_probe_->Probe();
        if (gpus.ok()) {
          st.gpus = std::move(gpus).value();
        } else {
          Logger("worker")->warn("GPU inventory failed: {}", gpus.status().ToString());
        }
        st.gpu_source = std::string(gpu_probe_->source());
        st.driver_version = gpu_probe_->driver_version();
        return st;
      });
  CO_RETURN_IF_ERROR(status.status());
  // Each enforced engine's accounting, read once for the report and for the instances' messages
  // (a shared-memory read per engine: no I/O that could block the io_context).
  if (instances_) {
    const SliceReadings slices = instances_->ReadVgpuSlices();
    AddSlices(slices, status->gpus);
    instances_->NoteSlices(slices);
  }
  metrics_.SetStatus(*status, claimed);
  http::ClientRequest req;
  req.method = verb::post;
  req.url = config_.server_url + "/v2/worker-heartbeat";
  req.Bearer(worker_token_).JsonBody(json::object{{"status", types::ToJson(*status)}});
  CO_ASSIGN_OR_RETURN(http::ClientResponse res, co_await client_.Fetch(std::move(req)));
  if (res.status == 401) co_return UnauthenticatedError("worker token refused");
  if (res.status != 200) {
    co_return UnavailableError("heartbeat answered " + std::to_string(res.status) + ": " +
                               res.body.substr(0, 300));
  }
  co_return OkStatus();
}

// GET /v2/instance-logs/{id}?tail=N | ?follow=true&from=OFFSET, for the server only (its proxy
// token). Plain: the last N lines of the live log, with the file size as x-segma-log-offset.
// Follow: what is appended from OFFSET on (from 0 again after a rotation truncated the file),
// until the client leaves, the worker stops, or the instance has no engine here any more.
http::Response WorkerAgent::ServeLog(http::RequestContext& ctx) {
  {
    std::lock_guard lock(proxy_mu_);
    std::optional<std::string> bearer = ctx.BearerToken();
    if (proxy_token_.empty() || !bearer || !ConstantTimeEquals(*bearer, proxy_token_)) {
      return http::Response::Error(UnauthenticatedError("the server's proxy token is required"));
    }
  }
  Result<int64_t> id = ctx.IdParam();
  if (!id.ok()) return http::Response::Error(id.status());
  const std::string path = fmt::format("{}/logs/instance-{}.log", config_.data_dir, *id);
  // An engine that prints its secret (SGLang's server_args) must not hand it to the server.
  std::string secret;
  if (instances_) {
    const auto infos = instances_->EngineInfos();
    if (auto info = infos.find(*id); info != infos.end()) secret = info->second.api_key;
  }
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) {
    return http::Response::Error(
        NotFoundError(fmt::format("no log for model instance {} on this worker", *id)));
  }
  if (ctx.Query("follow") != "true") {
    int64_t tail = 100;
    if (auto t = ctx.Query("tail")) tail = std::clamp<int64_t>(std::atoll(t->c_str()), 0, 100'000);
    std::ifstream in(path, std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    data.resize(std::min<size_t>(data.size(), size));  // what was there at `size`
    size_t start = data.size();
    int64_t lines = 0;
    // The last `tail` lines: a final line without its newline counts too.
    if (start > 0 && data[start - 1] == '\n') --start;
    while (start > 0 && lines < tail) {
      const size_t nl = data.rfind('\n', start - 1);
      ++lines;
      if (nl == std::string::npos) {
        start = 0;
        break;
      }
      if (lines == tail) {
        start = nl + 1;
        break;
      }
      start = nl;
    }
    if (tail == 0) start = data.size();
    http::Response res = http::Response::Text(http::bhttp::status::ok,
                                              engines::RedactSecret(data.substr(start), secret));
    res.msg.set("x-segma-log-offset", std::to_string(size));
    return res;
  }
  uint64_t from = 0;
  if (auto f = ctx.Query("from")) from = std::strtoull(f->c_str(), nullptr, 10);
  const int64_t instance_id = *id;
  return http::Response::Stream(
      "text/plain; charset=utf-8",
      [this, path, from, instance_id,
       secret = std::move(secret)](http::ResponseStream& out) -> asio::awaitable<void> {
        engines::SecretMasker masker(secret);
        uint64_t pos = from;
        while (!out.stopping() && !stopping_) {
          std::error_code ec;
          const uint64_t size = std::filesystem::file_size(path, ec);
          if (!ec && size < pos) pos = 0;  // rotated (copytruncate)
          if (!ec && size > pos) {
            std::ifstream in(path, std::ios::binary);
            in.seekg(static_cast<std::streamoff>(pos));
            std::string chunk(std::min<uint64_t>(size - pos, 1 << 20), '\0');
            in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
            chunk.resize(static_cast<size_t>(in.gcount()));
            pos += chunk.size();
            if (!chunk.empty()) {
              const std::string masked = masker.Feed(chunk);
              if (!masked.empty() && !co_await out.Write(masked)) co_return;
              continue;
            }
          }
          engines::Supervisor* sup = instances_ ? instances_->supervisor() : nullptr;
          if (sup == nullptr || !sup->Get(instance_id)) {  // the engine is gone
            const std::string rest = masker.Flush();
            if (!rest.empty()) co_await out.Write(rest);
            co_return;
          }
          co_await Sleep(std::chrono::milliseconds(200));
        }
      });
}

Result<std::unique_ptr<gpu::GpuProbe>> MakeGpuProbe(const std::string& fake_spec,
                                                    bool demo_fallback, const std::string& seed) {
  auto log = Logger("worker");
  if (!fake_spec.empty()) {
    ASSIGN_OR_RETURN(auto probe, gpu::FakeGpuProbe::Create(fake_spec, seed));
    log->info("using simulated GPUs: {}", fake_spec);
    return std::unique_ptr<gpu::GpuProbe>(std::move(probe));
  }
  Result<std::unique_ptr<gpu::NvmlGpuProbe>> nvml = gpu::NvmlGpuProbe::Open();
  if (nvml.ok()) {
    log->info("GPU inventory through NVML (driver {})", (*nvml)->driver_version());
    return std::unique_ptr<gpu::GpuProbe>(std::move(nvml).value());
  }
  if (demo_fallback) {
    log->warn("no NVIDIA driver ({}): the GPUs are SIMULATED, demo pool {}",
              nvml.status().message(), gpu::kDemoGpuSpec);
    ASSIGN_OR_RETURN(auto probe, gpu::FakeGpuProbe::Create(gpu::kDemoGpuSpec, seed));
    return std::unique_ptr<gpu::GpuProbe>(std::move(probe));
  }
  log->warn("no NVIDIA driver ({}): reporting CPU only", nvml.status().message());
  return std::unique_ptr<gpu::GpuProbe>(std::make_unique<gpu::NoGpuProbe>());
}

}  // namespace segma::worker
