#pragma once

#include <mutex>

#include "common/status.h"
#include "store/store.h"

namespace segma::controllers {

// Keeps each model's instance count equal to its replicas. Scale-up creates PENDING instances
// named "<model>-<n>" (n one past the highest in use); scale-down deletes the instances
// scheduler::SelectForScaleDown picks (unhealthy first, then newest), never touching the others;
// replicas 0 leaves none. Instances whose model is gone are deleted too (Store::DeleteModel
// already removes them; this covers a crash between writes). STOPPING instances do not count.
// Thread-safe: passes are serialised.
class ReplicaSync {
 public:
  explicit ReplicaSync(store::Store& store) : store_(store) {}

  // One pass over every model. Returns how many instances it created plus deleted.
  Result<int> Reconcile();

 private:
  store::Store& store_;
  std::mutex mu_;
};

}  // namespace segma::controllers
