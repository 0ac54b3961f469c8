// /v2/auth, /v2/sessions, /v2/users, /v2/projects (+ members), /v2/api-keys.

#include <fmt/format.h>

#include "api/api.h"
#include "auth/validation.h"
#include "common/crypto.h"

namespace segma::api {

namespace {

using auth::Action;
using auth::Resource;
using http::Response;
using http::bhttp::status;
using http::bhttp::verb;

// The session (HttpOnly: no script reads it) and the CSRF token beside it, which the console's
// script reads and echoes as X-CSRF-Token on every state-changing call (RequestContext::CheckCsrf).
void SetSessionCookies(Response& res, const std::string& token, int64_t max_age_s, bool secure) {
  const std::string csrf = token.empty() ? "" : RandomToken(24);
  res.msg.insert(http::bhttp::field::set_cookie,
                 fmt::format("segma_session={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                             token, max_age_s, secure ? "; Secure" : ""));
  res.msg.insert(http::bhttp::field::set_cookie,
                 fmt::format("segma_csrf={}; Path=/; SameSite=Strict; Max-Age={}{}", csrf,
                             max_age_s, secure ? "; Secure" : ""));
}

// ---- auth ---------------------------------------------------------------------------------------

// Whether cookies get the Secure attribute: when configured, or when a trusted proxy says the
// client came over HTTPS (TLS offloaded in front of segma).
bool SecureCookies(const ApiContext& c) {
  return c.s.options.secure_cookies || c.http.forwarded_proto == "https";
}

Result<Response> Login(ApiContext& c) {
  json::object storage;
  JsonReader r = c.Body(storage);
  std::string username = r.String("username");
  // The audit trail records the name tried, success or not (never the password).
  c.audit.actor_name = username.substr(0, 128);
  std::string password = r.String("password");
  RETURN_IF_ERROR(r.Finish());
  auth::SignInContext from;
  from.client_address = c.http.remote_address;
  from.user_agent = std::string(c.http.req[http::bhttp::field::user_agent]);
  Duration wait{};
  Result<auth::LoginResult> signed_in = c.s.identity.Login(username, password, from, &wait);
  if (!signed_in.ok()) {
    if (signed_in.status().code() != StatusCode::kResourceExhausted) return signed_in.status();
    // Locked out: 429 with the seconds left, so clients (and the console) can say when.
    Response res = Response::Error(signed_in.status());
    res.msg.set(http::bhttp::field::retry_after,
                std::to_string(std::chrono::ceil<std::chrono::seconds>(wait).count()));
    return res;
  }
  auth::LoginResult login = std::move(signed_in).value();
  c.audit.actor_kind = "user";
  c.audit.actor_id = login.user.id;
  c.audit.resource_id = std::to_string(login.user.id);
  json::object body{{"token", login.token},
                    {"expires_at", FormatRfc3339(login.expires_at)},
                    {"user", types::ToJson(login.user)}};
  Response res = ObjectResponse(body);
  const auto max_age =
      std::chrono::duration_cast<std::chrono::seconds>(login.expires_at - c.s.clock.Now()).count();
  SetSessionCookies(res, login.token, std::max<int64_t>(0, max_age), SecureCookies(c));
  return res;
}

Result<Response> Logout(ApiContext& c) {
  if (c.principal.kind != auth::Principal::Kind::kUser) {
    return InvalidArgumentError("only a session can log out; revoke API keys instead");
  }
  RETURN_IF_ERROR(c.s.identity.Logout(c.http.BearerToken().value_or("")));
  Response res = Response::NoContent();
  SetSessionCookies(res, "", 0, SecureCookies(c));
  return res;
}

Result<Response> ChangePassword(ApiContext& c) {
  json::object storage;
  JsonReader r = c.Body(storage);
  std::string old_password = r.String("old_password");
  std::string new_password = r.String("new_password");
  RETURN_IF_ERROR(r.Finish());
  RETURN_IF_ERROR(c.s.identity.ChangePassword(c.principal.user_id, old_password, new_password,
                                              c.principal.session_id));
  return Response::NoContent();
}

Result<Response> Me(ApiContext& c) {
  ASSIGN_OR_RETURN(types::User user, c.s.store.GetUser(c.principal.user_id));
  json::object body = types::ToJson(user);
  json::array roles;
  for (const auto& [project_id, role] : c.principal.project_roles) {
    roles.push_back({{"project_id", project_id}, {"role", types::ProjectRoleName(role)}});
  }
  body["projects"] = std::move(roles);
  return ObjectResponse(body);
}

// ---- sessions -----------------------------------------------------------------------------------

// GET /v2/sessions: the caller's own; ?user_id= another user's and ?all=true everyone's (admins).
Result<Response> ListSessions(ApiContext& c) {
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  ASSIGN_OR_RETURN(std::optional<int64_t> user_id, QueryInt(c.http, "user_id"));
  const bool all = c.http.Query("all") == "true";
  if (all || (user_id && *user_id != c.principal.user_id)) {
    RETURN_IF_ERROR(c.Authorize(Action::kRead, Resource::kUsers, std::nullopt));
    if (!all) o.user_id = user_id;
  } else {
    o.user_id = c.principal.user_id;
  }
  ASSIGN_OR_RETURN(store::ListResult<types::Session> list, c.s.store.ListSessions(o));
  json::array items;
  for (const types::Session& session : list.items) {
    json::object item = types::ToJson(session);
    item["current"] = session.id == c.principal.session_id;
    items.push_back(std::move(item));
  }
  return ListJson(std::move(items), list.total, o);
}

// DELETE /v2/sessions/{id}: one's own, or anyone's for admins. Another user's session is "not
// found" to those who may not revoke it.
Result<Response> RevokeSession(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  ASSIGN_OR_RETURN(types::Session session, c.s.store.GetSession(id));
  if (session.user_id != c.principal.user_id &&
      !c.Authorize(Action::kUpdate, Resource::kUsers, std::nullopt).ok()) {
    return NotFoundError(fmt::format("session {} not found", id));
  }
  RETURN_IF_ERROR(c.s.store.RevokeSession(id, c.s.clock.Now()));
  Response res = Response::NoContent();
  if (id == c.principal.session_id) SetSessionCookies(res, "", 0, SecureCookies(c));
  return res;
}

// ---- users --------------------------------------------------------------------------------------

Result<Response> ListUsers(ApiContext& c) {
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  return ListResponse(c.s.store.ListUsers(o), o);
}

Result<Response> CreateUser(ApiContext& c) {
  json::object storage;
  JsonReader r = c.Body(storage);
  auth::NewUser u;
  u.username = r.String("username");
  u.password = r.String("password");
  u.full_name = r.OptionalString("full_name").value_or("");
  u.is_admin = r.OptionalBool("is_admin").value_or(false);
  u.require_password_change = r.OptionalBool("require_password_change").value_or(false);
  RETURN_IF_ERROR(r.Finish());
  if (u.full_name.size() > 256) return InvalidArgumentError("full_name is too long");
  return RowResponse(c.s.identity.CreateUser(u), status::created);
}

Result<Response> GetUser(ApiContext& c) { return RowResponse(RowById(c, &store::Store::GetUser)); }

Result<Response> UpdateUser(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  json::object storage;
  JsonReader r = c.Body(storage);
  store::UserPatch patch;
  patch.full_name = r.OptionalString("full_name");
  patch.is_admin = r.OptionalBool("is_admin");
  patch.is_active = r.OptionalBool("is_active");
  std::optional<std::string> password = r.OptionalString("password");
  std::optional<bool> require_change = r.OptionalBool("require_password_change");
  RETURN_IF_ERROR(r.Finish());
  if (patch.full_name && patch.full_name->size() > 256) {
    return InvalidArgumentError("full_name is too long");
  }
  if (id == c.principal.user_id &&
      ((patch.is_admin && !*patch.is_admin) || (patch.is_active && !*patch.is_active))) {
    return FailedPreconditionError("you cannot remove your own admin rights or disable yourself");
  }
  ASSIGN_OR_RETURN(types::User existing, c.s.store.GetUser(id));
  if (password) {
    RETURN_IF_ERROR(auth::ValidatePassword(*password));
  }
  patch.require_password_change = require_change;
  ASSIGN_OR_RETURN(types::User user, c.s.store.UpdateUser(existing.id, patch));
  if (password) {
    RETURN_IF_ERROR(c.s.identity.ResetPassword(id, *password, require_change.value_or(true)));
    ASSIGN_OR_RETURN(user, c.s.store.GetUser(id));
  }
  return ObjectResponse(types::ToJson(user));
}

Result<Response> DeleteUser(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  if (id == c.principal.user_id) return FailedPreconditionError("you cannot delete yourself");
  ASSIGN_OR_RETURN(types::User user, c.s.store.GetUser(id));
  if (user.is_admin && user.is_active) {
    ASSIGN_OR_RETURN(int64_t admins, c.s.store.CountActiveAdmins());
    if (admins <= 1) return FailedPreconditionError("cannot delete the last active admin");
  }
  return NoContentResponse(c.s.store.DeleteUser(id));
}

// ---- projects -----------------------------------------------------------------------------------

// Quotas: a number sets it, null removes it (unlimited).
template <typename T>
void ReadQuota(JsonReader& r, json::object& body, std::string_view key,
               std::optional<std::optional<T>>& out) {
  auto it = body.find(key);
  if (it == body.end()) return;
  if (it->value().is_null()) {
    r.OptionalValue(key);
    out = std::optional<T>();
    return;
  }
  std::optional<T> v;
  if constexpr (std::is_same_v<T, double>) {
    v = r.OptionalDouble(key);
  } else {
    v = r.OptionalInt(key);
  }
  if (v && *v < 0) {
    r.Fail(key, "must be >= 0 or null");
    return;
  }
  out = v;
}

// Gateway limits (ADR 0013): a merge patch; absent leaves them as they are.
Status ReadLimits(JsonReader& r, json::object& body, std::optional<types::LimitsPatch>& out) {
  if (!body.contains("limits")) return OkStatus();
  r.OptionalValue("limits");  // marks the field as read
  ASSIGN_OR_RETURN(out, types::ParseLimitsPatch(body.at("limits")));
  return OkStatus();
}

Status ReadProjectFields(JsonReader& r, json::object& body, store::ProjectPatch& patch) {
  patch.description = r.OptionalString("description");
  if (patch.description && patch.description->size() > 1024) {
    r.Fail("description", "must be at most 1024 characters");
  }
  ReadQuota<double>(r, body, "max_gpus", patch.max_gpus);
  ReadQuota<double>(r, body, "max_vram_gib", patch.max_vram_gib);
  ReadQuota<int64_t>(r, body, "max_instances", patch.max_instances);
  return ReadLimits(r, body, patch.limits);
}

Result<Response> ListProjects(ApiContext& c) {
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  RETURN_IF_ERROR(c.Authorize(Action::kRead, Resource::kProjects, std::nullopt));
  if (!c.principal.is_admin) {
    if (c.principal.api_key) {
      // A key sees its own project only.
      ASSIGN_OR_RETURN(types::Project p, c.s.store.GetProject(c.principal.api_key->project_id));
      store::ListResult<types::Project> one;
      one.items.push_back(std::move(p));
      one.total = 1;
      return ListResponse(one, o);
    }
    o.member_user_id = c.principal.user_id;
  }
  return ListResponse(c.s.store.ListProjects(o), o);
}

Result<Response> CreateProject(ApiContext& c) {
  json::object storage;
  JsonReader r = c.Body(storage);
  std::string name = r.String("name");
  store::ProjectPatch fields;
  RETURN_IF_ERROR(ReadProjectFields(r, storage, fields));
  RETURN_IF_ERROR(r.Finish());
  RETURN_IF_ERROR(auth::ValidateName("project", name));
  types::Project p;
  if (fields.limits) p.limits = fields.limits->ApplyTo({});
  p.name = name;
  p.description = fields.description.value_or("");
  if (fields.max_gpus) p.max_gpus = *fields.max_gpus;
  if (fields.max_vram_gib) p.max_vram_gib = *fields.max_vram_gib;
  if (fields.max_instances) p.max_instances = *fields.max_instances;
  return RowResponse(c.s.store.CreateProject(p), status::created);
}

Result<Response> GetProject(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  // Authorize before looking up, so that non-members cannot probe which ids exist.
  RETURN_IF_ERROR(c.AuthorizeProject(id));
  return RowResponse(c.s.store.GetProject(id));
}

Result<Response> UpdateProject(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  RETURN_IF_ERROR(c.AuthorizeProject(id));
  json::object storage;
  JsonReader r = c.Body(storage);
  store::ProjectPatch patch;
  patch.name = r.OptionalString("name");
  RETURN_IF_ERROR(ReadProjectFields(r, storage, patch));
  RETURN_IF_ERROR(r.Finish());
  if (patch.name) RETURN_IF_ERROR(auth::ValidateName("project", *patch.name));
  // A project's own admins must not lift its budget: project limits are the administrators'.
  // (RBAC already reserves PATCH on projects to administrators; this holds even if that widens.)
  if (patch.limits && !c.principal.is_admin) {
    return PermissionDeniedError("only administrators may change a project's limits");
  }
  return RowResponse(c.s.store.UpdateProject(id, patch));
}

Result<Response> DeleteProject(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  RETURN_IF_ERROR(c.AuthorizeProject(id));
  return NoContentResponse(c.s.store.DeleteProject(id));
}

// ---- project members ----------------------------------------------------------------------------

Result<Response> ListMembers(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  RETURN_IF_ERROR(c.AuthorizeProject(id));
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  o.project_id = id;
  return ListResponse(c.s.store.ListProjectMembers(o), o);
}

Result<types::ProjectRole> ReadRole(JsonReader& r) {
  std::string role_name = r.String("role");
  if (!r.ok()) return r.Finish();
  std::optional<types::ProjectRole> role = types::ParseProjectRole(role_name);
  if (!role) {
    return InvalidArgumentError("role must be one of project-admin, member, viewer; got '" +
                                role_name.substr(0, 64) + "'");
  }
  return *role;
}

Result<Response> AddMember(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t project_id, c.http.IdParam());
  RETURN_IF_ERROR(c.AuthorizeProject(project_id));
  json::object storage;
  JsonReader r = c.Body(storage);
  std::optional<int64_t> user_id = r.OptionalInt("user_id");
  std::optional<std::string> username = r.OptionalString("username");
  ASSIGN_OR_RETURN(types::ProjectRole role, ReadRole(r));
  RETURN_IF_ERROR(r.Finish());
  if (user_id.has_value() == username.has_value()) {
    return InvalidArgumentError("give exactly one of user_id and username");
  }
  if (username) {
    ASSIGN_OR_RETURN(types::User u, c.s.store.GetUserByUsername(*username));
    user_id = u.id;
  }
  return RowResponse(c.s.store.AddProjectMember(project_id, *user_id, role), status::created);
}

Result<Response> UpdateMember(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t project_id, c.http.IdParam());
  ASSIGN_OR_RETURN(int64_t user_id, c.http.IdParam("user_id"));
  RETURN_IF_ERROR(c.AuthorizeProject(project_id));
  json::object storage;
  JsonReader r = c.Body(storage);
  ASSIGN_OR_RETURN(types::ProjectRole role, ReadRole(r));
  RETURN_IF_ERROR(r.Finish());
  return RowResponse(c.s.store.UpdateProjectMember(project_id, user_id, role));
}

Result<Response> RemoveMember(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t project_id, c.http.IdParam());
  ASSIGN_OR_RETURN(int64_t user_id, c.http.IdParam("user_id"));
  RETURN_IF_ERROR(c.AuthorizeProject(project_id));
  return NoContentResponse(c.s.store.RemoveProjectMember(project_id, user_id));
}

// ---- API keys -----------------------------------------------------------------------------------

// allowed_cidrs (auth::ParseAllowedCidrs): absent leaves `out` unset; null sets it to "any".
Status ReadAllowedCidrs(JsonReader& r, json::object& body,
                        std::optional<std::optional<std::vector<std::string>>>& out) {
  if (!body.contains("allowed_cidrs")) return OkStatus();
  r.OptionalValue("allowed_cidrs");  // marks the field as read
  ASSIGN_OR_RETURN(std::optional<std::vector<std::string>> cidrs,
                   auth::ParseAllowedCidrs(body.at("allowed_cidrs")));
  out.emplace(std::move(cidrs));
  return OkStatus();
}

Result<Response> ListApiKeys(ApiContext& c) {
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  ASSIGN_OR_RETURN(std::optional<int64_t> project_id, QueryInt(c.http, "project_id"));
  o.project_id = project_id;
  if (project_id) {
    RETURN_IF_ERROR(c.AuthorizeProject(*project_id));
  } else {
    RETURN_IF_ERROR(c.Authorize(Action::kRead, Resource::kApiKeys, std::nullopt));
  }
  return ListResponse(c.s.api_keys.List(c.principal, o), o);
}

Result<Response> CreateApiKey(ApiContext& c) {
  json::object storage;
  JsonReader r = c.Body(storage);
  auth::CreateApiKeyRequest req;
  req.name = r.String("name");
  req.project_id = r.Int("project_id");
  std::string scope = r.OptionalString("scope").value_or("inference");
  const json::value* models = r.OptionalValue("allowed_models");
  std::optional<std::string> expires_at = r.OptionalString("expires_at");
  std::optional<types::LimitsPatch> limits;
  RETURN_IF_ERROR(ReadLimits(r, storage, limits));
  if (limits) req.limits = limits->ApplyTo({});
  std::optional<std::optional<std::vector<std::string>>> cidrs;
  RETURN_IF_ERROR(ReadAllowedCidrs(r, storage, cidrs));
  if (cidrs) req.allowed_cidrs = *cidrs;
  if (r.ok() && models != nullptr) {
    if (models->is_string() && models->as_string() == "*") {
      req.allowed_models.reset();
    } else if (models->is_array()) {
      req.allowed_models = r.OptionalStringArray("allowed_models");
    } else {
      r.Fail("allowed_models", "must be \"*\" or an array of model names");
    }
  }
  RETURN_IF_ERROR(r.Finish());
  std::optional<types::ApiKeyScope> parsed_scope = types::ParseApiKeyScope(scope);
  if (!parsed_scope) {
    return InvalidArgumentError("scope must be one of inference, management, all");
  }
  req.scope = *parsed_scope;
  if (expires_at) {
    ASSIGN_OR_RETURN(Timestamp t, ParseRfc3339(*expires_at));
    req.expires_at = t;
  }
  RETURN_IF_ERROR(c.AuthorizeProject(req.project_id));
  ASSIGN_OR_RETURN(auth::CreatedApiKey created, c.s.api_keys.Create(c.principal, req));
  json::object body = types::ToJson(created.key);
  body["secret"] = created.secret;
  return ObjectResponse(body, status::created);
}

// The key the path's {id} names, once the route's action is authorized on it.
Result<types::ApiKey> AuthorizedApiKey(ApiContext& c) {
  ASSIGN_OR_RETURN(int64_t id, c.http.IdParam());
  ASSIGN_OR_RETURN(types::ApiKey key, c.s.api_keys.Get(c.principal, id));
  RETURN_IF_ERROR(c.AuthorizeProject(key.project_id, key.user_id));
  return key;
}

Result<Response> GetApiKey(ApiContext& c) { return RowResponse(AuthorizedApiKey(c)); }

Result<Response> UpdateApiKey(ApiContext& c) {
  ASSIGN_OR_RETURN(types::ApiKey key, AuthorizedApiKey(c));
  json::object storage;
  JsonReader r = c.Body(storage);
  store::ApiKeyPatch patch;
  RETURN_IF_ERROR(ReadLimits(r, storage, patch.limits));
  RETURN_IF_ERROR(ReadAllowedCidrs(r, storage, patch.allowed_cidrs));
  RETURN_IF_ERROR(r.Finish());
  return RowResponse(c.s.api_keys.Update(c.principal, key.id, patch));
}

Result<Response> RevokeApiKey(ApiContext& c) {
  ASSIGN_OR_RETURN(types::ApiKey key, AuthorizedApiKey(c));
  return RowResponse(c.s.api_keys.Revoke(c.principal, key.id));
}

}  // namespace

std::vector<Route> IdentityRoutes() {
  using A = Access;
  return {
      {verb::post, "/v2/auth/login", A::kPublic, Resource::kSelf, Action::kCreate, Login, ""},
      // The only routes a user who must change their password may call until they have.
      {verb::post, "/v2/auth/logout", A::kGlobal, Resource::kSelf, Action::kUpdate, Logout, "",
       Route::Audit::kRecord, Route::BeforePasswordChange::kAllowed},
      {verb::post, "/v2/auth/change-password", A::kGlobal, Resource::kSelf, Action::kUpdate,
       ChangePassword, "", Route::Audit::kRecord, Route::BeforePasswordChange::kAllowed},
      {verb::get, "/v2/users/me", A::kGlobal, Resource::kSelf, Action::kRead, Me, "",
       Route::Audit::kRecord, Route::BeforePasswordChange::kAllowed},

      {verb::get, "/v2/sessions", A::kGlobal, Resource::kSelf, Action::kRead, ListSessions, ""},
      {verb::delete_, "/v2/sessions/{id}", A::kGlobal, Resource::kSelf, Action::kUpdate,
       RevokeSession, ""},

      {verb::get, "/v2/users", A::kGlobal, Resource::kUsers, Action::kRead, ListUsers, "users"},
      {verb::post, "/v2/users", A::kGlobal, Resource::kUsers, Action::kCreate, CreateUser, ""},
      {verb::get, "/v2/users/{id}", A::kGlobal, Resource::kUsers, Action::kRead, GetUser, ""},
      {verb::patch, "/v2/users/{id}", A::kGlobal, Resource::kUsers, Action::kUpdate, UpdateUser,
       ""},
      {verb::delete_, "/v2/users/{id}", A::kGlobal, Resource::kUsers, Action::kDelete, DeleteUser,
       ""},

      {verb::get, "/v2/projects", A::kProject, Resource::kProjects, Action::kRead, ListProjects,
       "projects"},
      {verb::post, "/v2/projects", A::kGlobal, Resource::kProjects, Action::kCreate, CreateProject,
       ""},
      {verb::get, "/v2/projects/{id}", A::kProject, Resource::kProjects, Action::kRead, GetProject,
       ""},
      {verb::patch, "/v2/projects/{id}", A::kProject, Resource::kProjects, Action::kUpdate,
       UpdateProject, ""},
      {verb::delete_, "/v2/projects/{id}", A::kProject, Resource::kProjects, Action::kDelete,
       DeleteProject, ""},

      {verb::get, "/v2/projects/{id}/members", A::kProject, Resource::kProjectMembers,
       Action::kRead, ListMembers, "project-members"},
      {verb::post, "/v2/projects/{id}/members", A::kProject, Resource::kProjectMembers,
       Action::kCreate, AddMember, ""},
      {verb::patch, "/v2/projects/{id}/members/{user_id}", A::kProject, Resource::kProjectMembers,
       Action::kUpdate, UpdateMember, ""},
      {verb::delete_, "/v2/projects/{id}/members/{user_id}", A::kProject, Resource::kProjectMembers,
       Action::kDelete, RemoveMember, ""},

      {verb::get, "/v2/api-keys", A::kProject, Resource::kApiKeys, Action::kRead, ListApiKeys,
       "api-keys"},
      {verb::post, "/v2/api-keys", A::kProject, Resource::kApiKeys, Action::kCreate, CreateApiKey,
       ""},
      {verb::get, "/v2/api-keys/{id}", A::kProject, Resource::kApiKeys, Action::kRead, GetApiKey,
       ""},
      {verb::patch, "/v2/api-keys/{id}", A::kProject, Resource::kApiKeys, Action::kUpdate,
       UpdateApiKey, ""},
      {verb::delete_, "/v2/api-keys/{id}", A::kProject, Resource::kApiKeys, Action::kDelete,
       RevokeApiKey, ""},
  };
}

}  // namespace segma::api
