#pragma once

// Model routes (`/v2/model-routes`, ADR 0012): a public model name of a project that spreads
// requests over one or more deployments (models) of that project by weight, and falls back to
// the others (weight 0: fallback only) when a deployment cannot answer.

#include <cstdint>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"

namespace segma::types {

struct ModelRouteTarget {
  int64_t model_id = 0;
  // Share of the route's traffic (0..kMaxRouteWeight); 0 = used only when the weighted targets
  // fail.
  int64_t weight = 1;

  friend bool operator==(const ModelRouteTarget&, const ModelRouteTarget&) = default;
};

inline constexpr int64_t kMaxRouteWeight = 1000;
inline constexpr size_t kMaxRouteTargets = 64;

struct ModelRoute {
  int64_t id = 0;
  int64_t project_id = 0;
  std::string name;  // the public model name; 1-64 of [A-Za-z0-9._-], like model names
  std::string description;
  // In order: fallbacks (weight 0) are tried in this order after the weighted targets.
  std::vector<ModelRouteTarget> targets;
  Timestamp created_at{};
  Timestamp updated_at{};

  friend bool operator==(const ModelRoute&, const ModelRoute&) = default;
};

json::object ToJson(const ModelRoute& r);

// Parses the body of `POST /v2/model-routes` strictly: unknown fields, wrong types and invalid
// values are kInvalidArgument naming the field ("targets[1].weight must be in 0..1000").
// `name` and `targets` are required; `project_id` may be absent (0) for the caller to fill in.
// Server-owned fields (id, times) are rejected as unknown.
Result<ModelRoute> ModelRouteFromJson(const json::object& o);

// Applies the body of `PATCH /v2/model-routes/{id}` to `current`: only the fields present
// change (`targets` replaces the whole list); `project_id` cannot be changed. The result is
// validated as a whole; `current` is not modified.
Result<ModelRoute> PatchModelRouteFromJson(const ModelRoute& current, const json::object& patch);

// The invariants ModelRouteFromJson enforces, for routes built in code (and by the store): a
// valid name, a description of at most 1024 bytes, 1..kMaxRouteTargets targets with positive
// model ids, no model twice, weights in 0..kMaxRouteWeight with at least one above 0.
Status ValidateModelRoute(const ModelRoute& r);

}  // namespace segma::types
