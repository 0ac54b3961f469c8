#include "controllers/worker_liveness.h"

#include <fmt/format.h>

#include "common/logging.h"

namespace segma::controllers {

Result<std::vector<types::Worker>> WorkerLivenessController::Reconcile() {
  const auto grace_s = std::chrono::duration_cast<std::chrono::seconds>(grace_).count();
  ASSIGN_OR_RETURN(std::vector<types::Worker> demoted,
                   store_.MarkStaleWorkersNotReady(
                       clock_.Now() - grace_,
                       fmt::format("no heartbeat for more than {} s", grace_s)));
  for (const types::Worker& w : demoted) {
    Logger("controllers")->warn("worker {} ({}) is NOT_READY: no heartbeat for more than {} s",
                                w.name, w.id, grace_s);
  }
  return demoted;
}

}  // namespace segma::controllers
