// Model files in the workers' caches: listed for everyone who may see the worker pool, deleted by
// admins (refused while an instance on that worker uses them), and reported by the workers
// themselves. Deletion is asynchronous: the row turns "deleting", the worker removes the files
// and then the row. See docs/model-files.md.

#include <fmt/format.h>

#include "api/api.h"

namespace segma::api {

namespace {

using auth::Action;
using auth::Resource;
using http::Response;
using http::bhttp::verb;

// GET /v2/model-files[?worker_id=]
Result<Response> ListModelFiles(ApiContext& c) {
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  ASSIGN_OR_RETURN(std::optional<int64_t> worker_id, QueryInt(c.http, "worker_id"));
  return ListResponse(c.s.store.ListModelFiles(o, worker_id), o);
}

// GET /v2/model-files/{id}
Result<Response> GetModelFile(ApiContext& c) {
  return RowResponse(RowById(c, &store::Store::GetModelFile));
}

// The first instance on the file's worker whose model has the file's source, if any.
Result<std::optional<types::ModelInstance>> UserOf(ApiContext& c, const types::ModelFile& f) {
  store::ListOptions o;
  o.per_page = store::ListOptions::kMaxPerPage;
  store::ModelInstanceFilter filter;
  filter.worker_id = f.worker_id;
  for (o.page = 1;; ++o.page) {
    ASSIGN_OR_RETURN(auto list, c.s.store.ListModelInstances(o, filter));
    for (const types::ModelInstance& inst : list.items) {
      Result<types::Model> m = c.s.store.GetModel(inst.model_id);
      if (m.ok() && types::SourceKey(m->source) == f.source_key) return std::optional(inst);
    }
    if (static_cast<int64_t>(o.page) * o.per_page >= list.total) break;
  }
  return std::optional<types::ModelInstance>();
}

// DELETE /v2/model-files/{id}: 202 with the row, now "deleting".
Result<Response> DeleteModelFile(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  ASSIGN_OR_RETURN(types::ModelFile f, c.s.store.GetModelFile(id));
  ASSIGN_OR_RETURN(std::optional<types::ModelInstance> user, UserOf(c, f));
  if (user) {
    return FailedPreconditionError(fmt::format(
        "model file {} is in use by instance {} ({}) on worker {}: scale its model to 0 or "
        "delete it first",
        id, user->name, types::InstanceStateName(user->state), f.worker_name));
  }
  if (f.state == types::ModelFileState::kDeleting) {
    return ObjectResponse(types::ToJson(f), http::bhttp::status::accepted);
  }
  return RowResponse(c.s.store.SetModelFileState(id, types::ModelFileState::kDeleting,
                                                 "waiting for the worker to remove the files"),
                     http::bhttp::status::accepted);
}

// PUT /v2/worker/model-files {"source","backend","local_path","state","state_message",
//                             "size_bytes","downloaded_bytes"}: the row of this worker, upserted.
Result<Response> ReportModelFile(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t self, SelfWorker(c));
  json::object storage;
  JsonReader r = c.Body(storage);
  const json::object* source = r.OptionalObject("source");
  types::ModelFile f;
  f.worker_id = self;
  f.backend = r.OptionalString("backend").value_or("");
  f.local_path = r.OptionalString("local_path").value_or("");
  const std::string state = r.String("state");
  f.state_message = r.OptionalString("state_message").value_or("");
  f.size_bytes = r.OptionalInt("size_bytes").value_or(0);
  f.downloaded_bytes = r.OptionalInt("downloaded_bytes").value_or(0);
  RETURN_IF_ERROR(r.Finish());
  if (source == nullptr) return InvalidArgumentError("source is required");
  ASSIGN_OR_RETURN(f.source, types::ModelSourceFromJson(*source));
  if (f.source.type != types::SourceType::kHuggingFace &&
      f.source.type != types::SourceType::kModelScope) {
    return InvalidArgumentError("source.type must be huggingface or modelscope");
  }
  f.source_key = types::SourceKey(f.source);
  std::optional<types::ModelFileState> st = types::ParseModelFileState(state);
  if (!st || *st == types::ModelFileState::kDeleting) {
    return InvalidArgumentError("state must be one of downloading, ready, error");
  }
  f.state = *st;
  if (f.size_bytes < 0 || f.downloaded_bytes < 0) {
    return InvalidArgumentError("size_bytes and downloaded_bytes must be >= 0");
  }
  if (f.state_message.size() > 4096) f.state_message.resize(4096);
  return RowResponse(c.s.store.UpsertModelFile(f));
}

// GET /v2/worker/model-files: this worker's rows (to find those marked for deletion).
Result<Response> ListOwnModelFiles(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t self, SelfWorker(c));
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  return ListResponse(c.s.store.ListModelFiles(o, self), o);
}

// DELETE /v2/worker/model-files/{id}: the worker removed the files.
Result<Response> DeleteOwnModelFile(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t self, SelfWorker(c));
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  ASSIGN_OR_RETURN(types::ModelFile f, c.s.store.GetModelFile(id));
  if (f.worker_id != self) {
    return NotFoundError(fmt::format("model file {} not found on this worker", id));
  }
  return NoContentResponse(c.s.store.DeleteModelFile(id));
}

}  // namespace

std::vector<Route> ModelFileRoutes() {
  using A = Access;
  return {
      {verb::get, "/v2/model-files", A::kGlobal, Resource::kModelFiles, Action::kRead,
       ListModelFiles, "model-files"},
      {verb::get, "/v2/model-files/{id}", A::kGlobal, Resource::kModelFiles, Action::kRead,
       GetModelFile, ""},
      {verb::delete_, "/v2/model-files/{id}", A::kGlobal, Resource::kModelFiles, Action::kDelete,
       DeleteModelFile, ""},
      // Not audited: download progress, once a second per download (docs/security.md).
      {verb::put, "/v2/worker/model-files", A::kGlobal, Resource::kWorkerSelf, Action::kUpdate,
       ReportModelFile, "", Route::Audit::kSkip},
      {verb::get, "/v2/worker/model-files", A::kGlobal, Resource::kWorkerSelf, Action::kRead,
       ListOwnModelFiles, ""},
      {verb::delete_, "/v2/worker/model-files/{id}", A::kGlobal, Resource::kWorkerSelf,
       Action::kDelete, DeleteOwnModelFile, ""},
  };
}

}  // namespace segma::api
