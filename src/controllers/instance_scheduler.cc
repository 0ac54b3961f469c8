#include "controllers/instance_scheduler.h"

#include <map>

#include "common/logging.h"
#include "controllers/cluster_state.h"

namespace segma::controllers {

Result<InstanceScheduler::PassResult> InstanceScheduler::Reconcile() {
  std::lock_guard lock(mu_);
  PassResult result;
  // Most passes have nothing to place: the cluster (every worker with its status) is loaded only
  // when an instance waits (issue 17).
  bool waiting = false;
  for (types::InstanceState s :
       {types::InstanceState::kPending, types::InstanceState::kUnschedulable}) {
    store::ListOptions one;
    one.per_page = 1;
    store::ModelInstanceFilter filter;
    filter.state = s;
    ASSIGN_OR_RETURN(auto page, store_.ListModelInstances(one, filter));
    waiting |= page.total > 0;
  }
  if (!waiting) return result;
  ASSIGN_OR_RETURN(ClusterState state, LoadClusterState(store_));
  std::map<int64_t, scheduler::QuotaUsage> usage;  // by project, loaded on first use
  std::map<int64_t, Result<types::Model>> models;
  for (const types::ModelInstance& inst : state.instances) {
    if (inst.state != types::InstanceState::kPending &&
        inst.state != types::InstanceState::kUnschedulable) {
      continue;
    }
    auto mit = models.find(inst.model_id);
    if (mit == models.end())
      mit = models.emplace(inst.model_id, store_.GetModel(inst.model_id)).first;
    if (!mit->second.ok()) continue;  // deleted meanwhile: replica sync removes the instance
    const types::Model& model = *mit->second;
    auto uit = usage.find(model.project_id);
    if (uit == usage.end()) {
      Result<scheduler::QuotaUsage> u = LoadQuotaUsage(store_, model.project_id, state);
      if (!u.ok()) continue;  // project deleted meanwhile
      uit = usage.emplace(model.project_id, *u).first;
    }
    scheduler::Decision d = DecideForModel(scheduler_, state, model, uit->second, catalog_);
    store::ModelInstancePatch patch;
    patch.if_state_in = std::vector<types::InstanceState>{inst.state};
    if (d.placed) {
      types::ModelInstance placed = inst;
      scheduler::ApplyToInstance(d.placement, placed);
      placed.state = types::InstanceState::kScheduled;
      patch.state = placed.state;
      patch.state_message = d.summary;
      patch.worker_id = placed.worker_id;
      patch.worker_name = placed.worker_name;
      patch.gpu_indexes = placed.gpu_indexes;
      patch.claim = placed.claim;
      patch.distributed_servers = placed.distributed_servers;
      patch.unschedulable_reasons = std::map<std::string, std::string>();
      Result<types::ModelInstance> r = store_.UpdateModelInstance(inst.id, patch);
      if (!r.ok()) {
        if (r.status().code() == StatusCode::kNotFound ||
            r.status().code() == StatusCode::kAborted) {
          continue;
        }
        return r.status();
      }
      // Later decisions of this pass see the new claims.
      for (const auto& p : scheduler::ToPlacedInstances(d.placement, inst.id, inst.model_id)) {
        Status s = state.snapshot.AddInstance(p);
        if (!s.ok()) Logger("controllers")->warn("snapshot: {}", s.ToString());
      }
      AddUsage(*r, state.snapshot, uit->second);
      Logger("controllers")->info("instance {} ({}): {}", inst.name, inst.id, d.summary);
      ++result.placed;
    } else {
      ++result.unschedulable;
      for (const auto& [filter, n] : d.rejections) result.rejections[filter] += n;
      if (inst.state == types::InstanceState::kUnschedulable && inst.state_message == d.summary &&
          inst.unschedulable_reasons == d.reasons) {
        continue;
      }
      patch.state = types::InstanceState::kUnschedulable;
      patch.state_message = d.summary;
      patch.unschedulable_reasons = d.reasons;
      Result<types::ModelInstance> r = store_.UpdateModelInstance(inst.id, patch);
      if (!r.ok() && r.status().code() != StatusCode::kNotFound &&
          r.status().code() != StatusCode::kAborted) {
        return r.status();
      }
    }
  }
  return result;
}

}  // namespace segma::controllers
