#pragma once

// The OpenAI-compatible gateway as one object: key table, route table, limits, balancer, usage
// meter and the /v1 handlers.
//
// Wiring (for src/api/server_app.cc or a stand-alone `segma gateway`; done by the lead once the
// model store exists):
//
//   gateway::GatewayOptions gw_options;                  // defaults are sensible
//   gateway::Gateway gw(ioc.get_executor(), store, bus, SystemClock::Get(), registry,
//                       /*limits=*/nullptr /* = the limits stored with keys and projects */,
//                       /*usage_sink=*/nullptr /* = Store::InsertUsageRecords */, gw_options);
//   gw.Install(router);                                  // before the HttpServer starts serving
//   RETURN_IF_ERROR(gw.Start());   // loads keys and limits, seeds budgets, starts the usage writer
//   ... on every change of models / model-instances / workers that changes what the table uses
//   (EventBus or watch stream; not a heartbeat's readings), rebuild the routes off the I/O
//   threads and swap them in:
//     gateway::RouteTable::Builder b;
//     for (model : store.ListModels(...))               // one route per public model name
//       b.Add({.name = model.name, .deployments = {{
//               .deployment_id = model.id, .project_id = model.project_id, .weight = 1,
//               .replicas = {for each RUNNING instance: {.instance_id = inst.id,
//                   .base_url = "http://" + worker.address + ":" + inst.port,
//                   .healthy = worker READY}}}}});
//     gw.SetRoutes(b);
//   ... on shutdown, after the HttpServer stopped accepting and streams ended:
//     gw.Stop();                                         // flushes every usage record
//
// Keys and limits come from the store (at Start, then "api-keys"/"users"/"project-members"/
// "projects" events); nothing else needs feeding. Limits come from the LimitsSource given, or
// (nullptr) from the key table: the limits stored with keys and projects (ADR 0013).
//
// Thread-safety: all methods may be called from any thread; the handlers run on the server's
// connection strands. The executor, store, bus, clock, registry, limits and sink must outlive the
// gateway; the gateway must outlive the router's use.

#include <memory>

#include <boost/asio/any_io_executor.hpp>

#include "common/clock.h"
#include "common/event_bus.h"
#include "gateway/balancer.h"
#include "gateway/key_table.h"
#include "gateway/limits.h"
#include "gateway/openai_proxy.h"
#include "gateway/route_table.h"
#include "gateway/usage_meter.h"
#include "http/client.h"
#include "http/router.h"
#include "metrics/registry.h"
#include "store/store.h"

namespace segma::gateway {

struct GatewayOptions {
  ProxyOptions proxy;
  BalancerOptions balancer;
  KeyTableOptions keys;
  UsageMeterOptions usage;
  size_t max_idle_upstream_connections_per_host = 64;
};

class Gateway {
 public:
  // `limits` null: the limits stored with keys and projects (KeyTableLimitsSource).
  // `usage_sink` null: usage records go to store.InsertUsageRecords.
  Gateway(boost::asio::any_io_executor executor, store::Store& store, EventBus& bus,
          const Clock& clock, metrics::Registry& registry, const LimitsSource* limits = nullptr,
          UsageSink* usage_sink = nullptr, GatewayOptions options = {});
  ~Gateway();  // Stop()
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Adds GET /v1/models, POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/rerank
  // and /v1/audio/transcriptions.
  void Install(http::Router& router);

  // Opens the usage journal (options.usage.journal; kFailedPrecondition if another process holds
  // it, kUnavailable if it cannot be read: nothing else is started then), loads the key table and
  // starts the background threads (key events, usage writer). A store error is returned, and the
  // gateway keeps retrying the load in the background (requests are answered 401 meanwhile).
  // With a key table that follows the store, first writes the records an earlier run left in the
  // journal to the store, then seeds the limiter's daily and monthly budgets from the usage
  // recorded today and this month (SeedBudgets), so neither a restart nor a crash resets a budget.
  Status Start();
  // Stops the background threads and writes every queued usage record (blocking).
  void Stop();

  // Builds `routes` (keeping the live load/health counters of instances that stay) and swaps the
  // snapshot in. kInvalidArgument from RouteTable::Builder::Build; the old table then stays.
  Status SetRoutes(const RouteTable::Builder& routes);
  // Swaps in a table built elsewhere. To keep counters, build it with Build(routes().get()).
  void SetRoutes(std::shared_ptr<const RouteTable> table);
  std::shared_ptr<const RouteTable> routes() const;

  KeyTable& keys() { return keys_; }
  const KeyTable& keys() const { return keys_; }
  // Incremented by every successful SetRoutes, after the swap (a reader that sees the new version
  // then reads the new table). Callers set routes only when they changed (the server: on events
  // that change what the table is built from, ServerApp::HandleChanges), so replicas polling the
  // version re-read the state only then. Thread-safe.
  uint64_t routes_version() const { return routes_version_.load(); }
  Limiter& limiter() { return limiter_; }
  Balancer& balancer() { return balancer_; }
  UsageMeter& usage() { return usage_; }

 private:
  store::Store& store_;
  const Clock& clock_;
  const bool follow_store_;
  std::unique_ptr<StoreUsageSink> own_sink_;
  KeyTable keys_;
  KeyTableLimitsSource table_limits_;
  Limiter limiter_;
  Balancer balancer_;
  UsageMeter usage_;
  http::HttpClient client_;
  OpenAiProxy proxy_;
  std::mutex routes_mu_;  // serialises SetRoutes (build from the current table, then swap)
  std::atomic<uint64_t> routes_version_{0};
};

// Adds the tokens (prompt + completion) recorded in `store` since the start of today and of this
// month (UTC, at `now`) to the daily and monthly budgets of every key and project in `limiter`.
// kUnavailable etc. from the store (nothing seeded then).
Status SeedBudgets(store::Store& store, Limiter& limiter, Timestamp now);

}  // namespace segma::gateway
