#include "scheduler/reschedule_policy.h"

#include <algorithm>
#include <tuple>

namespace segma::scheduler {

namespace {

bool Movable(types::InstanceState s) {
  return s != types::InstanceState::kStopping && s != types::InstanceState::kPending &&
         s != types::InstanceState::kUnschedulable;
}

// The earliest NOT_READY time among the workers the instance runs on, if any.
std::optional<Timestamp> LostSince(const types::ModelInstance& i,
                                   const std::map<int64_t, Timestamp>& not_ready_since) {
  std::optional<Timestamp> since;
  auto consider = [&](int64_t worker_id) {
    auto it = not_ready_since.find(worker_id);
    if (it != not_ready_since.end() && (!since || it->second < *since)) since = it->second;
  };
  if (i.worker_id != 0) consider(i.worker_id);
  for (const types::DistributedServer& d : i.distributed_servers) consider(d.worker_id);
  return since;
}

}  // namespace

std::vector<int64_t> SelectForScaleDown(const std::vector<types::ModelInstance>& instances, int n) {
  std::vector<const types::ModelInstance*> order;
  for (const types::ModelInstance& i : instances) {
    if (i.state != types::InstanceState::kStopping) order.push_back(&i);
  }
  auto unhealthy = [](const types::ModelInstance* i) {
    return i->state == types::InstanceState::kError ||
           i->state == types::InstanceState::kUnschedulable ||
           i->state == types::InstanceState::kPending;
  };
  std::sort(order.begin(), order.end(), [&](const auto* a, const auto* b) {
    if (unhealthy(a) != unhealthy(b)) return unhealthy(a);
    return std::tie(b->created_at, b->id) < std::tie(a->created_at, a->id);
  });
  std::vector<int64_t> out;
  for (int k = 0; k < n && k < static_cast<int>(order.size()); ++k) out.push_back(order[k]->id);
  return out;
}

std::vector<int64_t> ReschedulePolicy::Select(const std::vector<types::ModelInstance>& instances,
                                              const std::map<int64_t, Timestamp>& not_ready_since,
                                              int total_workers, Timestamp now,
                                              int in_flight) const {
  std::vector<int64_t> out;
  const int budget = options_.max_at_once - in_flight;
  if (budget <= 0 || not_ready_since.empty()) return out;
  if (total_workers > 0 && options_.max_not_ready_fraction < 1.0 &&
      static_cast<double>(not_ready_since.size()) >
          options_.max_not_ready_fraction * static_cast<double>(total_workers)) {
    return out;
  }
  std::vector<std::pair<Timestamp, int64_t>> due;
  for (const types::ModelInstance& i : instances) {
    if (!Movable(i.state)) continue;
    std::optional<Timestamp> since = LostSince(i, not_ready_since);
    if (since && now - *since >= options_.grace_period) due.emplace_back(*since, i.id);
  }
  std::sort(due.begin(), due.end());
  for (size_t k = 0; k < due.size() && static_cast<int>(k) < budget; ++k) {
    out.push_back(due[k].second);
  }
  return out;
}

std::optional<Timestamp> ReschedulePolicy::NextDue(
    const std::vector<types::ModelInstance>& instances,
    const std::map<int64_t, Timestamp>& not_ready_since, Timestamp now) const {
  std::optional<Timestamp> next;
  for (const types::ModelInstance& i : instances) {
    if (!Movable(i.state)) continue;
    std::optional<Timestamp> since = LostSince(i, not_ready_since);
    if (!since) continue;
    const Timestamp due = std::max(now, *since + options_.grace_period);
    if (!next || due < *next) next = due;
  }
  return next;
}

}  // namespace segma::scheduler
