#pragma once

// The routing snapshot of the gateway: public model name → deployments (weighted) → replicas.
// Built from plain structs so that any source can feed it (today tests and configuration; later
// the store's models, model instances and workers, see gateway.h). Immutable once built and
// shared as std::shared_ptr<const RouteTable>; only the per-replica load and health counters
// (ReplicaState, atomics) change, and they carry over to the next snapshot by instance id.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace segma::gateway {

// ---- input: plain structs ----------------------------------------------------------------------

struct ReplicaSpec {
  int64_t instance_id = 0;  // unique over the whole table
  std::string base_url;  // "http://host:port" (no trailing slash); requests go to base_url + path
  bool healthy = true;   // as the control plane sees it (e.g. instance RUNNING, worker READY)
  // The secret the engine requires, sent upstream as "Authorization: Bearer" in place of the
  // client's credential (docs/adr/0035-engine-secrets.md). "" = none (also what
  // {id, url, healthy} leaves it).
  std::string api_key = {};
};

struct DeploymentSpec {
  int64_t deployment_id = 0;  // the model (deployment) id
  // The project the deployment belongs to; only keys of that project may use it. 0: any project.
  int64_t project_id = 0;
  uint32_t weight = 1;         // share of traffic among the route's deployments (0: fallback only)
  std::string upstream_model;  // the name the engine serves; empty: the public name
  std::vector<ReplicaSpec> replicas;
};

struct ModelRouteSpec {
  std::string name;  // the public model name clients send in "model"
  std::vector<DeploymentSpec> deployments;
  int64_t created_at = 0;  // Unix seconds, for GET /v1/models
  std::string owned_by = "segma";
};

// ---- the snapshot ------------------------------------------------------------------------------

// Live counters of one replica, shared by successive snapshots. Lock-free.
struct ReplicaState {
  std::atomic<int64_t> outstanding{0};  // requests sent and not yet finished
  std::atomic<int32_t> consecutive_failures{0};
  std::atomic<int64_t> ejected_until_ms{0};  // Unix ms; passive health ejection
  std::atomic<int64_t> requests{0};          // total picks, for tests and metrics
};

struct Replica {
  int64_t instance_id = 0;
  std::string base_url;
  bool healthy = true;
  std::shared_ptr<ReplicaState> state;  // never null in a built table
  std::string api_key = {};             // ReplicaSpec::api_key
};

struct Deployment {
  int64_t deployment_id = 0;
  int64_t project_id = 0;
  uint32_t weight = 1;
  std::string upstream_model;  // never empty in a built table
  std::vector<Replica> replicas;
};

struct ModelRoute {
  std::string name;
  std::vector<Deployment> deployments;
  uint32_t total_weight = 0;
  int64_t created_at = 0;
  std::string owned_by;
  // Whether a key of `project_id` may use at least one deployment.
  bool VisibleTo(int64_t project_id) const;
};

// Thread-safe: immutable after Build().
class RouteTable {
 public:
  class Builder {
   public:
    Builder& Add(ModelRouteSpec route);
    // Validates and builds. kInvalidArgument for an empty or duplicate model name, a replica
    // base_url that is not "http://host:port", or an instance id given with two different
    // base_urls or secrets (the same instance under several names shares one ReplicaState).
    // Replica states of
    // `previous` (may be null) are kept for instance ids present in both.
    Result<std::shared_ptr<const RouteTable>> Build(const RouteTable* previous = nullptr) const;

   private:
    std::vector<ModelRouteSpec> routes_;
  };

  // An empty table.
  RouteTable() = default;
  RouteTable(const RouteTable&) = delete;  // by_name_ points into routes_
  RouteTable& operator=(const RouteTable&) = delete;

  // The route for public model `name`, or nullptr.
  const ModelRoute* Find(std::string_view name) const;
  // Every route, ordered by name (for GET /v1/models).
  const std::vector<ModelRoute>& routes() const { return routes_; }
  // The live state of an instance, or nullptr.
  std::shared_ptr<ReplicaState> StateOf(int64_t instance_id) const;

 private:
  std::vector<ModelRoute> routes_;
  std::unordered_map<std::string_view, size_t> by_name_;  // views into routes_[i].name
  std::unordered_map<int64_t, std::shared_ptr<ReplicaState>> states_;
};

}  // namespace segma::gateway
