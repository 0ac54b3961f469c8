#pragma once

#include <map>
#include <mutex>
#include <string>

#include "common/status.h"
#include "scheduler/scheduler.h"
#include "store/store.h"
#include "types/engine_choice.h"

namespace segma::controllers {

// Places instances. Each pass loads the cluster (LoadClusterState), then decides every PENDING
// instance and retries every UNSCHEDULABLE one, one at a time in id order, each decision seeing
// the claims of those placed before it:
//  - placed: SCHEDULED with worker, GPU indexes, claim and distributed servers;
//  - not placed: UNSCHEDULABLE with the decision's summary as state_message and the per-worker
//    reasons (rewritten only when they change, so retries do not flood watchers).
// Quotas: the project's max_gpus (GPU-equivalents), max_vram_gib and max_instances, counted over
// its instances that hold claims. Writes are compare-and-set on the state, so an instance
// deleted or moved meanwhile is skipped. Thread-safe: passes are serialised.
class InstanceScheduler {
 public:
  // `catalog` (the backends, built-in and user-defined) outlives the controller.
  InstanceScheduler(store::Store& store, const types::BackendCatalog& catalog,
                    scheduler::SchedulerOptions options = {})
      : store_(store), catalog_(catalog), scheduler_(options) {}

  struct PassResult {
    int placed = 0;
    int unschedulable = 0;
    // Over the pass's decisions that placed nothing: filter → workers it rejected
    // (scheduler::Decision::rejections summed).
    std::map<std::string, int> rejections;
  };
  // One pass. kUnavailable from the store.
  Result<PassResult> Reconcile();

 private:
  store::Store& store_;
  const types::BackendCatalog& catalog_;
  std::mutex mu_;
  scheduler::Scheduler scheduler_;  // guarded by mu_
};

}  // namespace segma::controllers
