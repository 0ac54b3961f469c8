#include "gateway/gateway.h"

#include "gateway/replica.h"

namespace segma::gateway {

namespace {

UsageSink& SinkOr(UsageSink* given, std::unique_ptr<StoreUsageSink>& own, store::Store& store) {
  if (given != nullptr) return *given;
  own = std::make_unique<StoreUsageSink>(store);
  return *own;
}

}  // namespace

Gateway::Gateway(boost::asio::any_io_executor executor, store::Store& store, EventBus& bus,
                 const Clock& clock, metrics::Registry& registry, const LimitsSource& limits,
                 UsageSink* usage_sink, GatewayOptions options)
    : keys_(store, bus, clock, options.keys),
      limiter_(limits, clock),
      balancer_(options.balancer),
      usage_(SinkOr(usage_sink, own_sink_, store), options.usage),
      client_(std::move(executor), options.max_idle_upstream_connections_per_host),
      proxy_(OpenAiProxy::Deps{keys_, limiter_, balancer_, usage_, client_, registry, clock},
             options.proxy) {}

Gateway::~Gateway() { Stop(); }

void Gateway::Install(http::Router& router) { proxy_.Install(router); }

Status Gateway::Start() {
  usage_.Start();
  return keys_.Start();
}

void Gateway::Stop() {
  keys_.Stop();
  usage_.Stop();
}

Status Gateway::SetRoutes(const RouteTable::Builder& routes) {
  std::lock_guard lock(routes_mu_);
  auto current = proxy_.routes();
  ASSIGN_OR_RETURN(std::shared_ptr<const RouteTable> table, routes.Build(current.get()));
  BumpRoutesVersion(*table);
  proxy_.SetRoutes(std::move(table));
  return OkStatus();
}

void Gateway::SetRoutes(std::shared_ptr<const RouteTable> table) {
  std::lock_guard lock(routes_mu_);
  BumpRoutesVersion(*table);
  proxy_.SetRoutes(std::move(table));
}

void Gateway::BumpRoutesVersion(const RouteTable& table) {
  // The server rebuilds on every worker heartbeat; replicas re-read only real changes.
  std::string serialized = json::serialize(RoutesToJson(table));
  if (serialized == last_routes_) return;
  last_routes_ = std::move(serialized);
  routes_version_.fetch_add(1);
}

std::shared_ptr<const RouteTable> Gateway::routes() const { return proxy_.routes(); }

}  // namespace segma::gateway
