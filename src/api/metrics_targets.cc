#include "api/metrics_targets.h"

#include <fmt/format.h>

#include "api/gateway_sync.h"
#include "common/crypto.h"
#include "controllers/cluster_state.h"
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

json::array MetricsTargets(std::string_view server_address,
                           const std::vector<types::Worker>& workers,
                           const std::vector<types::ModelInstance>& instances,
                           const std::map<int64_t, types::Model>& models) {
  json::array out;
  out.reserve(1 + workers.size() + instances.size());
  out.emplace_back(Group(std::string(server_address), {{"segma_role", "server"}}));
  std::map<int64_t, const types::Worker*> by_id;
  for (const types::Worker& w : workers) {
    by_id.emplace(w.id, &w);
    if (w.port <= 0 || w.address.empty()) continue;
    out.emplace_back(
        Group(fmt::format("{}:{}", w.address, w.port),
              {{"segma_role", "worker"}, {"worker", w.name}, {"worker_id", std::to_string(w.id)}}));
  }
  for (const types::ModelInstance& i : instances) {
    if (i.state != types::InstanceState::kRunning || i.port <= 0) continue;
    auto w = by_id.find(i.worker_id);
    auto m = models.find(i.model_id);
    if (w == by_id.end() || m == models.end() || w->second->address.empty()) continue;
    out.emplace_back(Group(fmt::format("{}:{}", w->second->address, i.port),
                           {{"segma_role", "engine"},
                            {"worker", w->second->name},
                            {"deployment", m->second.name},
                            {"instance", i.name},
                            {"project", std::to_string(i.project_id)},
                            {"backend", m->second.backend}}));
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
              Result<std::vector<types::Worker>> workers = controllers::ListAllWorkers(store);
              if (!workers.ok()) return http::Response::Error(workers.status());
              store::ModelInstanceFilter running;
              running.state = types::InstanceState::kRunning;
              Result<std::vector<types::ModelInstance>> instances =
                  controllers::ListAllInstances(store, running);
              if (!instances.ok()) return http::Response::Error(instances.status());
              Result<std::vector<types::Model>> models = controllers::ListAllModels(store);
              if (!models.ok()) return http::Response::Error(models.status());
              std::map<int64_t, types::Model> by_id;
              for (types::Model& m : *models) by_id.emplace(m.id, std::move(m));
              return http::Response::Json(http::bhttp::status::ok,
                                          MetricsTargets(host, *workers, *instances, by_id));
            });
        co_return res;
      });
}

}  // namespace segma::api
