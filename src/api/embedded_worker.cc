#include "api/embedded_worker.h"

#include <vector>

namespace segma::api {

Result<int> MarkEnginesStopped(store::Store& store, int64_t worker_id, const std::string& message) {
  const std::vector<types::InstanceState> live = {types::InstanceState::kStarting,
                                                  types::InstanceState::kRunning};
  std::vector<int64_t> ids;
  store::ListOptions all;
  all.per_page = store::ListOptions::kMaxPerPage;
  store::ModelInstanceFilter filter;
  filter.worker_id = worker_id;
  for (all.page = 1;; ++all.page) {
    ASSIGN_OR_RETURN(auto page, store.ListModelInstances(all, filter));
    for (const types::ModelInstance& i : page.items) {
      // Its own engine, not a distributed server it runs for another worker's instance.
      if (i.worker_id != worker_id) continue;
      if (i.state == live[0] || i.state == live[1]) ids.push_back(i.id);
    }
    if (static_cast<int64_t>(all.page) * all.per_page >= page.total) break;
  }
  int changed = 0;
  for (int64_t id : ids) {
    store::ModelInstancePatch patch;
    patch.state = types::InstanceState::kError;
    patch.state_message = message;
    patch.if_state_in = live;
    Result<types::ModelInstance> r = store.UpdateModelInstance(id, patch);
    if (r.ok()) {
      ++changed;
    } else if (r.status().code() != StatusCode::kAborted &&
               r.status().code() != StatusCode::kNotFound) {
      return r.status();
    }
  }
  return changed;
}

}  // namespace segma::api
