#pragma once

// The REST /v2 API: a table of routes, each declaring what it acts on (auth::Resource,
// auth::Action) and how its project is found, so that authentication and authorization happen in
// one wrapper (Install) and the RBAC test can walk every route × role.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/thread_pool.hpp>

#include "auth/api_key_service.h"
#include "auth/identity_service.h"
#include "auth/rbac.h"
#include "auth/worker_tokens.h"
#include "common/clock.h"
#include "common/event_bus.h"
#include "http/router.h"
#include "metrics/registry.h"
#include "store/store.h"
#include "worker/engines/backend.h"

namespace segma::api {

struct ApiOptions {
  std::string data_dir;
  // Appended to the session cookie; "Secure; " when served behind TLS.
  bool secure_cookies = false;
  // Key of the tokens the server presents to workers' own HTTP ports (WorkerProxyToken).
  std::string worker_proxy_key;
  // ServerConfig::min_useful_sequences, for the warnings of POST /v2/model-evaluations.
  int min_useful_sequences = 8;
};

// The bearer token the server presents to worker `token_hash`'s HTTP port (log proxying):
// HMAC(key, worker token hash). The worker receives it at registration ("proxy_token"); it
// changes whenever the worker's own token does. Pure.
std::string WorkerProxyToken(const std::string& key, const std::string& token_hash);

// What handlers work with. All references outlive the router.
class ServerMetrics;

struct Services {
  store::Store& store;
  EventBus& bus;
  auth::IdentityService& identity;
  auth::ApiKeyService& api_keys;
  auth::WorkerTokens& worker_tokens;
  const Clock& clock;
  boost::asio::thread_pool& blocking;  // handlers run here: they may block on the store
  ApiOptions options;
  ServerMetrics* metrics = nullptr;  // counts watch streams when set
};

// How a route's access is decided.
enum class Access {
  kPublic,   // no credentials (login, probes, worker registration with its own token)
  kGlobal,   // Authorize(resource, action, no project) before the handler runs
  kProject,  // authenticated before; the handler must call ApiContext::AuthorizeProject
};

// What a handler adds to its request's audit record (docs/security.md "Audit trail") beyond what
// the route and the principal say. The actor fields are used only when the request carried no
// credentials the wrapper resolved (sign-in, worker registration). Never a secret.
struct AuditNote {
  std::string actor_kind;  // "user", "worker"; "" = anonymous
  std::optional<int64_t> actor_id;
  std::string actor_name;             // e.g. the username a sign-in tried
  std::optional<int64_t> project_id;  // the project authorized (or refused) last
  std::string resource_id;            // e.g. the id of a row created
};

class ApiContext {
 public:
  ApiContext(http::RequestContext& http, const auth::Principal& principal, auth::Resource resource,
             auth::Action action, Services& services)
      : http(http), principal(principal), resource(resource), action(action), s(services) {}

  http::RequestContext& http;
  const auth::Principal& principal;
  const auth::Resource resource;
  const auth::Action action;
  Services& s;

  // auth::Authorize for this route's resource and action in `project_id`.
  Status AuthorizeProject(int64_t project_id, std::optional<int64_t> owner_user_id = std::nullopt);
  // The same for another action or resource (e.g. reading a project's members).
  Status Authorize(auth::Action action, auth::Resource resource, std::optional<int64_t> project_id);
  bool authorized() const { return authorized_; }
  // Filled by AuthorizeProject/Authorize (project_id) and by handlers; read after the handler.
  AuditNote audit;
  // The request body as one JSON object, strictly read (see JsonReader).
  JsonReader Body(json::object& storage) const;
  // The request body as one JSON object, as sent, for codecs that read it themselves.
  // kInvalidArgument "body must be a JSON object" for anything else.
  Result<json::object> BodyObject() const;

 private:
  bool authorized_ = false;
};

// Handlers are synchronous and run on the blocking pool; they return a response or an error
// that the wrapper renders in the API's error format.
using Handler = std::function<Result<http::Response>(ApiContext&)>;

struct Route {
  http::bhttp::verb method;
  std::string pattern;
  Access access;
  auth::Resource resource;
  auth::Action action;
  Handler handler;
  // Non-empty for list routes: `?watch=true` streams events of this resource instead.
  std::string watch_resource;
  // Whether a call is recorded in the audit trail: every call of a method other than GET
  // (whatever its outcome), unless the route says kSkip (worker heartbeats: docs/security.md).
  enum class Audit { kRecord, kSkip } audit = Audit::kRecord;
  // Whether a session whose user must change their password may call it (change-password,
  // sign-out, "who am I"); every other route answers 403 password_change_required until then.
  enum class BeforePasswordChange {
    kRefused,
    kAllowed
  } before_password_change = BeforePasswordChange::kRefused;
};

// The error code of the 403 that a session of a user who must change their password gets from
// every route but those declared BeforePasswordChange::kAllowed.
inline constexpr std::string_view kPasswordChangeRequired = "password_change_required";

// The audit record of one call of `route` (store::AuditEvent without id, time and hashes): the
// principal (or, for public routes, what the handler noted), method, route pattern, the route's
// resource, the pattern's last capture (or the noted id, or the "id" of a created row in
// `response_body`), the noted project, `status`, the client address and request id. Never reads
// the request body. Pure.
store::AuditEvent AuditEventFor(const Route& route, const http::RequestContext& ctx,
                                const auth::Principal& principal, const AuditNote& note, int status,
                                std::string_view response_body);
// Whether a call of `route` with `method` is recorded (see Route::audit).
bool Audited(const Route& route, http::bhttp::verb method);

// Every /v2 route of the control plane (identity, projects, keys, clusters, workers, GPUs).
std::vector<Route> ControlPlaneRoutes();

// Adds `routes` to `router`: credentials → principal (an API key only from its allowed_cidrs:
// 403 otherwise; a session whose user must change their password only on routes that allow it:
// 403 password_change_required otherwise), access check, handler on the blocking pool, watch
// streams, errors rendered as {"error":{"code","message"}}.
void Install(http::Router& router, Services& services, const std::vector<Route>& routes);

// Adds /healthz, /readyz and /metrics.
void InstallProbes(http::Router& router, Services& services, metrics::Registry& registry);

// ---- helpers shared by handler files ----------------------------------------------------------

// page, per_page, sort, q from the query string (kInvalidArgument for non-numbers).
Result<store::ListOptions> ListOptionsFromQuery(const http::RequestContext& ctx);
// {"items":[…],"pagination":{"page","per_page","total"}}
http::Response ListJson(json::array items, int64_t total, const store::ListOptions& options);
// ListJson of the page of `all` that `options` asks for (for lists built in memory).
http::Response PageOfListJson(json::array all, const store::ListOptions& options);
template <typename T>
http::Response ListResponse(const store::ListResult<T>& list, const store::ListOptions& options) {
  json::array items;
  items.reserve(list.items.size());
  for (const T& item : list.items) items.push_back(types::ToJson(item));
  return ListJson(std::move(items), list.total, options);
}
http::Response ObjectResponse(const json::object& o,
                              http::bhttp::status status = http::bhttp::status::ok);
// `row` (a store or service result) as its JSON object, or its error as it is.
template <typename T>
Result<http::Response> RowResponse(const Result<T>& row,
                                   http::bhttp::status status = http::bhttp::status::ok) {
  if (!row.ok()) return row.status();
  return ObjectResponse(types::ToJson(*row), status);
}
// ListResponse of a store result, or its error as it is.
template <typename T>
Result<http::Response> ListResponse(const Result<store::ListResult<T>>& list,
                                    const store::ListOptions& options) {
  if (!list.ok()) return list.status();
  return ListResponse(*list, options);
}
// 204 No Content, or `s` when it is an error.
Result<http::Response> NoContentResponse(const Status& s);
// Parses an optional integer query parameter.
Result<std::optional<int64_t>> QueryInt(const http::RequestContext& ctx, const std::string& key);

// The row that the path's {id} names, read with `get` (e.g. &store::Store::GetCluster):
// kInvalidArgument for a malformed id, else what `get` returns (kNotFound, kUnavailable).
template <typename T>
Result<T> RowById(ApiContext& c, Result<T> (store::Store::*get)(int64_t)) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  return (c.s.store.*get)(id);
}
// The same for a row that belongs to a project (it has a project_id), once the route's action is
// authorized in that project: kPermissionDenied otherwise.
template <typename T>
Result<T> ProjectRowById(ApiContext& c, Result<T> (store::Store::*get)(int64_t)) {
  ASSIGN_OR_RETURN(T row, RowById(c, get));
  RETURN_IF_ERROR(c.AuthorizeProject(row.project_id));
  return row;
}
// A new row of a project from the request body, read with `from_json` (e.g.
// types::ModelFromJson), once the route's action is authorized in its project: kInvalidArgument
// for a bad body or a missing project_id, kPermissionDenied.
template <typename T>
Result<T> ProjectRowFromBody(ApiContext& c, Result<T> (*from_json)(const json::object&)) {
  ASSIGN_OR_RETURN(json::object body, c.BodyObject());
  ASSIGN_OR_RETURN(T row, from_json(body));
  if (row.project_id <= 0) return InvalidArgumentError("project_id is required");
  RETURN_IF_ERROR(c.AuthorizeProject(row.project_id));
  return row;
}
// `current` with the request body applied by `patch_from_json` (e.g. types::PatchModelFromJson),
// keeping its id: kInvalidArgument for a bad body or field.
template <typename T>
Result<T> PatchedFromBody(const ApiContext& c, const T& current,
                          Result<T> (*patch_from_json)(const T&, const json::object&)) {
  ASSIGN_OR_RETURN(json::object body, c.BodyObject());
  ASSIGN_OR_RETURN(T patched, patch_from_json(current, body));
  patched.id = current.id;
  return patched;
}

// Narrows `o`, a list of this route's (project-scoped) resource, to what the principal may read:
// the project of `o.project_id` when set (authorized there), else the principal's projects.
// Returns false when the principal may read no project at all (the list is empty).
Result<bool> ScopeToReadableProjects(ApiContext& c, store::ListOptions& o);
// GET of a project-scoped list with ?project_id= and the query's paging, read with `list`
// (e.g. &store::Store::ListModels) over the projects the principal may read.
template <typename T>
Result<http::Response> ProjectListResponse(
    ApiContext& c, Result<store::ListResult<T>> (store::Store::*list)(const store::ListOptions&)) {
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  ASSIGN_OR_RETURN(o.project_id, QueryInt(c.http, "project_id"));
  ASSIGN_OR_RETURN(bool any, ScopeToReadableProjects(c, o));
  if (!any) return ListJson(json::array(), 0, o);
  return ListResponse((c.s.store.*list)(o), o);
}

// The id of the calling worker; kPermissionDenied "this route needs a worker token" for any
// other caller.
Result<int64_t> SelfWorker(const ApiContext& c);

// The backend `name` as deployments see it: a built-in one with the versions users added to it,
// or a custom one (POST /v2/backends). kNotFound "backend 'x' not found ..."; kInternal when a
// stored definition no longer parses; kUnavailable from the store.
Result<engines::Backend> ResolveBackend(store::Store& store, const std::string& name);
// The backends of `store` (ResolveBackend) as engine choice and the scheduler see them
// (engines::ProfileOf). Thread-safe as the store is.
class StoreBackendCatalog final : public types::BackendCatalog {
 public:
  explicit StoreBackendCatalog(store::Store& store) : store_(store) {}
  // types::BackendCatalog
  Result<types::BackendProfile> Find(const std::string& name) const override;

 private:
  store::Store& store_;
};

// Model `m`'s engine as POST and PATCH /v2/models check it (types::ChooseEngine, then
// types::CheckEngineFits): kInvalidArgument when it names a backend (or backend version) that
// does not exist, when the backend does not read the model's format ("source: ...") and when
// distributed_inference_across_workers asks for a backend version that has no distributed
// command. Returns the choice.
Result<types::EngineChoice> CheckModelBackend(store::Store& store, const types::Model& m);

// Route tables of each handler file; ControlPlaneRoutes concatenates them.
std::vector<Route> IdentityRoutes();
std::vector<Route> InfraRoutes();
std::vector<Route> WorkerRoutes();
std::vector<Route> UsageRoutes();
std::vector<Route> ModelRoutes();
std::vector<Route> ModelFileRoutes();
std::vector<Route> ModelRouteRoutes();  // /v2/model-routes (route_routes.cc)
std::vector<Route> AuditRoutes();       // /v2/audit-events (audit_routes.cc)

}  // namespace segma::api
