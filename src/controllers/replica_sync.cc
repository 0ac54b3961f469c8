#include "controllers/replica_sync.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <set>

#include <fmt/format.h>

#include "common/logging.h"
#include "controllers/cluster_state.h"
#include "scheduler/reschedule_policy.h"

namespace segma::controllers {

namespace {

// n of "<model>-<n>", or 0.
int NameIndex(const std::string& model_name, const std::string& instance_name) {
  if (instance_name.size() <= model_name.size() + 1 ||
      instance_name.compare(0, model_name.size(), model_name) != 0 ||
      instance_name[model_name.size()] != '-') {
    return 0;
  }
  int n = 0;
  const char* begin = instance_name.data() + model_name.size() + 1;
  const char* end = instance_name.data() + instance_name.size();
  auto [ptr, ec] = std::from_chars(begin, end, n);
  return (ec == std::errc() && ptr == end) ? n : 0;
}

}  // namespace

Result<int> ReplicaSync::Reconcile() {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(std::vector<types::Model> models, ListAllModels(store_));
  ASSIGN_OR_RETURN(std::vector<types::ModelInstance> instances, ListAllInstances(store_));
  std::map<int64_t, std::vector<types::ModelInstance>> by_model;
  for (auto& i : instances) by_model[i.model_id].push_back(std::move(i));
  int changes = 0;
  std::set<int64_t> known;
  for (const types::Model& m : models) {
    known.insert(m.id);
    const std::vector<types::ModelInstance>& mine = by_model[m.id];
    std::vector<types::ModelInstance> active;
    int next_index = 1;
    for (const auto& i : mine) {
      next_index = std::max(next_index, NameIndex(m.name, i.name) + 1);
      if (i.state != types::InstanceState::kStopping) active.push_back(i);
    }
    const int have = static_cast<int>(active.size());
    for (int k = have; k < m.replicas; ++k) {
      types::ModelInstance i;
      i.model_id = m.id;
      i.project_id = m.project_id;
      i.name = fmt::format("{}-{}", m.name, next_index++);
      i.state = types::InstanceState::kPending;
      Result<types::ModelInstance> created = store_.CreateModelInstance(i);
      // The model may have been deleted since it was listed: the next pass sees that.
      if (created.status().code() == StatusCode::kNotFound) break;
      RETURN_IF_ERROR(created.status());
      ++changes;
    }
    if (have > m.replicas) {
      for (int64_t id : scheduler::SelectForScaleDown(active, have - m.replicas)) {
        Status s = store_.DeleteModelInstance(id);
        if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
        ++changes;
      }
    }
  }
  for (const auto& [model_id, orphans] : by_model) {
    if (known.count(model_id)) continue;
    // Listed before the models: an instance created after that listing has a model we missed.
    if (store_.GetModel(model_id).ok()) continue;
    for (const auto& i : orphans) {
      Status s = store_.DeleteModelInstance(i.id);
      if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
      ++changes;
    }
  }
  return changes;
}

}  // namespace segma::controllers
