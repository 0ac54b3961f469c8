#include "types/worker.h"

namespace segma::types {

std::string_view WorkerStateName(WorkerState s) {
  switch (s) {
    case WorkerState::kRegistering: return "REGISTERING";
    case WorkerState::kReady: return "READY";
    case WorkerState::kNotReady: return "NOT_READY";
    case WorkerState::kUnreachable: return "UNREACHABLE";
    case WorkerState::kMaintenance: return "MAINTENANCE";
  }
  return "NOT_READY";
}

std::optional<WorkerState> ParseWorkerState(std::string_view s) {
  for (WorkerState w : {WorkerState::kRegistering, WorkerState::kReady, WorkerState::kNotReady,
                        WorkerState::kUnreachable, WorkerState::kMaintenance}) {
    if (WorkerStateName(w) == s) return w;
  }
  return std::nullopt;
}

}  // namespace segma::types
