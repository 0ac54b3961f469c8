// The audit trail (docs/security.md "Audit trail", ADR 0034): how a call becomes a record
// (AuditEventFor, used by Install), and GET /v2/audit-events and GET /v2/audit-events/verify
// (platform admins).

#include <charconv>

#include <fmt/format.h>

#include "api/api.h"

namespace segma::api {

namespace {

using auth::Action;
using auth::Resource;
using http::Response;
using http::bhttp::verb;

constexpr size_t kMaxFieldChars = 256;

std::string Clip(std::string_view s) { return std::string(s.substr(0, kMaxFieldChars)); }

// The audit name of a route's resource: the REST collection, "auth" for sign-in and the caller's
// own profile, "worker" for the workers' own endpoints.
std::string AuditResourceName(Resource r) {
  if (r == Resource::kSelf) return "auth";
  if (r == Resource::kWorkerSelf) return "worker";
  return std::string(auth::ResourceName(r));
}

// The value of the pattern's last "{name}" capture, "" when it has none.
std::string LastCapture(const std::string& pattern, const http::RequestContext& ctx) {
  const size_t open = pattern.rfind('{');
  const size_t close = pattern.rfind('}');
  if (open == std::string::npos || close == std::string::npos || close < open) return "";
  std::string name = pattern.substr(open + 1, close - open - 1);
  if (name.ends_with("...")) name.resize(name.size() - 3);
  auto it = ctx.path_params.find(name);
  return it == ctx.path_params.end() ? "" : it->second;
}

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string OptText(const std::optional<int64_t>& v) { return v ? std::to_string(*v) : ""; }
json::value OptJson(const std::optional<int64_t>& v) { return v ? json::value(*v) : json::value(); }

json::object EventJson(const store::AuditEvent& e) {
  return {{"id", e.id},
          {"at", FormatRfc3339(e.at)},
          {"actor_kind", e.actor_kind},
          {"actor_id", OptJson(e.actor_id)},
          {"actor_name", e.actor_name},
          {"method", e.method},
          {"route", e.route},
          {"resource", e.resource},
          {"resource_id", e.resource_id},
          {"project_id", OptJson(e.project_id)},
          {"status", e.status},
          {"client_address", e.client_address},
          {"request_id", e.request_id},
          {"prev_hash", e.prev_hash},
          {"hash", e.hash}};
}

Result<std::optional<Timestamp>> QueryTime(const http::RequestContext& ctx,
                                           const std::string& key) {
  std::optional<std::string> v = ctx.Query(key);
  if (!v) return std::optional<Timestamp>();
  Result<Timestamp> t = ParseRfc3339(*v);
  if (!t.ok()) {
    return InvalidArgumentError(
        fmt::format("{} must be an RFC 3339 time (2026-01-31T12:00:00Z)", key));
  }
  return std::optional<Timestamp>(*t);
}

// GET /v2/audit-events?actor=&project_id=&resource=&from=&to=&page=&per_page=&sort=[&format=csv]
Result<Response> ListAuditEvents(ApiContext& c) {
  ASSIGN_OR_RETURN(store::ListOptions o, ListOptionsFromQuery(c.http));
  store::AuditFilter f;
  f.actor = c.http.Query("actor");
  f.resource = c.http.Query("resource");
  ASSIGN_OR_RETURN(f.project_id, QueryInt(c.http, "project_id"));
  ASSIGN_OR_RETURN(f.from, QueryTime(c.http, "from"));
  ASSIGN_OR_RETURN(f.to, QueryTime(c.http, "to"));
  if (f.from && f.to && *f.to <= *f.from) return InvalidArgumentError("to must be after from");
  if ((f.actor && f.actor->size() > kMaxFieldChars) ||
      (f.resource && f.resource->size() > kMaxFieldChars)) {
    return InvalidArgumentError("actor and resource must be at most 256 characters");
  }
  std::string format = c.http.Query("format").value_or("");
  if (format.empty()) {
    const auto accept = c.http.req.find(http::bhttp::field::accept);
    const bool csv = accept != c.http.req.end() &&
                     std::string_view(accept->value()).find("text/csv") != std::string_view::npos;
    format = csv ? "csv" : "json";
  }
  if (format != "json" && format != "csv") {
    return InvalidArgumentError("format must be json or csv");
  }
  ASSIGN_OR_RETURN(store::ListResult<store::AuditEvent> list, c.s.store.ListAuditEvents(o, f));
  if (format == "csv") {
    std::string csv =
        "id,at,actor_kind,actor_id,actor_name,method,route,resource,resource_id,project_id,"
        "status,client_address,request_id,prev_hash,hash\n";
    for (const store::AuditEvent& e : list.items) {
      csv += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", e.id,
                         FormatRfc3339(e.at), e.actor_kind, OptText(e.actor_id),
                         CsvField(e.actor_name), e.method, CsvField(e.route), CsvField(e.resource),
                         CsvField(e.resource_id), OptText(e.project_id), e.status,
                         CsvField(e.client_address), CsvField(e.request_id), e.prev_hash, e.hash);
    }
    Response res =
        Response::Text(http::bhttp::status::ok, std::move(csv), "text/csv; charset=utf-8");
    res.msg.set(http::bhttp::field::content_disposition,
                "attachment; filename=\"segma-audit-events.csv\"");
    res.msg.set("X-Total-Count", std::to_string(list.total));
    return res;
  }
  json::array items;
  items.reserve(list.items.size());
  for (const store::AuditEvent& e : list.items) items.push_back(EventJson(e));
  return ListJson(std::move(items), list.total, o);
}

// GET /v2/audit-events/verify: {ok, checked, first_bad_id, reason, head_hash}. 200 either way:
// a broken chain is the answer, not an error of the call.
Result<Response> VerifyAuditEvents(ApiContext& c) {
  ASSIGN_OR_RETURN(store::AuditVerification v, c.s.store.VerifyAuditChain());
  return ObjectResponse({{"ok", v.ok},
                         {"checked", v.checked},
                         {"first_bad_id", OptJson(v.first_bad_id)},
                         {"reason", v.reason},
                         {"head_hash", v.head_hash}});
}

}  // namespace

bool Audited(const Route& route, http::bhttp::verb method) {
  if (route.audit == Route::Audit::kSkip) return false;
  return method != verb::get && method != verb::head && method != verb::options;
}

store::AuditEvent AuditEventFor(const Route& route, const http::RequestContext& ctx,
                                const auth::Principal& principal, const AuditNote& note, int status,
                                std::string_view response_body) {
  store::AuditEvent e;
  switch (principal.kind) {
    case auth::Principal::Kind::kUser:
      e.actor_kind = "user";
      e.actor_id = principal.user_id;
      e.actor_name = principal.username;
      break;
    case auth::Principal::Kind::kApiKey:
      e.actor_kind = "api_key";
      if (principal.api_key) e.actor_id = principal.api_key->id;
      e.actor_name = principal.username;  // the key's creator
      break;
    case auth::Principal::Kind::kWorker:
      e.actor_kind = "worker";
      e.actor_id = principal.worker_id;
      break;
    case auth::Principal::Kind::kAnonymous:
      e.actor_kind = note.actor_kind.empty() ? "anonymous" : note.actor_kind;
      e.actor_id = note.actor_id;
      e.actor_name = Clip(note.actor_name);
      break;
  }
  const auto method = http::bhttp::to_string(route.method);
  e.method = std::string(method.data(), method.size());
  e.route = route.pattern;
  e.resource = AuditResourceName(route.resource);
  e.resource_id = Clip(LastCapture(route.pattern, ctx));
  if (e.resource_id.empty()) e.resource_id = Clip(note.resource_id);
  if (e.resource_id.empty() && status >= 200 && status < 300 && !response_body.empty()) {
    // A created row: its id from the answer (only the top-level "id" is read).
    Result<json::value> body = ParseJson(response_body);
    if (body.ok() && body->is_object()) {
      const json::value* id = body->as_object().if_contains("id");
      if (id != nullptr && id->is_int64()) e.resource_id = std::to_string(id->as_int64());
    }
  }
  e.project_id = note.project_id;
  if (!e.project_id && route.resource == Resource::kProjects && !e.resource_id.empty()) {
    int64_t id = 0;  // a project created: it is its own project
    auto [ptr, ec] =
        std::from_chars(e.resource_id.data(), e.resource_id.data() + e.resource_id.size(), id);
    if (ec == std::errc() && ptr == e.resource_id.data() + e.resource_id.size()) e.project_id = id;
  }
  if (!e.project_id && principal.api_key) e.project_id = principal.api_key->project_id;
  e.status = status;
  e.client_address = Clip(ctx.remote_address);
  e.request_id = Clip(ctx.request_id);
  return e;
}

std::vector<Route> AuditRoutes() {
  return {
      {verb::get, "/v2/audit-events", Access::kGlobal, Resource::kAuditEvents, Action::kRead,
       ListAuditEvents, ""},
      {verb::get, "/v2/audit-events/verify", Access::kGlobal, Resource::kAuditEvents, Action::kRead,
       VerifyAuditEvents, ""},
  };
}

}  // namespace segma::api
