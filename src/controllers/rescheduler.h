#pragma once

#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "scheduler/reschedule_policy.h"
#include "store/store.h"

namespace segma::controllers {

// Moves instances off workers that stay NOT_READY (or UNREACHABLE) longer than the grace period:
// they go back to PENDING with their placement cleared, and the scheduler places them again.
// When a worker became NOT_READY is the worker's updated_at the first time a pass sees it in that
// state (the liveness controller sets it when it demotes the worker); a worker that heartbeats
// again is forgotten. Bounded by scheduler::ReschedulePolicy: at most max_at_once instances are
// in flight (rescheduled and not yet RUNNING, ERROR or UNSCHEDULABLE), and nothing moves when
// more than max_not_ready_fraction of the workers are NOT_READY at once.
// Time comes from the injected Clock. Thread-safe: passes are serialised.
class Rescheduler {
 public:
  Rescheduler(store::Store& store, const Clock& clock, scheduler::RescheduleOptions options = {})
      : store_(store), clock_(clock), policy_(options) {}

  // One pass. Returns the ids of the instances sent back to PENDING.
  Result<std::vector<int64_t>> Reconcile();

  const scheduler::RescheduleOptions& options() const { return policy_.options(); }

 private:
  store::Store& store_;
  const Clock& clock_;
  const scheduler::ReschedulePolicy policy_;
  std::mutex mu_;
  std::map<int64_t, Timestamp> not_ready_since_;  // guarded by mu_
  std::set<int64_t> in_flight_;                   // guarded by mu_
};

}  // namespace segma::controllers
