#include "api/metrics_targets.h"

#include <fmt/format.h>

#include "api/gateway_sync.h"
#include "common/crypto.h"
#include "http/server.h"

namespace segma::api {

namespace asio = boost::asio;

Result<std::string> LoadMetricsToken(const std::string& data_dir, const std::string& token_file) {
  return LoadOrCreateTokenFile(token_file.empty() ? data_dir + "/metrics_token" : token_file,
                               "segma_mt_");
}

namespace {

json::object Group(std::string target, json::object labels) {
  return json::object{{"targets", json::array{json::value(std::move(target))}},
                      {"labels", std::move(labels)}};
}

}  // namespace

json::array MetricsTargets(std::string_view server_address, const store::ScrapeTargets& targets) {
  json::array out;
  out.reserve(1 + targets.workers.size() + targets.engines.size());
  out.emplace_back(Group(std::string(server_address), {{"segma_role", "server"}}));
  for (const store::WorkerEndpoint& w : targets.workers) {
    if (w.port <= 0 || w.address.empty()) continue;
    out.emplace_back(
        Group(fmt::format("{}:{}", w.address, w.port),
              {{"segma_role", "worker"}, {"worker", w.name}, {"worker_id", std::to_string(w.id)}}));
  }
  for (const store::EngineEndpoint& e : targets.engines) {
    out.emplace_back(
        Group(fmt::format("{}:{}", e.address, e.port), {{"segma_role", "engine"},
                                                        {"worker", e.worker},
                                                        {"deployment", e.deployment},
                                                        {"instance", e.instance},
                                                        {"project", std::to_string(e.project_id)},
                                                        {"backend", e.backend}}));
  }
  return out;
}

void InstallMetricsTargets(http::Router& router, store::Store& store, asio::thread_pool& blocking,
                           std::string token) {
  router.Add(
      http::bhttp::verb::get, "/v2/metrics/targets",
      [&store, &blocking, token](http::RequestContext& ctx) -> asio::awaitable<http::Response> {
        std::optional<std::string> bearer = ctx.BearerToken();
        if (!bearer || !ConstantTimeEquals(*bearer, token)) {
          co_return http::Response::Error(
              UnauthenticatedError("the metrics token is required (Authorization: Bearer)"));
        }
        std::string host;
        if (auto h = ctx.req.find(http::bhttp::field::host); h != ctx.req.end()) {
          host = std::string(h->value());
        }
        http::Response res =
            co_await http::RunBlocking(blocking, [&store, &host]() -> http::Response {
              Result<store::ScrapeTargets> targets = store.ListScrapeTargets();
              if (!targets.ok()) return http::Response::Error(targets.status());
              return http::Response::Json(http::bhttp::status::ok, MetricsTargets(host, *targets));
            });
        co_return res;
      });
}

}  // namespace segma::api
