#include "controllers/rescheduler.h"

#include <fmt/format.h>

#include "common/logging.h"
#include "controllers/cluster_state.h"

namespace segma::controllers {

Result<std::vector<int64_t>> Rescheduler::Reconcile() {
  std::lock_guard lock(mu_);
  // Names and states only: with 10,000 workers the statuses would be most of the pass.
  ASSIGN_OR_RETURN(std::vector<types::Worker> workers,
                   ListAllWorkers(store_, WorkerFields::kWithoutStatus));
  std::map<int64_t, std::string> names;
  std::set<int64_t> lost;
  for (const types::Worker& w : workers) {
    names[w.id] = w.name;
    if (w.state == types::WorkerState::kNotReady || w.state == types::WorkerState::kUnreachable) {
      not_ready_since_.emplace(w.id, w.updated_at);  // keeps the first sighting
      lost.insert(w.id);
    }
  }
  std::erase_if(not_ready_since_, [&](const auto& e) { return !lost.count(e.first); });

  ASSIGN_OR_RETURN(std::vector<types::ModelInstance> instances, ListAllInstances(store_));
  std::set<int64_t> still_in_flight;
  for (const auto& i : instances) {
    if (!in_flight_.count(i.id)) continue;
    if (i.state == types::InstanceState::kPending || i.state == types::InstanceState::kScheduled ||
        i.state == types::InstanceState::kDownloading ||
        i.state == types::InstanceState::kStarting) {
      still_in_flight.insert(i.id);
    }
  }
  in_flight_ = std::move(still_in_flight);

  const Timestamp now = clock_.Now();
  std::vector<int64_t> chosen =
      policy_.Select(instances, not_ready_since_, static_cast<int>(workers.size()), now,
                     static_cast<int>(in_flight_.size()));
  std::vector<int64_t> moved;
  std::map<int64_t, const types::ModelInstance*> by_id;
  for (const auto& i : instances) by_id[i.id] = &i;
  for (int64_t id : chosen) {
    const types::ModelInstance& i = *by_id.at(id);
    const int64_t lost_worker = not_ready_since_.count(i.worker_id) ? i.worker_id : 0;
    const auto since = lost_worker ? now - not_ready_since_.at(lost_worker) : Duration{};
    store::ModelInstancePatch patch;
    patch.if_state_in = std::vector<types::InstanceState>{i.state};
    patch.ClearPlacement();
    patch.state = types::InstanceState::kPending;
    patch.state_message =
        fmt::format("rescheduling: worker {} NOT_READY for {} s",
                    lost_worker ? names[lost_worker] : std::string("of a distributed server"),
                    std::chrono::duration_cast<std::chrono::seconds>(since).count());
    Result<types::ModelInstance> r = store_.UpdateModelInstance(id, patch);
    if (!r.ok()) {
      if (r.status().code() == StatusCode::kNotFound || r.status().code() == StatusCode::kAborted) {
        continue;
      }
      return r.status();
    }
    Logger("controllers")->warn("instance {} ({}): {}", i.name, id, *patch.state_message);
    in_flight_.insert(id);
    moved.push_back(id);
  }
  return moved;
}

}  // namespace segma::controllers
