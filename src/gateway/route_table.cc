#include "gateway/route_table.h"

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>

namespace segma::gateway {

namespace {

bool ValidBaseUrl(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (!url.starts_with(kScheme)) return false;
  std::string_view rest = url.substr(kScheme.size());
  const size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 >= rest.size()) return false;
  for (char c : rest.substr(colon + 1)) {
    if (c < '0' || c > '9') return false;
  }
  return rest.find('/') == std::string_view::npos;
}

}  // namespace

bool ModelRoute::VisibleTo(int64_t project_id) const {
  return std::any_of(deployments.begin(), deployments.end(), [&](const Deployment& d) {
    return d.project_id == 0 || d.project_id == project_id;
  });
}

RouteTable::Builder& RouteTable::Builder::Add(ModelRouteSpec route) {
  routes_.push_back(std::move(route));
  return *this;
}

Result<std::shared_ptr<const RouteTable>> RouteTable::Builder::Build(
    const RouteTable* previous) const {
  auto table = std::make_shared<RouteTable>();
  std::set<std::string, std::less<>> names;
  // Instance id → its base_url and secret in this table.
  std::map<int64_t, std::pair<std::string_view, std::string_view>> urls;
  for (const ModelRouteSpec& spec : routes_) {
    if (spec.name.empty()) return InvalidArgumentError("route with an empty model name");
    if (!names.insert(spec.name).second) {
      return InvalidArgumentError(fmt::format("model '{}' is routed twice", spec.name));
    }
    ModelRoute route;
    route.name = spec.name;
    route.created_at = spec.created_at;
    route.owned_by = spec.owned_by;
    for (const DeploymentSpec& ds : spec.deployments) {
      Deployment d;
      d.deployment_id = ds.deployment_id;
      d.project_id = ds.project_id;
      d.weight = ds.weight;
      d.upstream_model = ds.upstream_model.empty() ? spec.name : ds.upstream_model;
      for (const ReplicaSpec& rs : ds.replicas) {
        if (!ValidBaseUrl(rs.base_url)) {
          return InvalidArgumentError(
              fmt::format("replica {} of model '{}': base_url '{}' is not http://host:port",
                          rs.instance_id, spec.name, rs.base_url));
        }
        // One instance may serve several public names (its model's own and model routes, ADR
        // 0012): it keeps one state, so its load and health count once.
        auto [url, first] = urls.emplace(
            rs.instance_id, std::pair<std::string_view, std::string_view>(rs.base_url, rs.api_key));
        if (!first &&
            url->second != std::pair<std::string_view, std::string_view>(rs.base_url, rs.api_key)) {
          return InvalidArgumentError(fmt::format(
              "instance {} appears twice in the route table with different addresses or secrets",
              rs.instance_id));
        }
        std::shared_ptr<ReplicaState> state = table->StateOf(rs.instance_id);
        if (state == nullptr && previous != nullptr) state = previous->StateOf(rs.instance_id);
        if (state == nullptr) state = std::make_shared<ReplicaState>();
        table->states_.emplace(rs.instance_id, state);
        d.replicas.push_back(
            Replica{rs.instance_id, rs.base_url, rs.healthy, std::move(state), rs.api_key});
      }
      route.total_weight += d.weight;
      route.deployments.push_back(std::move(d));
    }
    table->routes_.push_back(std::move(route));
  }
  std::sort(table->routes_.begin(), table->routes_.end(),
            [](const ModelRoute& a, const ModelRoute& b) { return a.name < b.name; });
  for (size_t i = 0; i < table->routes_.size(); ++i) {
    table->by_name_.emplace(table->routes_[i].name, i);
  }
  return std::shared_ptr<const RouteTable>(std::move(table));
}

const ModelRoute* RouteTable::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &routes_[it->second];
}

std::shared_ptr<ReplicaState> RouteTable::StateOf(int64_t instance_id) const {
  auto it = states_.find(instance_id);
  return it == states_.end() ? nullptr : it->second;
}

}  // namespace segma::gateway
