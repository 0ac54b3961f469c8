#pragma once

#include <vector>

#include "common/clock.h"
#include "store/store.h"

namespace segma::controllers {

// Demotes READY workers whose last heartbeat is older than the grace period to NOT_READY.
// A worker that heartbeats again becomes READY through Store::RecordHeartbeat. Time comes from
// the injected Clock, so tests advance a FakeClock instead of sleeping.
// Thread-safe (stateless apart from its references, which must outlive it).
class WorkerLivenessController {
 public:
  WorkerLivenessController(store::Store& store, const Clock& clock, Duration grace)
      : store_(store), clock_(clock), grace_(grace) {}

  // One pass. Returns the workers it demoted; kUnavailable if the store failed.
  Result<std::vector<types::Worker>> Reconcile();

  Duration grace() const { return grace_; }

 private:
  store::Store& store_;
  const Clock& clock_;
  const Duration grace_;
};

}  // namespace segma::controllers
