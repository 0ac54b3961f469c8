// /v2/model-routes: public model names of a project spread over its deployments by weight, with
// fallbacks (ADR 0012). Project-scoped: viewers read, project admins write (auth/rbac.h); every
// handler authorizes against the project of the row it acts on. The checks that need the
// database (target models in the project, names shared with models) are the store's, inside its
// transaction, so a concurrent change cannot slip between check and write.

#include "api/api.h"
#include "types/model_route.h"

namespace segma::api {

namespace {

using auth::Action;
using auth::Resource;
using http::Response;
using http::bhttp::status;
using http::bhttp::verb;

Result<Response> ListRoutes(ApiContext& c) {
  return ProjectListResponse(c, &store::Store::ListModelRoutes);
}

Result<Response> CreateRoute(ApiContext& c) {
  ASSIGN_OR_RETURN(types::ModelRoute r, ProjectRowFromBody(c, types::ModelRouteFromJson));
  return RowResponse(c.s.store.CreateModelRoute(r), status::created);
}

Result<Response> GetRoute(ApiContext& c) {
  return RowResponse(ProjectRowById(c, &store::Store::GetModelRoute));
}

Result<Response> UpdateRoute(ApiContext& c) {
  ASSIGN_OR_RETURN(types::ModelRoute current, ProjectRowById(c, &store::Store::GetModelRoute));
  ASSIGN_OR_RETURN(types::ModelRoute patched,
                   PatchedFromBody(c, current, types::PatchModelRouteFromJson));
  return RowResponse(c.s.store.UpdateModelRoute(patched));
}

Result<Response> DeleteRoute(ApiContext& c) {
  ASSIGN_OR_RETURN(types::ModelRoute r, ProjectRowById(c, &store::Store::GetModelRoute));
  return NoContentResponse(c.s.store.DeleteModelRoute(r.id));
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
