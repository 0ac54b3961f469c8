// /v2/model-routes: public model names of a project spread over its deployments by weight, with
// fallbacks (ADR 0012). Project-scoped: viewers read, project admins write (auth/rbac.h); every
// handler authorizes against the project of the row it acts on. The checks that need the
// database (target models in the project, names shared with models) are the store's, inside its
// transaction, so a concurrent change cannot slip between check and write.

#include <set>

#include <fmt/format.h>

#include "api/api.h"
#include "types/model_route.h"

namespace segma::api {

namespace {

using auth::Action;
using auth::Resource;
using http::Response;
using http::bhttp::status;
using http::bhttp::verb;

Result<json::object> BodyObject(const ApiContext& c) {
  Result<json::value> v = ParseJson(c.http.req.body());
  if (!v.ok() || !v->is_object()) return InvalidArgumentError("body must be a JSON object");
  return std::move(v->as_object());
}

// Narrows a list without a project filter to what the principal may read (as for models).
// Returns false when the principal may read no project at all.
Result<bool> ScopeList(ApiContext& c, store::ListOptions& o) {
  if (o.project_id) {
    RETURN_IF_ERROR(c.AuthorizeProject(*o.project_id));
    return true;
  }
  RETURN_IF_ERROR(c.Authorize(Action::kRead, Resource::kModelRoutes, std::nullopt));
  std::optional<std::set<int64_t>> readable = auth::ReadableProjects(c.principal);
  if (!readable) return true;  // platform admin
  if (readable->empty()) return false;
  if (c.principal.api_key) {
    o.project_id = *readable->begin();  // a key reads its own project only
  } else {
    o.member_user_id = c.principal.user_id;
  }
  return true;
}

Result<Response> ListRoutes(ApiContext& c) {
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  ASSIGN_OR_RETURN(o.project_id, QueryInt(c.http, "project_id"));
  ASSIGN_OR_RETURN(bool any, ScopeList(c, o));
  if (!any) return ListJson(json::array(), 0, o);
  ASSIGN_OR_RETURN(auto list, c.s.store.ListModelRoutes(o));
  return ListResponse(list, o);
}

Result<Response> CreateRoute(ApiContext& c) {
  ASSIGN_OR_RETURN(json::object body, BodyObject(c));
  ASSIGN_OR_RETURN(types::ModelRoute r, types::ModelRouteFromJson(body));
  if (r.project_id <= 0) return InvalidArgumentError("project_id is required");
  RETURN_IF_ERROR(c.AuthorizeProject(r.project_id));
  ASSIGN_OR_RETURN(types::ModelRoute created, c.s.store.CreateModelRoute(r));
  return ObjectResponse(types::ToJson(created), status::created);
}

Result<types::ModelRoute> AuthorizedRoute(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  ASSIGN_OR_RETURN(types::ModelRoute r, c.s.store.GetModelRoute(id));
  RETURN_IF_ERROR(c.AuthorizeProject(r.project_id));
  return r;
}

Result<Response> GetRoute(ApiContext& c) {
  ASSIGN_OR_RETURN(types::ModelRoute r, AuthorizedRoute(c));
  return ObjectResponse(types::ToJson(r));
}

Result<Response> UpdateRoute(ApiContext& c) {
  ASSIGN_OR_RETURN(types::ModelRoute current, AuthorizedRoute(c));
  ASSIGN_OR_RETURN(json::object body, BodyObject(c));
  ASSIGN_OR_RETURN(types::ModelRoute patched, types::PatchModelRouteFromJson(current, body));
  patched.id = current.id;
  ASSIGN_OR_RETURN(types::ModelRoute updated, c.s.store.UpdateModelRoute(patched));
  return ObjectResponse(types::ToJson(updated));
}

Result<Response> DeleteRoute(ApiContext& c) {
  ASSIGN_OR_RETURN(types::ModelRoute r, AuthorizedRoute(c));
  RETURN_IF_ERROR(c.s.store.DeleteModelRoute(r.id));
  return Response::NoContent();
}

}  // namespace

std::vector<Route> ModelRouteRoutes() {
  using A = Access;
  return {
      {verb::get, "/v2/model-routes", A::kProject, Resource::kModelRoutes, Action::kRead,
       ListRoutes, "model-routes"},
      {verb::post, "/v2/model-routes", A::kProject, Resource::kModelRoutes, Action::kCreate,
       CreateRoute, ""},
      {verb::get, "/v2/model-routes/{id}", A::kProject, Resource::kModelRoutes, Action::kRead,
       GetRoute, ""},
      {verb::patch, "/v2/model-routes/{id}", A::kProject, Resource::kModelRoutes, Action::kUpdate,
       UpdateRoute, ""},
      {verb::delete_, "/v2/model-routes/{id}", A::kProject, Resource::kModelRoutes, Action::kDelete,
       DeleteRoute, ""},
  };
}

}  // namespace segma::api
