#include "api/server_app.h"

#include <algorithm>
#include <filesystem>
#include <future>

#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>
#include <sys/stat.h>

#include "api/gateway_sync.h"
#include "api/metrics_targets.h"
#include "common/crypto.h"
#include "common/logging.h"
#include "console/console.h"
#include "http/io_loop.h"
#include "store/sqlite/sqlite_store.h"

namespace segma::api {

namespace asio = boost::asio;

namespace {

bool SameReplicas(const std::vector<gateway::ReplicaSpec>& a,
                  const std::vector<gateway::ReplicaSpec>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
    return x.instance_id == y.instance_id && x.base_url == y.base_url && x.healthy == y.healthy &&
           x.api_key == y.api_key;
  });
}

bool SameDeployments(const std::vector<gateway::DeploymentSpec>& a,
                     const std::vector<gateway::DeploymentSpec>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
    return x.deployment_id == y.deployment_id && x.project_id == y.project_id &&
           x.weight == y.weight && x.upstream_model == y.upstream_model &&
           SameReplicas(x.replicas, y.replicas);
  });
}

bool SameRoutes(const std::map<std::string, gateway::ModelRouteSpec>& a,
                const std::map<std::string, gateway::ModelRouteSpec>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
    const gateway::ModelRouteSpec& r = x.second;
    const gateway::ModelRouteSpec& q = y.second;
    return r.name == q.name && r.created_at == q.created_at && r.owned_by == q.owned_by &&
           SameDeployments(r.deployments, q.deployments);
  });
}

}  // namespace

ServerApp::ServerApp(ServerConfig config, const Clock& clock)
    : config_(std::move(config)),
      clock_(clock),
      ioc_(config_.io_threads),
      blocking_(static_cast<size_t>(config_.blocking_threads)),
      changes_strand_(asio::make_strand(blocking_)),
      routing_changes_(RoutingFingerprint),
      inventory_changes_(InventoryFingerprint) {}

ServerApp::~ServerApp() {
  Shutdown();
  if (gateway_) gateway_->Stop();
  blocking_.join();
}

Result<std::unique_ptr<ServerApp>> ServerApp::Create(ServerConfig config, const Clock& clock) {
  std::unique_ptr<ServerApp> app(new ServerApp(std::move(config), clock));
  RETURN_IF_ERROR(app->Init());
  return app;
}

Status ServerApp::Init() {
  std::error_code ec;
  std::filesystem::create_directories(config_.data_dir, ec);
  if (ec) {
    return UnavailableError("cannot create data dir " + config_.data_dir + ": " + ec.message());
  }
  ::chmod(config_.data_dir.c_str(), 0700);  // credentials and the database live here
  ASSIGN_OR_RETURN(store_, store::OpenSqliteStore(config_.data_dir + "/segma.db", bus_, clock_));
  ASSIGN_OR_RETURN(std::string signing_key, auth::LoadOrCreateSigningKey(config_.data_dir));
  identity_ = std::make_unique<auth::IdentityService>(*store_, clock_, std::move(signing_key));
  api_keys_ = std::make_unique<auth::ApiKeyService>(*store_, clock_);
  worker_tokens_ = std::make_unique<auth::WorkerTokens>(*store_);
  liveness_ = std::make_unique<controllers::WorkerLivenessController>(*store_, clock_,
                                                                      config_.heartbeat_grace);
  scheduler::RescheduleOptions reschedule;
  reschedule.grace_period = config_.reschedule_grace;
  reschedule.max_at_once = config_.reschedule_max_at_once;
  rescheduler_ = std::make_unique<controllers::Rescheduler>(*store_, clock_, reschedule);
  replica_sync_ = std::make_unique<controllers::ReplicaSync>(*store_);
  backend_catalog_ = std::make_unique<StoreBackendCatalog>(*store_);
  scheduler::SchedulerOptions placement;
  placement.min_useful_sequences = config_.min_useful_sequences;
  instance_scheduler_ =
      std::make_unique<controllers::InstanceScheduler>(*store_, *backend_catalog_, placement);

  // The default cluster, with its registration token, exists from the first start on.
  Result<types::Cluster> cluster = store_->GetDefaultCluster();
  if (!cluster.ok() && cluster.status().code() == StatusCode::kNotFound) {
    types::Cluster c;
    c.name = "default";
    c.description = "created at first start";
    c.is_default = true;
    c.registration_token = "segma_ct_" + RandomToken(24);
    cluster = store_->CreateCluster(c);
  }
  RETURN_IF_ERROR(cluster.status());

  ASSIGN_OR_RETURN(initial_password_,
                   identity_->BootstrapAdmin(config_.data_dir, config_.bootstrap_password));

  server_metrics_ = std::make_unique<ServerMetrics>(metrics_);
  services_ = std::make_unique<Services>(
      Services{*store_, bus_, *identity_, *api_keys_, *worker_tokens_, clock_, blocking_,
               ApiOptions{config_.data_dir, false, HmacSha256(signing_key, "segma worker proxy"),
                          config_.min_useful_sequences},
               server_metrics_.get()});
  InstallProbes(router_, *services_, metrics_);
  Install(router_, *services_, ControlPlaneRoutes());
  gateway::GatewayOptions gateway_options;
  gateway_options.balancer.policy = config_.routing_policy;
  if (config_.usage_journal) {
    gateway_options.usage.journal.dir = config_.data_dir + "/usage-journal";
    gateway_options.usage.journal.fsync_interval = config_.usage_fsync_interval;
  }
  gateway_options.usage.on_journal_failure = config_.usage_journal_failure;
  gateway_ =
      std::make_unique<gateway::Gateway>(ioc_.get_executor(), *store_, bus_, clock_, metrics_,
                                         /*limits=*/nullptr, nullptr, gateway_options);
  gateway_->Install(router_);
  // Stand-alone `segma gateway` replicas follow this gateway's state (ADR 0009).
  ASSIGN_OR_RETURN(std::string gateway_token, LoadOrCreateGatewayToken(config_.data_dir));
  InstallGatewaySync(router_, *gateway_, *store_, blocking_, std::move(gateway_token));
  ASSIGN_OR_RETURN(std::string metrics_token,
                   LoadMetricsToken(config_.data_dir, config_.metrics_token_file));
  InstallMetricsTargets(router_, *store_, blocking_, std::move(metrics_token));
  // The web console answers every other GET (docs/console.md).
  console::Install(router_);
  return OkStatus();
}

Result<std::string> ServerApp::DefaultRegistrationToken() {
  ASSIGN_OR_RETURN(types::Cluster c, store_->GetDefaultCluster());
  return c.registration_token;
}

Result<uint16_t> ServerApp::Start() {
  RETURN_IF_ERROR(gateway_->Start());
  changes_ = bus_.Subscribe("");
  // The notifier runs under the store's and bus's locks: it only queues work.
  changes_->SetNotifier([this] { QueueChanges(); });
  // The first table, built on the strand as every later one is.
  std::promise<Status> built;
  asio::post(changes_strand_, [this, &built] { built.set_value(RebuildRoutes()); });
  RETURN_IF_ERROR(built.get_future().get());
  config_.http.name = "server";
  config_.http.strand_per_connection = config_.io_threads > 1;
  server_ = std::make_unique<http::HttpServer>(ioc_, router_, metrics_, config_.http);
  ASSIGN_OR_RETURN(uint16_t port, server_->Listen(config_.address, config_.port));
  liveness_timer_ = std::make_unique<asio::steady_timer>(ioc_);
  ScheduleLiveness();
  sweep_timer_ = std::make_unique<asio::steady_timer>(ioc_);
  ScheduleSweep();
  MaybePruneAudit();
  TriggerControllers();  // instances left PENDING by a previous run
  return port;
}

Status ServerApp::RunControllersOnce() {
  std::lock_guard lock(controllers_mu_);
  // What changed is re-read from the store.
  const auto start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(liveness_->Reconcile().status());
  RETURN_IF_ERROR(rescheduler_->Reconcile().status());
  RETURN_IF_ERROR(replica_sync_->Reconcile().status());
  ASSIGN_OR_RETURN(controllers::InstanceScheduler::PassResult pass,
                   instance_scheduler_->Reconcile());
  const auto end = std::chrono::steady_clock::now();
  pacer_.Ran(start, end);
  server_metrics_->ObservePass(std::chrono::duration<double>(end - start).count(), pass);
  // The counts the metrics show, as of this pass.
  return server_metrics_->Refresh(*store_);
}

void ServerApp::TriggerControllers() {
  if (shutting_down_ || controllers_queued_.exchange(true)) return;
  const auto run = [this] {
    asio::post(blocking_, [this] {
      // Cleared before the pass: a change made during it queues exactly one more.
      controllers_queued_ = false;
      if (shutting_down_) return;
      Status s = RunControllersOnce();
      if (!s.ok()) Logger("controllers")->error("controller pass failed: {}", s.ToString());
    });
  };
  // Paced (PassPacer): while changes keep coming, passes take at most half of the time.
  const auto at = pacer_.EarliestStart();
  if (std::chrono::steady_clock::now() >= at) return run();
  auto timer = std::make_shared<asio::steady_timer>(ioc_, at);
  timer->async_wait([timer, run](boost::system::error_code ec) {
    if (!ec) run();
  });
}

void ServerApp::ScheduleSweep() {
  sweep_timer_->expires_after(config_.controller_sweep);
  sweep_timer_->async_wait([this](boost::system::error_code ec) {
    if (ec || shutting_down_) return;
    TriggerControllers();
    MaybePruneAudit();
    ScheduleSweep();
  });
}

void ServerApp::MaybePruneAudit() {
  if (config_.audit_retention_days <= 0) return;
  const Timestamp now = clock_.Now();
  if (last_audit_prune_ && now - *last_audit_prune_ < std::chrono::hours(1)) return;
  last_audit_prune_ = now;
  const Timestamp before = now - std::chrono::hours(24) * config_.audit_retention_days;
  asio::post(blocking_, [this, before] {
    Result<int64_t> pruned = store_->PruneAuditEvents(before);
    if (!pruned.ok()) {
      Logger("server")->error("pruning the audit trail failed: {}", pruned.status().ToString());
    } else if (*pruned > 0) {
      Logger("server")->info("pruned {} audit records older than {}", *pruned,
                             FormatRfc3339(before));
    }
  });
}

void ServerApp::ScheduleLiveness() {
  liveness_timer_->expires_after(std::chrono::seconds(1));
  liveness_timer_->async_wait([this](boost::system::error_code ec) {
    if (ec || shutting_down_) return;
    asio::post(blocking_, [this] {
      Result<std::vector<types::Worker>> r = liveness_->Reconcile();
      if (!r.ok()) Logger("controllers")->error("liveness pass failed: {}", r.status().ToString());
      asio::post(ioc_, [this] {
        if (!shutting_down_) ScheduleLiveness();
      });
    });
  });
}

void ServerApp::Run() {
  asio::signal_set signals(ioc_, SIGINT, SIGTERM);
  signals.async_wait([this](boost::system::error_code ec, int sig) {
    if (ec) return;
    Logger("server")->info("signal {}: shutting down", sig);
    Shutdown();
  });
  http::RunIoThreads(ioc_, config_.io_threads, config_.busy_poll);
}

void ServerApp::QueueChanges() {
  if (changes_queued_.exchange(true)) return;
  asio::post(changes_strand_, [this] {
    // Cleared before popping: an event published during this task queues exactly one more.
    changes_queued_ = false;
    if (shutting_down_) return;
    HandleChanges();
  });
}

void ServerApp::HandleChanges() {
  bool routes = false;
  bool controllers = false;
  if (changes_->overflowed()) {
    // Fell Subscription::kMaxQueued events behind, and lost them: a new subscription, then
    // everything re-read from the store, as after a start.
    Logger("server")->warn("more than {} changes queued: rebuilding from the store",
                           Subscription::kMaxQueued);
    changes_ = bus_.Subscribe("");
    changes_->SetNotifier([this] { QueueChanges(); });
    routing_changes_ = WorkerChangeFilter(RoutingFingerprint);
    inventory_changes_ = WorkerChangeFilter(InventoryFingerprint);
    routes = controllers = true;
  }
  while (std::optional<Event> e = changes_->TryPop()) {
    if (e->resource == "workers") {
      // Both filters see every worker event, so that each remembers the latest fingerprint.
      routes |= routing_changes_.Changes(*e);
      controllers |= inventory_changes_.Changes(*e);
    } else if (e->resource == "models" || e->resource == "model-instances") {
      routes = controllers = true;
    } else if (e->resource == "model-routes") {
      routes = true;
    }
  }
  if (controllers) TriggerControllers();
  if (!routes) return;
  Status s = RebuildRoutes();
  if (!s.ok()) Logger("gateway")->error("route table rebuild failed: {}", s.ToString());
}

bool ServerApp::WaitForRouteUpdates(std::chrono::seconds timeout) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> f = done->get_future();
  asio::post(changes_strand_, [done] { done->set_value(); });
  return f.wait_for(timeout) == std::future_status::ready;
}

Status ServerApp::RebuildRoutes() {
  route_rebuilds_.fetch_add(1);
  store::ListOptions all;
  all.per_page = store::ListOptions::kMaxPerPage;
  std::vector<types::ModelInstance> running;
  store::ModelInstanceFilter is_running;
  is_running.state = types::InstanceState::kRunning;
  for (all.page = 1;; ++all.page) {
    ASSIGN_OR_RETURN(auto page, store_->ListModelInstances(all, is_running));
    for (auto& i : page.items) running.push_back(std::move(i));
    if (static_cast<int64_t>(all.page) * all.per_page >= page.total) break;
  }
  // The workers (each decoded with its status) only when some instance runs.
  std::map<int64_t, types::Worker> workers;
  for (all.page = 1; !running.empty(); ++all.page) {
    ASSIGN_OR_RETURN(auto page, store_->ListWorkers(all));
    for (auto& w : page.items) workers.emplace(w.id, std::move(w));
    if (static_cast<int64_t>(all.page) * all.per_page >= page.total) break;
  }
  std::map<int64_t, std::vector<gateway::ReplicaSpec>> replicas;  // model id → RUNNING replicas
  for (const types::ModelInstance& i : running) {
    auto w = workers.find(i.worker_id);
    if (w == workers.end() || i.port <= 0) continue;
    replicas[i.model_id].push_back(
        gateway::ReplicaSpec{i.id, fmt::format("http://{}:{}", w->second.address, i.port),
                             w->second.state == types::WorkerState::kReady, i.engine_secret});
  }
  // One public name per model name; models of the same name in different projects become
  // deployments of one route, each usable only by keys of its own project.
  std::map<std::string, gateway::ModelRouteSpec> routes;
  std::map<int64_t, std::string> model_names;  // model id → name, for model routes
  for (all.page = 1;; ++all.page) {
    ASSIGN_OR_RETURN(auto page, store_->ListModels(all));
    for (const types::Model& m : page.items) {
      gateway::ModelRouteSpec& r = routes[m.name];
      r.name = m.name;
      r.created_at = ToUnixMillis(m.created_at) / 1000;
      gateway::DeploymentSpec d;
      d.deployment_id = m.id;
      d.project_id = m.project_id;
      d.weight = 1;
      d.replicas = replicas[m.id];
      r.deployments.push_back(std::move(d));
      model_names.emplace(m.id, m.name);
    }
    if (static_cast<int64_t>(all.page) * all.per_page >= page.total) break;
  }
  // Model routes (ADR 0012): the route's name, for keys of its project, over its target models
  // with their weights (0: fallback only, tried in target order), each model's engines serving
  // it under the model's own name. A route name shared with models of other projects is one
  // public name whose deployments each stay with their project, as for models.
  for (all.page = 1;; ++all.page) {
    ASSIGN_OR_RETURN(auto page, store_->ListModelRoutes(all));
    for (const types::ModelRoute& mr : page.items) {
      std::vector<gateway::DeploymentSpec> deployments;
      for (const types::ModelRouteTarget& t : mr.targets) {
        auto name = model_names.find(t.model_id);
        if (name == model_names.end()) continue;  // deleted since the models were read
        gateway::DeploymentSpec d;
        d.deployment_id = t.model_id;
        d.project_id = mr.project_id;
        d.weight = static_cast<uint32_t>(t.weight);
        d.upstream_model = name->second;
        d.replicas = replicas[t.model_id];
        deployments.push_back(std::move(d));
      }
      if (deployments.empty()) continue;
      gateway::ModelRouteSpec& r = routes[mr.name];
      if (r.deployments.empty()) r.created_at = ToUnixMillis(mr.created_at) / 1000;
      r.name = mr.name;
      for (auto& d : deployments) r.deployments.push_back(std::move(d));
    }
    if (static_cast<int64_t>(all.page) * all.per_page >= page.total) break;
  }
  // Relevant events that leave the table as it was (e.g. an instance going from SCHEDULED to
  // STARTING) change nothing: replicas polling the version are not sent the same table again.
  if (routes_built_ && SameRoutes(routes, last_routes_)) return OkStatus();
  gateway::RouteTable::Builder builder;
  for (const auto& [name, spec] : routes) builder.Add(spec);
  RETURN_IF_ERROR(gateway_->SetRoutes(builder));
  last_routes_ = std::move(routes);
  routes_built_ = true;
  return OkStatus();
}

void ServerApp::Shutdown() {
  if (shutting_down_.exchange(true)) return;
  asio::post(ioc_, [this] {
    if (liveness_timer_) liveness_timer_->cancel();
    if (sweep_timer_) sweep_timer_->cancel();
    if (server_) server_->Stop();
    // In-flight requests get a short grace, then every connection is closed and run() returns.
    auto grace = std::make_shared<asio::steady_timer>(ioc_, std::chrono::seconds(2));
    grace->async_wait([this, grace](boost::system::error_code) {
      if (server_) server_->CloseAll();
      auto final_stop = std::make_shared<asio::steady_timer>(ioc_, std::chrono::milliseconds(200));
      final_stop->async_wait([this, final_stop](boost::system::error_code) {
        // Streams have ended: every queued usage record is written before the process exits.
        if (gateway_) gateway_->Stop();
        ioc_.stop();
      });
    });
  });
}

}  // namespace segma::api
