#include "worker/instance_manager.h"

#include <unistd.h>

#include <algorithm>
#include <deque>
#include <filesystem>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include "common/logging.h"
#include "http/sse.h"
#include "worker/engines/engine_secret.h"

namespace segma::worker {

namespace asio = boost::asio;
using boost::beast::http::verb;

namespace {

asio::awaitable<void> Sleep(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

int64_t IntField(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_int64()) return 0;
  return it->value().as_int64();
}

std::string StringField(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_string()) return {};
  return std::string(it->value().as_string());
}

std::vector<int> IntsField(const json::object& o, std::string_view key) {
  std::vector<int> out;
  if (auto it = o.find(key); it != o.end() && it->value().is_array()) {
    for (const json::value& v : it->value().as_array()) {
      if (v.is_int64()) out.push_back(static_cast<int>(v.as_int64()));
    }
  }
  return out;
}

// The server writes claims with types::ToJson; one it cannot have written is ignored (logged).
types::ResourceClaim ClaimFromJson(const json::object& c) {
  Result<types::ResourceClaim> claim = types::ResourceClaimFromJson(c);
  if (claim.ok()) return std::move(claim).value();
  Logger("worker")->warn("ignoring a malformed claim from the server: {}",
                         claim.status().message());
  return {};
}

// The fields of an instance the worker acts on, from the server's JSON view (lenient: the server
// is trusted to send its own shape; missing fields keep their defaults).
types::ModelInstance InstanceFromJson(const json::object& o) {
  types::ModelInstance i;
  i.id = IntField(o, "id");
  i.model_id = IntField(o, "model_id");
  i.project_id = IntField(o, "project_id");
  i.name = StringField(o, "name");
  i.state =
      types::ParseInstanceState(StringField(o, "state")).value_or(types::InstanceState::kPending);
  i.worker_id = IntField(o, "worker_id");
  i.worker_name = StringField(o, "worker_name");
  i.port = static_cast<int>(IntField(o, "port"));
  i.restart_count = static_cast<int>(IntField(o, "restart_count"));
  i.gpu_indexes = IntsField(o, "gpu_indexes");
  if (auto it = o.find("claim"); it != o.end() && it->value().is_object()) {
    i.claim = ClaimFromJson(it->value().as_object());
  }
  if (auto it = o.find("distributed_servers"); it != o.end() && it->value().is_array()) {
    for (const json::value& v : it->value().as_array()) {
      if (!v.is_object()) continue;
      const json::object& e = v.as_object();
      types::DistributedServer d;
      d.worker_id = IntField(e, "worker_id");
      d.worker_name = StringField(e, "worker_name");
      d.gpu_indexes = IntsField(e, "gpu_indexes");
      if (auto c = e.find("claim"); c != e.end() && c->value().is_object()) {
        d.claim = ClaimFromJson(c->value().as_object());
      }
      d.address = StringField(e, "address");
      d.port = static_cast<int>(IntField(e, "port"));
      d.state = StringField(e, "state");
      d.state_message = StringField(e, "state_message");
      d.restart_count = static_cast<int>(IntField(e, "restart_count"));
      i.distributed_servers.push_back(std::move(d));
    }
  }
  return i;
}

Result<types::Model> ModelFromServerJson(const json::object& o) {
  json::object body = o;
  // Server-owned fields are not part of the create/patch shape ModelFromJson reads.
  for (const char* k : {"id", "created_at", "updated_at", "ready_replicas", "backend_definition"}) {
    body.erase(k);
  }
  ASSIGN_OR_RETURN(types::Model m, types::ModelFromJson(body));
  m.id = IntField(o, "id");
  m.project_id = IntField(o, "project_id");
  return m;
}

// The backend definition the server sends with a model whose backend (or version) is not built
// in; nullopt when there is none.
Result<std::optional<engines::Backend>> BackendFromServerJson(const json::object& o) {
  auto it = o.find("backend_definition");
  if (it == o.end() || !it->value().is_object()) return std::optional<engines::Backend>();
  json::object def = it->value().as_object();
  def.erase("built_in");  // a built-in with versions users added: parsed like a custom one
  Result<engines::Backend> b = engines::BackendFromJson(def);
  if (!b.ok()) {
    return InvalidArgumentError("the server sent an invalid backend definition: " +
                                b.status().message());
  }
  return std::optional<engines::Backend>(std::move(b).value());
}

// The simulator's --gpu profile for a GPU name ("NVIDIA H200 NVL" → "H200").
std::string GpuType(const std::string& name) {
  for (const char* t : {"H200", "H100", "A100", "L40S"}) {
    if (name.find(t) != std::string::npos) return t;
  }
  if (name.find("RTX PRO 6000") != std::string::npos) return "RTX-PRO-6000";
  return "";
}

// A state report's body. Built outside coroutines: g++ 12 miscompiles braced initializers with
// string literals inside co_await expressions ("array used as initializer").
json::object StateBody(std::string_view state, const std::string& message, int port = 0) {
  json::object body;
  body["state"] = state;
  body["state_message"] = message;
  if (port > 0) body["port"] = port;
  return body;
}

// A distributed server's report: always whole, so that the entry never mixes two reports.
json::object DistributedBody(std::string_view state, const std::string& message, int port,
                             int restart_count) {
  json::object body;
  body["state"] = state;
  body["state_message"] = message;
  body["port"] = port;
  body["restart_count"] = restart_count;
  return body;
}

// Which rpc-server processes a main engine talks to: their endpoints and restart counts. A
// change means llama-server holds connections to processes that are gone.
std::string RpcIncarnation(const types::ModelInstance& inst) {
  std::string out;
  for (const types::DistributedServer& d : inst.distributed_servers) {
    out += fmt::format("{}:{}#{};", d.address, d.port, d.restart_count);
  }
  return out;
}

// An instance this worker should be running: placed here, or in a state its supervisor reports.
bool Live(types::InstanceState s) {
  return s == types::InstanceState::kScheduled || types::IsWorkerReportedState(s);
}

std::string SelfDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : exe.parent_path().string();
}

}  // namespace

InstanceManager::InstanceManager(asio::io_context& ioc, InstanceManagerConfig config, Clock& clock,
                                 gpu::GpuProbe& gpus)
    : ioc_(ioc),
      config_(std::move(config)),
      clock_(clock),
      gpus_(gpus),
      client_(ioc.get_executor()) {
  if (!config_.binary_dirs.count("simulator")) config_.binary_dirs["simulator"] = SelfDir();
  if (config_.vgpu_library.empty()) {
    for (const char* rel :
         {"/libsegma-vgpu.so", "/../lib/libsegma-vgpu.so", "/../vgpu/libsegma-vgpu.so"}) {
      std::error_code ec;
      const std::string path = SelfDir() + rel;
      if (std::filesystem::exists(path, ec)) {
        config_.vgpu_library = std::filesystem::weakly_canonical(path, ec).string();
        break;
      }
    }
  }
  {
    std::error_code ec;
    const std::filesystem::path dir = std::filesystem::weakly_canonical(config_.data_dir, ec);
    vgpu_scope_ = engines::VgpuScope(ec ? config_.data_dir : dir.string());
  }
  if (config_.vgpu_library.empty()) {
    Logger("worker")->warn(
        "libsegma-vgpu.so not found: GPU sharing is by claims only on this worker");
  }
}

InstanceManager::~InstanceManager() = default;

Status InstanceManager::Init() {
  engines::SupervisorOptions opts;
  opts.data_dir = config_.data_dir;
  opts.port_min = config_.port_min;
  opts.port_max = config_.port_max;
  opts.liveness_period = config_.liveness_period;
  opts.liveness_timeout = config_.liveness_timeout;
  opts.liveness_failures = config_.liveness_failures;
  opts.guard_command = config_.guard_command;
  opts.orphan_grace = config_.orphan_grace;
  models::DownloaderConfig downloads = config_.downloads;
  if (downloads.cache_dir.empty()) downloads.cache_dir = config_.data_dir + "/models";
  files_ = std::make_unique<ModelFiles>(ioc_, std::move(downloads), config_.server_url);
  ASSIGN_OR_RETURN(supervisor_,
                   engines::Supervisor::Create(
                       opts, clock_, [this](const engines::EngineStatus& s) { OnEngineState(s); }));
  return OkStatus();
}

void InstanceManager::Start(int64_t worker_id, std::string worker_token) {
  const bool first = worker_id_ == 0;
  worker_id_ = worker_id;
  token_ = std::move(worker_token);
  if (files_) files_->SetCredentials(worker_id_, token_);
  if (!first) return;  // the follow loop picks up the new token
  asio::co_spawn(ioc_, Follow(Role::kEngine), [](std::exception_ptr e) {
    if (e) Logger("worker")->error("instance follower ended by an exception");
  });
  asio::co_spawn(ioc_, SweepFiles(), [](std::exception_ptr e) {
    if (e) Logger("worker")->error("model file sweeper ended by an exception");
  });
}

void InstanceManager::Stop(bool stop_engines) {
  stopping_ = true;
  if (stop_engines && supervisor_) supervisor_->StopAll();
}

bool InstanceManager::Wanted(const types::ModelInstance& inst) const {
  return inst.worker_id == worker_id_ && Live(inst.state);
}

const types::DistributedServer* InstanceManager::OwnEntry(const types::ModelInstance& inst) const {
  if (inst.worker_id == worker_id_) return nullptr;  // never a server for its own engine
  for (const types::DistributedServer& d : inst.distributed_servers) {
    if (d.worker_id == worker_id_) return &d;
  }
  return nullptr;
}

asio::awaitable<void> InstanceManager::Follow(Role role) {
  auto log = Logger("worker");
  const bool engines = role == Role::kEngine;
  bool first = true;
  std::chrono::milliseconds backoff(500);
  while (!stopping_) {
    Status synced = co_await Resync(role, first && engines);
    if (!synced.ok()) {
      log->warn("listing this worker's {} failed: {}",
                engines ? "instances" : "distributed servers", synced.ToString());
      co_await Sleep(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(15'000));
      continue;
    }
    if (first && engines) {
      // Adoption is done (it needed both lists): the distributed servers have their own follow.
      asio::co_spawn(ioc_, Follow(Role::kDistributedServer), [](std::exception_ptr e) {
        if (e) Logger("worker")->error("distributed server follower ended by an exception");
      });
    }
    first = false;
    backoff = std::chrono::milliseconds(500);

    // Events are queued by the stream callback and applied in order by one drainer.
    auto queue = std::make_shared<std::deque<std::pair<types::ModelInstance, bool>>>();
    auto draining = std::make_shared<bool>(false);
    http::SseParser parser;
    std::vector<http::SseEvent> events;
    http::ClientRequest req;
    req.url = fmt::format("{}/v2/worker/instances?watch=true&{}={}", config_.server_url,
                          engines ? "worker_id" : "distributed_worker_id", worker_id_);
    req.Bearer(token_);
    req.timeout = std::chrono::seconds(45);  // the server sends a comment every 15 s
    Result<http::ClientResponse> r =
        co_await client_.Stream(std::move(req), [&](std::string_view data) {
          events.clear();
          if (!parser.Feed(data, events)) return false;
          for (const http::SseEvent& e : events) {
            Result<json::value> v = ParseJson(e.data);
            if (!v.ok() || !v->is_object()) continue;
            const json::object& ev = v->as_object();
            auto d = ev.find("data");
            if (d == ev.end() || !d->value().is_object()) continue;
            queue->emplace_back(InstanceFromJson(d->value().as_object()),
                                StringField(ev, "type") == "DELETED");
          }
          if (!queue->empty() && !*draining) {
            *draining = true;
            asio::co_spawn(
                ioc_,
                [this, queue, draining, engines]() -> asio::awaitable<void> {
                  while (!queue->empty()) {
                    auto [inst, deleted] = queue->front();
                    queue->pop_front();
                    if (engines) {
                      co_await Apply(inst, deleted);
                    } else {
                      co_await ApplyDistributed(inst, deleted);
                    }
                  }
                  *draining = false;
                },
                asio::detached);
          }
          return !stopping_;
        });
    if (!stopping_) {
      log->info("{} watch ended ({}); listing again", engines ? "instance" : "distributed server",
                r.ok() ? fmt::format("HTTP {}", r->status) : r.status().ToString());
      co_await Sleep(std::chrono::milliseconds(500));
    }
  }
}

asio::awaitable<Result<std::map<int64_t, types::ModelInstance>>> InstanceManager::ListInstances(
    Role role) {
  http::ClientRequest req;
  req.url = fmt::format("{}/v2/worker/instances?{}={}&per_page=500", config_.server_url,
                        role == Role::kEngine ? "worker_id" : "distributed_worker_id", worker_id_);
  req.Bearer(token_);
  CO_ASSIGN_OR_RETURN(http::ClientResponse res, co_await client_.Fetch(std::move(req)));
  if (res.status != 200) {
    co_return UnavailableError(fmt::format("HTTP {}: {}", res.status, res.body.substr(0, 200)));
  }
  CO_ASSIGN_OR_RETURN(json::value v, res.Json());
  std::map<int64_t, types::ModelInstance> listed;
  for (const json::value& item : v.at("items").as_array()) {
    types::ModelInstance inst = InstanceFromJson(item.as_object());
    listed.emplace(inst.id, inst);
  }
  co_return listed;
}

asio::awaitable<Status> InstanceManager::Resync(Role role, bool first) {
  const bool engines = role == Role::kEngine;
  CO_ASSIGN_OR_RETURN(auto listed, co_await ListInstances(role));
  std::map<int64_t, types::ModelInstance> distributed;
  if (first) {
    // Engines left running by a previous worker process: adopt those still wanted, with the
    // same command and port; the supervisor stops the rest. Recover sees every engine of this
    // worker at once, so the rpc-servers it runs for other workers' instances are listed too.
    CO_ASSIGN_OR_RETURN(distributed, co_await ListInstances(Role::kDistributedServer));
    std::map<int64_t, engines::EngineSpec> expected;
    for (const auto& [id, inst] : listed) {
      if (!Wanted(inst) || inst.port <= 0) continue;
      Result<engines::EngineSpec> spec = co_await SpecFor(inst, inst.port);
      if (spec.ok()) expected.emplace(id, std::move(spec).value());
    }
    for (const auto& [id, inst] : distributed) {
      const types::DistributedServer* entry = OwnEntry(inst);
      if (entry == nullptr || !Live(inst.state) || entry->port <= 0) continue;
      Result<engines::EngineSpec> spec =
          co_await DistributedSpecFor(inst, *entry, entry->port, entry->restart_count);
      if (spec.ok()) expected.emplace(-id, std::move(spec).value());
    }
    engines::Supervisor::RecoverReport report = supervisor_->Recover(expected);
    // The secrets of instances no longer assigned here (deleted or moved while no worker ran).
    std::set<int64_t> assigned;
    for (const auto& [id, inst] : listed) assigned.insert(id);
    for (int64_t id : engines::RemoveEngineSecretsExcept(config_.data_dir, assigned)) {
      secrets_.erase(id);
    }
    for (int64_t id : report.adopted) {
      if (id > 0) {
        running_[id] = listed[id];
        rpc_started_with_[id] = RpcIncarnation(listed[id]);
        Logger("worker")->info("adopted the running engine of instance {}", id);
      } else {
        running_distributed_[-id] = distributed[-id];
        Logger("worker")->info("adopted the running rpc-server of instance {}", -id);
      }
    }
  }
  auto& running = engines ? running_ : running_distributed_;
  for (auto it = running.begin(); it != running.end();) {
    if (listed.count(it->first) == 0) {
      Logger("worker")->info("instance {} is no longer assigned here: stopping its {}", it->first,
                             engines ? "engine" : "rpc-server");
      (void)supervisor_->Stop(engines ? it->first : -it->first);
      DropVgpu(engines ? it->first : -it->first);
      if (engines) DropSecret(it->first);
      rpc_started_with_.erase(it->first);
      it = running.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [id, inst] : listed) {
    if (engines) {
      co_await Apply(inst, false);
    } else {
      co_await ApplyDistributed(inst, false);
    }
  }
  for (const auto& [id, inst] : distributed) co_await ApplyDistributed(inst, false);
  co_return OkStatus();
}

asio::awaitable<void> InstanceManager::StopAndWait(int64_t id) {
  if (!supervisor_->Stop(id).ok()) co_return;
  const auto limit = std::chrono::steady_clock::now() + supervisor_->options().stop_grace +
                     std::chrono::seconds(5);
  while (supervisor_->Get(id) && std::chrono::steady_clock::now() < limit) {
    co_await Sleep(std::chrono::milliseconds(100));
  }
}

asio::awaitable<void> InstanceManager::Apply(const types::ModelInstance& inst, bool deleted) {
  const bool wanted = !deleted && Wanted(inst);
  auto it = running_.find(inst.id);
  if (it != running_.end()) {
    if (!wanted) {
      Logger("worker")->info("stopping the engine of instance {} ({})", inst.id,
                             deleted ? "deleted" : types::InstanceStateName(inst.state));
      (void)supervisor_->Stop(inst.id);
      DropVgpu(inst.id);
      DropSecret(inst.id);
      running_.erase(it);
      rpc_started_with_.erase(inst.id);
      co_return;
    }
    if (inst.distributed_servers.empty()) co_return;
    // llama-server does not reconnect to an rpc-server: when one failed or was replaced (another
    // process, port or address), this llama-server is stopped and started again once every
    // rpc-server is RUNNING. An adopted rpc-server (same process) reports STARTING: no change.
    const bool failed =
        std::any_of(inst.distributed_servers.begin(), inst.distributed_servers.end(),
                    [](const types::DistributedServer& d) { return d.state == "ERROR"; });
    if (!failed && RpcIncarnation(inst) == rpc_started_with_[inst.id]) co_return;
    Logger("worker")->info(
        "an rpc-server of instance {} ({}) failed or was replaced: stopping "
        "its llama-server until every rpc-server runs again",
        inst.id, inst.name);
    co_await StopAndWait(inst.id);
    running_.erase(inst.id);
    rpc_started_with_.erase(inst.id);
  }
  if (!wanted) {
    downloading_.erase(inst.id);
    download_failed_.erase(inst.id);
    if (deleted || inst.worker_id != worker_id_) DropSecret(inst.id);
    co_return;
  }
  if (auto d = downloading_.find(inst.id); d != downloading_.end()) {
    d->second = inst;  // started when its files are here
    co_return;
  }
  Result<types::Model> model = co_await ModelFor(inst);
  if (model.ok() && (model->source.type == types::SourceType::kHuggingFace ||
                     model->source.type == types::SourceType::kModelScope)) {
    auto local = local_files_.find(model->id);
    if (local == local_files_.end() || !std::filesystem::exists(local->second.model_path)) {
      if (auto f = download_failed_.find(inst.id);
          f != download_failed_.end() && std::chrono::steady_clock::now() < f->second.first) {
        co_return;  // stays in ERROR until its retry
      }
      downloading_[inst.id] = inst;
      co_await Report(inst.id,
                      StateBody("DOWNLOADING", "listing the files of " + model->source.repo));
      asio::co_spawn(ioc_, Download(inst, *model), asio::detached);
      co_return;
    }
  }
  if (Result<std::vector<std::string>> rpc = engines::DistributedServerEndpoints(inst); !rpc.ok()) {
    // Started when every distributed server reports RUNNING (each report is an event here).
    const std::string waiting = rpc.status().message();
    if (inst.state != types::InstanceState::kStarting || inst.state_message != waiting) {
      json::object body = StateBody("STARTING", waiting);
      co_await Report(inst.id, std::move(body));
    }
    co_return;
  }
  Result<int> port = supervisor_->AllocatePort(inst.id);
  if (!port.ok()) {
    co_await Report(inst.id, StateBody("ERROR", port.status().message()));
    co_return;
  }
  Result<engines::EngineSpec> spec = co_await SpecFor(inst, *port);
  if (!spec.ok()) {
    supervisor_->ReleasePort(inst.id);
    co_await Report(inst.id, StateBody("ERROR", spec.status().message()));
    co_return;
  }
  Status started = supervisor_->Start(std::move(spec).value());
  if (!started.ok()) {
    supervisor_->ReleasePort(inst.id);
    co_await Report(inst.id, StateBody("ERROR", started.message()));
    co_return;
  }
  running_[inst.id] = inst;
  if (!inst.distributed_servers.empty()) rpc_started_with_[inst.id] = RpcIncarnation(inst);
  Logger("worker")->info("started the engine of instance {} ({}) on port {}", inst.id, inst.name,
                         *port);
  json::object starting = StateBody("STARTING", "", *port);
  starting["engine_secret"] = secrets_[inst.id];
  co_await Report(inst.id, std::move(starting));
}

asio::awaitable<void> InstanceManager::ApplyDistributed(const types::ModelInstance& inst,
                                                        bool deleted) {
  const types::DistributedServer* entry = OwnEntry(inst);
  const bool wanted = !deleted && entry != nullptr && Live(inst.state);
  const int64_t key = -inst.id;
  if (auto it = running_distributed_.find(inst.id); it != running_distributed_.end()) {
    if (!wanted) {
      Logger("worker")->info("stopping the rpc-server of instance {} ({})", inst.id,
                             deleted ? "deleted" : types::InstanceStateName(inst.state));
      (void)supervisor_->Stop(key);
      DropVgpu(-inst.id);
      running_distributed_.erase(it);
      co_return;
    }
    // A placement written over what this worker reported (or a lost report): report again.
    std::optional<engines::EngineStatus> st = supervisor_->Get(key);
    if (st && entry->port != st->port) {
      json::object body = DistributedBody(engines::EngineStateName(st->state), st->message,
                                          st->port, st->restart_count);
      co_await Report(inst.id, std::move(body));
    }
    co_return;
  }
  if (!wanted) co_return;
  Result<int> port = supervisor_->AllocatePort(key);
  if (!port.ok()) {
    json::object body = DistributedBody("ERROR", port.status().message(), 0, entry->restart_count);
    co_await Report(inst.id, std::move(body));
    co_return;
  }
  // A new process: a new restart count, so that the main worker sees the change.
  const int restart_count = entry->port > 0 ? entry->restart_count + 1 : entry->restart_count;
  Result<engines::EngineSpec> spec =
      co_await DistributedSpecFor(inst, *entry, *port, restart_count);
  Status started = spec.ok() ? supervisor_->Start(std::move(spec).value()) : spec.status();
  if (!started.ok()) {
    supervisor_->ReleasePort(key);
    json::object body = DistributedBody("ERROR", started.message(), 0, entry->restart_count);
    co_await Report(inst.id, std::move(body));
    co_return;
  }
  running_distributed_[inst.id] = inst;
  Logger("worker")->info("started the rpc-server of instance {} ({}) on port {}", inst.id,
                         inst.name, *port);
  json::object body = DistributedBody("STARTING", "", *port, restart_count);
  co_await Report(inst.id, std::move(body));
}

asio::awaitable<Result<types::Model>> InstanceManager::ModelFor(const types::ModelInstance& inst,
                                                                bool refresh) {
  auto cached = refresh ? models_.end() : models_.find(inst.model_id);
  if (cached == models_.end()) {
    http::ClientRequest req;
    req.url = fmt::format("{}/v2/worker/models/{}", config_.server_url, inst.model_id);
    req.Bearer(token_);
    CO_ASSIGN_OR_RETURN(http::ClientResponse res, co_await client_.Fetch(std::move(req)));
    if (res.status != 200) {
      co_return UnavailableError(
          fmt::format("cannot read model {}: HTTP {}", inst.model_id, res.status));
    }
    CO_ASSIGN_OR_RETURN(json::value v, res.Json());
    CO_ASSIGN_OR_RETURN(types::Model m, ModelFromServerJson(v.as_object()));
    CO_ASSIGN_OR_RETURN(std::optional<engines::Backend> def, BackendFromServerJson(v.as_object()));
    cached = models_.insert_or_assign(inst.model_id, std::move(m)).first;
    if (def) {
      backend_definitions_.insert_or_assign(inst.model_id, std::move(*def));
    } else {
      backend_definitions_.erase(inst.model_id);
    }
  }
  co_return cached->second;
}

asio::awaitable<void> InstanceManager::Download(types::ModelInstance inst, types::Model model) {
  const int64_t id = inst.id;
  Result<models::LocalModel> local =
      co_await files_->Ensure(model, [this, id](const std::string& line) {
        if (!downloading_.count(id)) return;
        asio::co_spawn(ioc_, Report(id, StateBody("DOWNLOADING", line)), asio::detached);
      });
  auto pending = downloading_.find(id);
  if (pending == downloading_.end()) co_return;  // no longer wanted here
  types::ModelInstance latest = pending->second;
  downloading_.erase(pending);
  if (!local.ok()) {
    auto& [retry_at, delay] = download_failed_[id];
    delay = delay.count() == 0 ? config_.download_retry_delay
                               : std::min(delay * 2, std::chrono::milliseconds(300'000));
    retry_at = std::chrono::steady_clock::now() + delay;
    Logger("worker")->warn("the files of instance {} ({}) could not be fetched: {}", id,
                           model.source.repo, local.status().ToString());
    co_await Report(id, StateBody("ERROR", "model files: " + local.status().message()));
    const auto wait = delay;
    asio::co_spawn(
        ioc_,
        [this, id, wait]() -> asio::awaitable<void> {
          co_await Sleep(wait);
          if (!download_failed_.count(id) || stopping_) co_return;
          // The latest view comes with the next listing; re-apply what we know meanwhile.
          download_failed_[id].first = std::chrono::steady_clock::time_point();
          http::ClientRequest req;
          req.url = fmt::format("{}/v2/worker/instances?worker_id={}&per_page=500",
                                config_.server_url, worker_id_);
          req.Bearer(token_);
          Result<http::ClientResponse> r = co_await client_.Fetch(std::move(req));
          if (!r.ok() || r->status != 200) co_return;
          Result<json::value> v = r->Json();
          if (!v.ok()) co_return;
          for (const json::value& item : v->at("items").as_array()) {
            types::ModelInstance i = InstanceFromJson(item.as_object());
            if (i.id == id) co_await Apply(i, false);
          }
        },
        asio::detached);
    co_return;
  }
  download_failed_.erase(id);
  local_files_[model.id] = *local;
  co_await Apply(latest, false);
}

asio::awaitable<void> InstanceManager::SweepFiles() {
  while (!stopping_) {
    co_await Sleep(config_.files_sweep_interval);
    if (!stopping_) co_await files_->Sweep();
  }
}

asio::awaitable<Result<engines::EngineSpec>> InstanceManager::SpecFor(
    const types::ModelInstance& inst, int port) {
  // Fetched for every engine start: the model or its backend may have changed since.
  CO_ASSIGN_OR_RETURN(types::Model model, co_await ModelFor(inst, /*refresh=*/true));

  engines::LaunchContext ctx;
  switch (model.source.type) {
    case types::SourceType::kSimulated:
      break;
    case types::SourceType::kLocalPath:
      if (!std::filesystem::exists(model.source.path)) {
        co_return FailedPreconditionError("model path not found on this worker: " +
                                          model.source.path);
      }
      ctx.model_path = model.source.path;
      break;
    case types::SourceType::kHuggingFace:
    case types::SourceType::kModelScope: {
      auto local = local_files_.find(model.id);
      if (local == local_files_.end()) {
        // An engine being adopted after a worker restart: its files are complete in the cache.
        Result<models::LocalModel> fetched = co_await files_->Ensure(model, nullptr);
        if (!fetched.ok()) co_return fetched.status();
        local = local_files_.insert_or_assign(model.id, *fetched).first;
      }
      ctx.model_path = local->second.model_path;
      break;
    }
  }
  CO_ASSIGN_OR_RETURN(ChosenBackend chosen, BackendFor(model, ctx.model_path, inst.gpu_indexes));
  const std::string& backend_name = chosen.choice.backend;
  {
    EngineInfo info;
    info.labels.instance = inst.name;
    info.labels.deployment = model.name;
    info.labels.project = std::to_string(inst.project_id);
    info.labels.backend = backend_name;
    info.labels.format = chosen.backend->metrics_format;
    info.vram = inst.claim.vram;
    std::lock_guard lock(info_mu_);
    engine_info_[inst.id] = std::move(info);
  }
  // Multi-worker llama.cpp: the rpc-servers of the other workers (Apply waits for them).
  CO_ASSIGN_OR_RETURN(ctx.rpc_servers, engines::DistributedServerEndpoints(inst));
  ctx.host = config_.engine_host;
  ctx.port = port;
  if (auto dir = config_.binary_dirs.find(backend_name); dir != config_.binary_dirs.end()) {
    ctx.binary_dir = dir->second;
  }
  Result<std::vector<types::GpuDevice>> gpus = gpus_.Probe();
  if (gpus.ok()) {
    for (const types::GpuDevice& g : *gpus) {
      ctx.gpu_total_bytes[g.index] = g.memory_total;
      ctx.gpu_uuids[g.index] = g.uuid;
      if (!inst.gpu_indexes.empty() && g.index == inst.gpu_indexes.front())
        ctx.gpu_type = GpuType(g.name);
    }
  }
  if (inst.gpu_indexes.empty()) ctx.gpu_type = "CPU";
  // Sized by the server's estimate when it placed the instance (0 when it had none).
  ctx.kv_cache_bytes = inst.claim.kv_cache_bytes;
  ctx.weight_bytes_per_gpu = inst.claim.weight_bytes_per_gpu;
  ctx.vgpu_library = config_.vgpu_library;
  ctx.vgpu_scope = vgpu_scope_;
  ctx.working_dir = config_.data_dir;
  // The engine's secret, the same for every start of the instance here (and for adoption: the
  // running engine holds the one in the file).
  CO_ASSIGN_OR_RETURN(ctx.api_key, engines::LoadOrCreateEngineSecret(config_.data_dir, inst.id));
  ctx.api_key_file = engines::EngineSecretPath(config_.data_dir, inst.id);
  CO_ASSIGN_OR_RETURN(
      engines::LaunchSpec launch,
      engines::RenderLaunch(*chosen.backend, chosen.choice.version, model, inst, ctx));
  RememberVgpu(inst.id, inst.id, launch, inst.gpu_indexes);
  secrets_[inst.id] = launch.api_key;
  {
    std::lock_guard lock(info_mu_);
    engine_info_[inst.id].api_key = launch.api_key;
  }
  engines::EngineSpec spec;
  spec.instance_id = inst.id;
  spec.name = inst.name;
  spec.launch = std::move(launch);
  spec.port = port;
  // The liveness check's real request: the OpenAI model list the gateway relies on, answered by
  // each built-in engine's HTTP server without taking a batch slot, so that a busy engine is never
  // mistaken for a hung one. A custom backend need not serve it: its health path only.
  if (chosen.backend->built_in) spec.liveness_path = "/v1/models";
  spec.restart_on_error = model.restart_on_error;
  spec.restart_count = inst.restart_count;
  spec.ready_timeout = config_.ready_timeout;
  co_return spec;
}

asio::awaitable<Result<engines::EngineSpec>> InstanceManager::DistributedSpecFor(
    const types::ModelInstance& inst, const types::DistributedServer& entry, int port,
    int restart_count) {
  CO_ASSIGN_OR_RETURN(types::Model model, co_await ModelFor(inst, /*refresh=*/true));
  // The rpc-server receives the weights from llama-server: no model files here.
  std::string path = model.source.type == types::SourceType::kLocalPath ? model.source.path : "";
  CO_ASSIGN_OR_RETURN(ChosenBackend chosen, BackendFor(model, path, entry.gpu_indexes));
  const std::string& backend_name = chosen.choice.backend;
  engines::LaunchContext ctx;
  ctx.host = config_.engine_host;
  ctx.port = port;
  if (auto dir = config_.binary_dirs.find(backend_name); dir != config_.binary_dirs.end()) {
    ctx.binary_dir = dir->second;
  }
  if (Result<std::vector<types::GpuDevice>> gpus = gpus_.Probe(); gpus.ok()) {
    for (const types::GpuDevice& g : *gpus) {
      ctx.gpu_total_bytes[g.index] = g.memory_total;
      ctx.gpu_uuids[g.index] = g.uuid;
    }
  }
  ctx.vgpu_library = config_.vgpu_library;
  ctx.vgpu_scope = vgpu_scope_;
  ctx.working_dir = config_.data_dir;
  CO_ASSIGN_OR_RETURN(engines::LaunchSpec launch,
                      engines::RenderDistributedServerLaunch(*chosen.backend, chosen.choice.version,
                                                             model, inst, entry, ctx));
  RememberVgpu(-inst.id, inst.id, launch, entry.gpu_indexes);
  engines::EngineSpec spec;
  spec.instance_id = -inst.id;
  spec.name = inst.name + "-rpc";
  spec.launch = std::move(launch);
  spec.port = port;
  spec.restart_on_error = true;  // the main worker's llama-server depends on it
  spec.restart_count = restart_count;
  spec.ready_timeout = config_.ready_timeout;
  co_return spec;
}

Result<InstanceManager::ChosenBackend> InstanceManager::BackendFor(
    const types::Model& model, const std::string& model_path,
    const std::vector<int>& gpu_indexes) const {
  const engines::Backend* extra = nullptr;
  if (auto def = backend_definitions_.find(model.id); def != backend_definitions_.end()) {
    extra = &def->second;
  }
  std::optional<types::EngineHardware> hardware;
  if (Result<std::vector<types::GpuDevice>> gpus = gpus_.Probe(); gpus.ok()) {
    hardware.emplace();
    for (const types::GpuDevice& g : *gpus) {
      if (std::find(gpu_indexes.begin(), gpu_indexes.end(), g.index) != gpu_indexes.end()) {
        hardware->gpus.push_back(g);
      }
    }
  }
  ChosenBackend out;
  ASSIGN_OR_RETURN(out.choice, types::ChooseEngine(model, types::FormatOf(model.source, model_path),
                                                   engines::BackendDefinitions(extra), hardware));
  RETURN_IF_ERROR(types::CheckEngineFits(model, out.choice));
  out.backend = extra != nullptr && extra->name == out.choice.backend
                    ? extra
                    : engines::FindBuiltInBackend(out.choice.backend);
  if (out.backend == nullptr) {
    return NotFoundError("unknown backend '" + out.choice.backend + "'");
  }
  return out;
}

asio::awaitable<void> InstanceManager::Report(int64_t instance_id, json::object body) {
  http::ClientRequest req;
  req.method = verb::patch;
  req.url = fmt::format("{}/v2/worker/instances/{}", config_.server_url, instance_id);
  req.Bearer(token_).JsonBody(body);
  Result<http::ClientResponse> r = co_await client_.Fetch(std::move(req));
  if (!r.ok() || r->status >= 400) {
    Logger("worker")->warn("reporting instance {} failed: {}", instance_id,
                           r.ok() ? r->body.substr(0, 200) : r.status().ToString());
  }
}

std::map<int64_t, InstanceManager::EngineInfo> InstanceManager::EngineInfos() const {
  std::lock_guard lock(info_mu_);
  return engine_info_;
}

void InstanceManager::RememberVgpu(int64_t id, int64_t instance_id,
                                   const engines::LaunchSpec& launch,
                                   const std::vector<int>& gpus) {
  std::optional<VgpuEngine> vgpu = VgpuEngineOf(instance_id, launch, gpus);
  std::lock_guard lock(info_mu_);
  if (vgpu) {
    vgpu_engines_[id] = std::move(*vgpu);
  } else {
    vgpu_engines_.erase(id);
  }
}

SliceReadings InstanceManager::ReadVgpuSlices() const {
  std::map<int64_t, VgpuEngine> engines;
  {
    std::lock_guard lock(info_mu_);
    engines = vgpu_engines_;
  }
  SliceReadings out;
  for (const auto& [id, e] : engines) out[id] = ReadSlices(e);
  return out;
}

void InstanceManager::DropVgpu(int64_t id) {
  UnlinkVgpuSegments(engines::VgpuSegmentName(vgpu_scope_, id < 0 ? -id : id, id < 0));
  limit_hits_.erase(id);
  std::lock_guard lock(info_mu_);
  vgpu_engines_.erase(id);
}

void InstanceManager::NoteSlices(const SliceReadings& readings) {
  for (const auto& [id, slices] : readings) {
    int64_t hits = 0;
    for (const auto& [gpu, slice] : slices) hits += slice.limit_hits;
    int64_t& noted = limit_hits_[id];
    if (hits <= noted) continue;
    noted = hits;
    const std::string message = LimitHitsMessage(slices);
    Logger("worker")->warn("engine of instance {}{} was refused device memory: {}",
                           id < 0 ? -id : id, id < 0 ? " (rpc-server)" : "", message);
    auto last = last_reported_.find(id);
    if (last != last_reported_.end() && (last->second == "RUNNING" || last->second == "STARTING")) {
      QueueReport(id, json::object{{"state_message", "VRAM limit reached: " + message}});
    }
  }
}

void InstanceManager::OnEngineState(const engines::EngineStatus& s) {
  if (s.state == engines::EngineState::kStopped) return;
  std::string message = s.message;
  if (s.state == engines::EngineState::kError) {
    // An engine that failed after its slice refused it memory: say so next to the exit status.
    std::optional<VgpuEngine> vgpu;
    {
      std::lock_guard lock(info_mu_);
      if (auto it = vgpu_engines_.find(s.instance_id); it != vgpu_engines_.end()) {
        vgpu = it->second;
      }
    }
    if (vgpu) {
      if (std::string hits = LimitHitsMessage(ReadSlices(*vgpu)); !hits.empty()) {
        message += (message.empty() ? "" : "; ") + ("VRAM limit reached: " + hits);
      }
    }
  }
  json::object body{{"state", engines::EngineStateName(s.state)},
                    {"state_message", message},
                    {"restart_count", s.restart_count}};
  // An rpc-server (-id) reports into instance id's distributed_servers entry, its port included.
  if (s.instance_id < 0) body["port"] = s.port;
  // The engine's secret (with every report, so that a lost one does not leave the gateways
  // without it) is added on the io_context, which owns secrets_.
  // The supervisor's thread must not block: hand the report to the io_context, where one
  // drainer sends reports in the order the states happened (STARTING before RUNNING).
  const std::string state(engines::EngineStateName(s.state));
  asio::post(ioc_, [this, id = s.instance_id, state, body = std::move(body)]() mutable {
    // An adopted engine's STARTING may be delivered after its first RUNNING; a real restart
    // always passes through ERROR first, so STARTING straight after RUNNING is stale.
    std::string& last = last_reported_[id];
    if (state == "STARTING" && last == "RUNNING") return;
    last = state;
    if (auto secret = secrets_.find(id); id > 0 && secret != secrets_.end()) {
      body["engine_secret"] = secret->second;
    }
    QueueReport(id, std::move(body));
  });
}

void InstanceManager::DropSecret(int64_t id) {
  engines::RemoveEngineSecret(config_.data_dir, id);
  secrets_.erase(id);
  std::lock_guard lock(info_mu_);
  if (auto info = engine_info_.find(id); info != engine_info_.end()) info->second.api_key.clear();
}

void InstanceManager::QueueReport(int64_t id, json::object body) {
  reports_.emplace_back(id, std::move(body));
  if (reporting_) return;
  reporting_ = true;
  asio::co_spawn(
      ioc_,
      [this]() -> asio::awaitable<void> {
        while (!reports_.empty()) {
          auto [id, body] = std::move(reports_.front());
          reports_.pop_front();
          co_await Report(id < 0 ? -id : id, std::move(body));
        }
        reporting_ = false;
      },
      asio::detached);
}

}  // namespace segma::worker
