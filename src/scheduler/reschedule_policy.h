#pragma once

// Decisions the controllers take about existing instances: which to remove on scale-down, and
// which to move off workers that stopped heartbeating. Pure: time is a parameter.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "common/clock.h"
#include "types/model.h"

namespace segma::scheduler {

// The ids of the `n` instances to remove when scaling down: unhealthy ones first (ERROR,
// UNSCHEDULABLE, PENDING), then the rest newest first (created_at, then id, descending).
// STOPPING instances are already going and are never chosen. Returns fewer when there are fewer.
std::vector<int64_t> SelectForScaleDown(const std::vector<types::ModelInstance>& instances, int n);

struct RescheduleOptions {
  // How long a worker must stay NOT_READY before its instances move: long enough to ride out a
  // few missed heartbeats or a server restart, not one heartbeat.
  Duration grace_period = std::chrono::minutes(5);
  // At most this many instances are being rescheduled at any time (in flight included).
  int max_at_once = 10;
  // When more than this fraction of all workers is NOT_READY at once, the problem is most likely
  // on the server's side (network, restart), so nothing moves. 1.0 disables the check.
  double max_not_ready_fraction = 0.5;
};

class ReschedulePolicy {
 public:
  explicit ReschedulePolicy(RescheduleOptions options = {}) : options_(options) {}

  // Instances to reschedule now: those placed (main or subordinate) on a worker listed in
  // `not_ready_since` (worker id → when it became NOT_READY) for at least the grace period, not
  // STOPPING, PENDING or UNSCHEDULABLE. Longest-lost worker first, then instance id; at most
  // max_at_once - in_flight. `total_workers` is the number of workers of the cluster.
  std::vector<int64_t> Select(const std::vector<types::ModelInstance>& instances,
                              const std::map<int64_t, Timestamp>& not_ready_since,
                              int total_workers, Timestamp now, int in_flight = 0) const;

  // When the next instance becomes due (for a controller's timer); nullopt when none will.
  std::optional<Timestamp> NextDue(const std::vector<types::ModelInstance>& instances,
                                   const std::map<int64_t, Timestamp>& not_ready_since,
                                   Timestamp now) const;

  const RescheduleOptions& options() const { return options_; }

 private:
  RescheduleOptions options_;
};

}  // namespace segma::scheduler
