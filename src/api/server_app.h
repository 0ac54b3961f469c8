#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include "api/api.h"
#include "api/server_metrics.h"
#include "api/worker_change_filter.h"
#include "controllers/instance_scheduler.h"
#include "controllers/pass_pacer.h"
#include "controllers/replica_sync.h"
#include "controllers/rescheduler.h"
#include "controllers/worker_liveness.h"
#include "gateway/gateway.h"
#include "http/server.h"

namespace segma::api {

struct ServerConfig {
  std::string data_dir = "./data";
  std::string address = "0.0.0.0";
  uint16_t port = 8080;
  int io_threads = 2;
  // How long an I/O thread polls after its work before it sleeps (http::RunIoContext); 0: off.
  std::chrono::microseconds busy_poll{0};
  int blocking_threads = 4;
  // A worker is NOT_READY after this long without a heartbeat.
  std::chrono::seconds heartbeat_grace{60};
  // Instances of a worker NOT_READY this long are rescheduled (--reschedule-grace).
  std::chrono::seconds reschedule_grace{300};
  // At most this many instances are being rescheduled at once.
  int reschedule_max_at_once = 10;
  // Placements whose claim serves fewer sequences get a warning (--min-useful-sequences;
  // docs/scheduler.md "Concurrency").
  int min_useful_sequences = 8;
  // The model controllers (replica sync, rescheduling, placement) also run on every change of
  // models and instances, and of workers but for their readings (WorkerChangeFilter); this
  // sweep catches the rest (e.g. grace periods expiring, GPU memory freed).
  std::chrono::seconds controller_sweep{10};
  std::optional<std::string> bootstrap_password;  // SEGMA_BOOTSTRAP_PASSWORD
  // The token of GET /v2/metrics/targets (Prometheus http_sd): this file, or
  // <data_dir>/metrics_token when empty; created when missing (--metrics-token-file).
  std::string metrics_token_file;
  http::ServerOptions http;
  // How the gateway picks a replica (--gateway-routing).
  gateway::RoutingPolicy routing_policy = gateway::RoutingPolicy::kAffinity;
  // The gateway's usage journal (ADR 0024) in <data_dir>/usage-journal, fsync'd this often; off
  // with usage_journal = false (records then live in memory until written, as before).
  bool usage_journal = true;
  std::chrono::milliseconds usage_fsync_interval{100};
  gateway::JournalFailurePolicy usage_journal_failure = gateway::JournalFailurePolicy::kServe;
  // Audit records older than this many days are pruned at start and hourly after
  // (--audit-retention-days; docs/security.md "Audit trail"). 0: kept forever.
  int audit_retention_days = 0;
};

// The control plane in one object: store, event bus, identity, REST /v2, probes, metrics and
// controllers, served on one port. main() creates it, adds extras (an embedded worker), runs it.
// Not copyable; destroy only after Run() returned.
class ServerApp {
 public:
  // Opens (and migrates) the store in `config.data_dir`, creates the default cluster and the
  // bootstrap admin. kUnavailable / kFailedPrecondition when the data dir or store is unusable.
  static Result<std::unique_ptr<ServerApp>> Create(ServerConfig config,
                                                   const Clock& clock = SystemClock::Get());
  ~ServerApp();

  // Binds the port (0 = any free one) and starts the controllers. Returns the bound port.
  Result<uint16_t> Start();
  // Runs the io_context on the configured threads until Shutdown() or SIGINT/SIGTERM.
  void Run();
  // Graceful: stop accepting, end streams, wait briefly for in-flight requests. Thread-safe.
  void Shutdown();

  boost::asio::io_context& io() { return ioc_; }
  store::Store& store() { return *store_; }
  gateway::Gateway& gateway() { return *gateway_; }
  auth::ApiKeyService& api_keys() { return *api_keys_; }
  metrics::Registry& metrics() { return metrics_; }
  // The password set for the bootstrap admin by this start, if it created one.
  const std::optional<std::string>& initial_admin_password() const { return initial_password_; }
  // The default cluster's registration token (for the embedded worker).
  Result<std::string> DefaultRegistrationToken();

  // One synchronous pass of every controller, in order: worker liveness, rescheduling, replica
  // sync, placement. The background passes (timer and events) run the same function; calls are
  // serialised, so after it returns every change made before the call has been acted on. For
  // tests (advance a FakeClock, then call this) and for the sweep. kUnavailable from the store.
  Status RunControllersOnce();

  // Returns once the changes published before the call have been acted on: the route table
  // rebuilt if they changed what it is built from. False if that took longer than `timeout`.
  // For tests.
  bool WaitForRouteUpdates(std::chrono::seconds timeout = std::chrono::seconds(30));
  // How often the route table was rebuilt from the store (the version the gateway's replicas
  // follow moves only when a rebuild changed the table).
  uint64_t route_rebuilds() const { return route_rebuilds_.load(); }

 private:
  ServerApp(ServerConfig config, const Clock& clock);
  Status Init();
  void ScheduleLiveness();
  // Rebuilds the gateway's route table from models, RUNNING instances and workers; swaps it in
  // only if it differs from the last one.
  Status RebuildRoutes();
  // From the notifier of changes_: queues one HandleChanges on changes_strand_ unless one is
  // already queued.
  void QueueChanges();
  // Pops the published changes; triggers a controller pass if one changed what the controllers
  // act on, and rebuilds the routes if one changed what they are built from. A heartbeat that
  // only refreshes a worker's readings does neither (issue 17): the sweep acts on new readings.
  void HandleChanges();
  void ScheduleSweep();
  // Queues a PruneAuditEvents of the rows older than the retention on the blocking pool, if a
  // retention is set and the last prune is an hour old. From Start and the sweep timer only.
  void MaybePruneAudit();
  // Queues one controller pass on the blocking pool unless one is already queued, no sooner after
  // the last pass than that pass took.
  void TriggerControllers();

  ServerConfig config_;
  const Clock& clock_;
  boost::asio::io_context ioc_;
  boost::asio::thread_pool blocking_;
  metrics::Registry metrics_;
  std::unique_ptr<ServerMetrics> server_metrics_;
  EventBus bus_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<auth::IdentityService> identity_;
  std::unique_ptr<auth::ApiKeyService> api_keys_;
  std::unique_ptr<auth::WorkerTokens> worker_tokens_;
  std::unique_ptr<Services> services_;
  std::unique_ptr<controllers::WorkerLivenessController> liveness_;
  // The OpenAI gateway (/v1) and what feeds its route table.
  std::unique_ptr<gateway::Gateway> gateway_;
  // Serialises HandleChanges: the route table is built from one change after the other.
  boost::asio::strand<boost::asio::thread_pool::executor_type> changes_strand_;
  std::atomic<bool> changes_queued_{false};
  // Used on changes_strand_ only.
  WorkerChangeFilter routing_changes_;
  WorkerChangeFilter inventory_changes_;
  std::map<std::string, gateway::ModelRouteSpec> last_routes_;  // by public name
  bool routes_built_ = false;
  std::atomic<uint64_t> route_rebuilds_{0};
  http::Router router_;
  std::unique_ptr<http::HttpServer> server_;
  std::unique_ptr<boost::asio::steady_timer> liveness_timer_;
  std::optional<std::string> initial_password_;
  std::atomic<bool> shutting_down_{false};
  std::unique_ptr<controllers::Rescheduler> rescheduler_;
  std::unique_ptr<controllers::ReplicaSync> replica_sync_;
  std::unique_ptr<StoreBackendCatalog> backend_catalog_;  // before the scheduler that uses it
  std::unique_ptr<controllers::InstanceScheduler> instance_scheduler_;
  std::mutex controllers_mu_;  // one pass at a time
  std::atomic<bool> controllers_queued_{false};
  controllers::PassPacer pacer_;  // when a triggered pass may start; see TriggerControllers
  std::unique_ptr<boost::asio::steady_timer> sweep_timer_;
  std::optional<Timestamp> last_audit_prune_;  // used by MaybePruneAudit only
  // Every change (store events); declared last so that it goes before what its handler uses.
  std::shared_ptr<Subscription> changes_;
};

}  // namespace segma::api
