#pragma once

// Chooses a deployment of a route and a replica of a deployment, and keeps passive health.
//
// Replica choice, in order:
//  1. Eligible replicas: healthy in the route table, not ejected, not already tried for this
//     request.
//  2. Session affinity: with a session id (header x-session-id), the replica that the id hashes
//     to (rendezvous hashing, so ids move only when their replica leaves).
//  3. Prefix affinity: else, with a prompt prefix (the first `prefix_chars` characters of the
//     prompt or messages), the replica the prefix hashes to, so that requests sharing a prefix
//     land where the engine's prefix cache already holds it.
//  4. An affine choice is overridden when its outstanding requests exceed the least loaded
//     replica's by more than `affinity_load_threshold`.
//  5. Otherwise least outstanding requests, ties broken round-robin.
// Policy kLeastOutstanding skips steps 2-4; kRoundRobin picks the next eligible replica in turn
// (the baseline the prefix-affinity benchmark compares against).
// Passive health: `eject_after_failures` consecutive failures (connect error or 5xx) eject a
// replica for `eject_for`; one success resets the count.
//
// Thread-safe and lock-free (atomics in ReplicaState). No clock reads: time is a parameter.

#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "common/clock.h"
#include "gateway/route_table.h"

namespace segma::gateway {

enum class RoutingPolicy { kAffinity, kLeastOutstanding, kRoundRobin };
std::optional<RoutingPolicy> ParseRoutingPolicy(std::string_view name);  // "affinity", …

struct BalancerOptions {
  RoutingPolicy policy = RoutingPolicy::kAffinity;
  size_t prefix_chars = 256;
  int64_t affinity_load_threshold = 4;
  int32_t eject_after_failures = 3;
  Duration eject_for = std::chrono::seconds(10);
};

struct PickHints {
  std::string_view session_id;  // empty: none
  std::string_view prefix;      // empty: none; only the first prefix_chars characters are used
};

class Balancer {
 public:
  explicit Balancer(BalancerOptions options = {}) : options_(options) {}

  const BalancerOptions& options() const { return options_; }

  // The deployments of `route` usable by a key of `project_id`, in the order to try them: the
  // first is chosen by weight (smooth weighted round-robin over calls), the others follow as
  // fallbacks by descending weight. Fills `out` (cleared first) with indexes into
  // route.deployments.
  void OrderDeployments(const ModelRoute& route, int64_t project_id, std::vector<size_t>& out);

  // A replica of `deployment`, or nullptr when none is eligible. `tried` lists instance ids to
  // skip. Does not change any counter (see Begin).
  const Replica* Pick(const Deployment& deployment, const PickHints& hints, Timestamp now,
                      std::span<const int64_t> tried);

  // Counts a request on `replica` (outstanding + 1); End takes it off again.
  static void Begin(const Replica& replica);
  static void End(const Replica& replica);
  // Passive health.
  void ReportSuccess(const Replica& replica);
  void ReportFailure(const Replica& replica, Timestamp now);
  static bool Ejected(const Replica& replica, Timestamp now);

 private:
  const BalancerOptions options_;
  std::atomic<uint64_t> rr_{0};
  std::atomic<uint64_t> weighted_rr_{0};
};

// 64-bit FNV-1a, for affinity hashing (stable across runs and builds).
uint64_t AffinityHash(std::string_view data);

}  // namespace segma::gateway
