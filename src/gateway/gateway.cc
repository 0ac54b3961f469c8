#include "gateway/gateway.h"

#include <chrono>
#include <map>

#include "common/logging.h"

namespace segma::gateway {

namespace {

UsageSink& SinkOr(UsageSink* given, std::unique_ptr<StoreUsageSink>& own, store::Store& store) {
  if (given != nullptr) return *given;
  own = std::make_unique<StoreUsageSink>(store);
  return *own;
}

}  // namespace

Gateway::Gateway(boost::asio::any_io_executor executor, store::Store& store, EventBus& bus,
                 const Clock& clock, metrics::Registry& registry, const LimitsSource* limits,
                 UsageSink* usage_sink, GatewayOptions options)
    : store_(store),
      clock_(clock),
      follow_store_(options.keys.follow_store),
      keys_(store, bus, clock, options.keys),
      table_limits_(keys_),
      limiter_(limits != nullptr ? *limits : table_limits_, clock),
      balancer_(options.balancer),
      usage_(SinkOr(usage_sink, own_sink_, store), options.usage, &registry),
      client_(std::move(executor), options.max_idle_upstream_connections_per_host),
      proxy_(OpenAiProxy::Deps{keys_, limiter_, balancer_, usage_, client_, registry, clock},
             options.proxy) {}

Gateway::~Gateway() { Stop(); }

void Gateway::Install(http::Router& router) { proxy_.Install(router); }

Status Gateway::Start() {
  // Opens the usage journal and queues what an earlier run left in it (ADR 0024).
  RETURN_IF_ERROR(usage_.Start());
  Status s = keys_.Start();
  if (follow_store_) {
    // The replayed records reach the store before the budgets are read from it, so that a
    // budget counts every request answered before a crash.
    if (Status flushed = usage_.Flush(); !flushed.ok()) {
      Logger("gateway")->warn("replayed usage records not written yet: {}", flushed.ToString());
    }
    // Before the first admission: the budgets go on from what was recorded before this start.
    if (Status seeded = SeedBudgets(store_, limiter_, clock_.Now()); !seeded.ok()) {
      Logger("gateway")->warn("could not seed token budgets from recorded usage: {}",
                              seeded.ToString());
      if (s.ok()) s = seeded;
    }
  }
  return s;
}

Status SeedBudgets(store::Store& store, Limiter& limiter, Timestamp now) {
  using namespace std::chrono;
  const sys_days today = floor<days>(now);
  const year_month_day ymd{today};
  const sys_days month_start = ymd.year() / ymd.month() / 1;
  struct Totals {
    int64_t day = 0;
    int64_t month = 0;
  };
  std::map<int64_t, Totals> keys, projects;
  for (store::UsageGroupBy group : {store::UsageGroupBy::kKey, store::UsageGroupBy::kProject}) {
    auto& into = group == store::UsageGroupBy::kKey ? keys : projects;
    for (bool month : {false, true}) {
      store::UsageQuery q;
      q.group_by = group;
      q.from = Timestamp(month ? month_start : today);
      // Records stamped a little ahead of `now` (another clock) still count.
      q.to = now + hours(1);
      ASSIGN_OR_RETURN(std::vector<store::UsageSummary> rows, store.QueryUsage(q));
      for (const store::UsageSummary& row : rows) {
        // The empty-key row is GPU time no key or project is known for (ADR 0031): no budget.
        if (row.key.empty()) continue;
        const int64_t id = std::stoll(row.key);
        const int64_t tokens = row.prompt_tokens + row.completion_tokens;
        (month ? into[id].month : into[id].day) = tokens;
      }
    }
  }
  for (const auto& [id, t] : keys) limiter.SeedKeyBudget(id, t.day, t.month);
  for (const auto& [id, t] : projects) limiter.SeedProjectBudget(id, t.day, t.month);
  return OkStatus();
}

void Gateway::Stop() {
  keys_.Stop();
  usage_.Stop();
}

Status Gateway::SetRoutes(const RouteTable::Builder& routes) {
  std::lock_guard lock(routes_mu_);
  auto current = proxy_.routes();
  ASSIGN_OR_RETURN(std::shared_ptr<const RouteTable> table, routes.Build(current.get()));
  proxy_.SetRoutes(std::move(table));
  routes_version_.fetch_add(1);
  return OkStatus();
}

void Gateway::SetRoutes(std::shared_ptr<const RouteTable> table) {
  std::lock_guard lock(routes_mu_);
  proxy_.SetRoutes(std::move(table));
  routes_version_.fetch_add(1);
}

std::shared_ptr<const RouteTable> Gateway::routes() const { return proxy_.routes(); }

}  // namespace segma::gateway
