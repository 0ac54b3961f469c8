#include "api/api.h"

#include <charconv>
#include <set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include "api/server_metrics.h"
#include "common/crypto.h"
#include "common/logging.h"
#include "http/server.h"
#include "http/sse.h"

namespace segma::api {

namespace asio = boost::asio;
using http::bhttp::status;

std::string WorkerProxyToken(const std::string& key, const std::string& token_hash) {
  return HmacSha256(key, "worker-proxy:" + token_hash);
}

Status ApiContext::AuthorizeProject(int64_t project_id, std::optional<int64_t> owner_user_id) {
  audit.project_id = project_id;
  Status s = auth::Authorize(principal, action, resource, project_id, owner_user_id);
  if (s.ok()) authorized_ = true;
  return s;
}

Status ApiContext::Authorize(auth::Action a, auth::Resource r, std::optional<int64_t> project_id) {
  if (project_id) audit.project_id = project_id;
  Status s = auth::Authorize(principal, a, r, project_id);
  if (s.ok() && a == action && r == resource) authorized_ = true;
  return s;
}

JsonReader ApiContext::Body(json::object& storage) const {
  return JsonReader::FromBody(http.req.body(), storage);
}

Result<json::object> ApiContext::BodyObject() const {
  Result<json::value> v = ParseJson(http.req.body());
  if (!v.ok() || !v->is_object()) return InvalidArgumentError("body must be a JSON object");
  return std::move(v->as_object());
}

Result<int64_t> SelfWorker(const ApiContext& c) {
  if (!c.principal.worker_id) return PermissionDeniedError("this route needs a worker token");
  return *c.principal.worker_id;
}

Result<bool> ScopeToReadableProjects(ApiContext& c, store::ListOptions& o) {
  if (o.project_id) {
    RETURN_IF_ERROR(c.AuthorizeProject(*o.project_id));
    return true;
  }
  RETURN_IF_ERROR(c.Authorize(auth::Action::kRead, c.resource, std::nullopt));
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

Result<std::optional<int64_t>> QueryInt(const http::RequestContext& ctx, const std::string& key) {
  std::optional<std::string> v = ctx.Query(key);
  if (!v) return std::optional<int64_t>();
  int64_t out = 0;
  auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc() || ptr != v->data() + v->size()) {
    return InvalidArgumentError("query parameter " + key + " must be an integer");
  }
  return std::optional<int64_t>(out);
}

Result<store::ListOptions> ListOptionsFromQuery(const http::RequestContext& ctx) {
  store::ListOptions o;
  ASSIGN_OR_RETURN(std::optional<int64_t> page, QueryInt(ctx, "page"));
  ASSIGN_OR_RETURN(std::optional<int64_t> per_page, QueryInt(ctx, "per_page"));
  if (page) {
    if (*page < 1 || *page > 1'000'000) return InvalidArgumentError("page must be >= 1");
    o.page = static_cast<int>(*page);
  }
  if (per_page) {
    if (*per_page < 1) return InvalidArgumentError("per_page must be >= 1");
    o.per_page = static_cast<int>(std::min<int64_t>(*per_page, store::ListOptions::kMaxPerPage));
  }
  o.sort = ctx.Query("sort").value_or("");
  o.q = ctx.Query("q").value_or("");
  if (o.q.size() > 256) return InvalidArgumentError("q must be at most 256 characters");
  return o;
}

http::Response ListJson(json::array items, int64_t total, const store::ListOptions& options) {
  json::object body;
  body["items"] = std::move(items);
  body["pagination"] = {{"page", options.page}, {"per_page", options.per_page}, {"total", total}};
  return http::Response::Json(status::ok, body);
}

http::Response PageOfListJson(json::array all, const store::ListOptions& options) {
  const size_t first =
      static_cast<size_t>(options.page - 1) * static_cast<size_t>(options.per_page);
  json::array page;
  for (size_t i = first; i < all.size() && i < first + static_cast<size_t>(options.per_page); ++i) {
    page.push_back(std::move(all[i]));
  }
  return ListJson(std::move(page), static_cast<int64_t>(all.size()), options);
}

http::Response ObjectResponse(const json::object& o, status st) {
  return http::Response::Json(st, o);
}

Result<http::Response> NoContentResponse(const Status& s) {
  if (!s.ok()) return s;
  return http::Response::NoContent();
}

namespace {

// Query parameters that are paging/search controls, not field filters on watch events.
bool IsControlParam(const std::string& key) {
  return key == "watch" || key == "page" || key == "per_page" || key == "sort" || key == "q";
}

bool FieldMatches(const json::object& data, const std::string& key, const std::string& want) {
  if (key == "distributed_worker_id") {
    // A model instance's subordinate workers (GET /v2/worker/instances?distributed_worker_id=).
    auto servers = data.find("distributed_servers");
    if (servers == data.end() || !servers->value().is_array()) return false;
    return std::any_of(servers->value().as_array().begin(), servers->value().as_array().end(),
                       [&](const json::value& d) {
                         return d.is_object() && FieldMatches(d.as_object(), "worker_id", want);
                       });
  }
  auto it = data.find(key);
  if (it == data.end()) return false;
  const json::value& v = it->value();
  if (v.is_string()) return v.as_string() == want;
  if (v.is_int64()) return std::to_string(v.as_int64()) == want;
  if (v.is_uint64()) return std::to_string(v.as_uint64()) == want;
  if (v.is_bool()) return (v.as_bool() ? "true" : "false") == want;
  return false;
}

json::object EventJson(const Event& e) {
  return {{"type", EventTypeName(e.type)}, {"id", e.id}, {"data", e.data}};
}

// A watch: the current list as CREATED events, then live changes, as server-sent events, until
// the client goes away or the server stops. Subscribing before listing means no change is missed
// (one may be seen twice, which UPDATED semantics tolerate).
http::Response Watch(const Route& route, Services& services, http::RequestContext& ctx,
                     const auth::Principal& principal, json::array initial) {
  auto sub = services.bus.Subscribe(route.watch_resource);
  std::map<std::string, std::string> filters;
  for (const auto& [k, v] : ctx.query) {
    if (!IsControlParam(k)) filters[k] = v;
  }
  return http::Response::Stream(
      "text/event-stream",
      [sub, filters, principal, resource = route.resource, initial = std::move(initial),
       metrics = services.metrics](http::ResponseStream& out) -> asio::awaitable<void> {
        // Counted while the stream runs, whichever way it ends.
        struct Open {
          ServerMetrics* m;
          explicit Open(ServerMetrics* metrics) : m(metrics) {
            if (m != nullptr) m->WatchOpened();
          }
          ~Open() {
            if (m != nullptr) m->WatchClosed();
          }
          Open(const Open&) = delete;
          Open& operator=(const Open&) = delete;
        } open(metrics);
        auto executor = co_await asio::this_coro::executor;
        auto wake = std::make_shared<asio::steady_timer>(executor);
        sub->SetNotifier([weak = std::weak_ptr<asio::steady_timer>(wake), executor] {
          asio::post(executor, [weak] {
            if (auto timer = weak.lock()) timer->cancel();
          });
        });
        for (const json::value& item : initial) {
          json::object e{{"type", "CREATED"}, {"data", item}};
          if (item.is_object() && item.as_object().contains("id"))
            e["id"] = item.as_object().at("id");
          if (!co_await out.Write(http::FormatSse(json::serialize(e)))) co_return;
        }
        if (!co_await out.Write(": watching\n\n")) co_return;
        auto last_write = std::chrono::steady_clock::now();
        while (!out.stopping()) {
          bool wrote = false;
          while (auto e = sub->TryPop()) {
            if (!std::all_of(filters.begin(), filters.end(), [&](const auto& f) {
                  return FieldMatches(e->data, f.first, f.second);
                })) {
              continue;
            }
            if (e->project_id &&
                !auth::Authorize(principal, auth::Action::kRead, resource, *e->project_id).ok()) {
              continue;
            }
            if (!co_await out.Write(http::FormatSse(json::serialize(EventJson(*e))))) co_return;
            wrote = true;
          }
          if (sub->overflowed()) co_return;  // too slow: the client must list and watch again
          const auto now = std::chrono::steady_clock::now();
          if (wrote) {
            last_write = now;
          } else if (now - last_write > std::chrono::seconds(15)) {
            // A comment keeps proxies from timing out and tells us when the client is gone.
            if (!co_await out.Write(": keep-alive\n\n")) co_return;
            last_write = now;
          }
          wake->expires_after(std::chrono::seconds(1));
          co_await wake->async_wait(asio::as_tuple(asio::use_awaitable));
        }
      });
}

// One call of `route`: credentials → principal, access check, handler, watch stream, errors in the
// API's format. Leaves the resolved principal in `principal` and the handler's notes in `note`,
// for the audit record.
http::Response Serve(const Route& route, Services& services, http::RequestContext& ctx, bool watch,
                     auth::Principal& principal, AuditNote& note) {
  std::optional<std::string> token = ctx.BearerToken();
  if (route.access != Access::kPublic) {
    if (!token) {
      return http::Response::Error(UnauthenticatedError("authentication required"));
    }
    if (Status csrf = ctx.CheckCsrf(); !csrf.ok()) {
      return http::Response::Error(csrf);
    }
    Result<auth::Principal> p = services.identity.Authenticate(*token);
    if (!p.ok()) return http::Response::Error(p.status());
    principal = std::move(p).value();
    if (principal.api_key && !auth::ApiKeyAllowsAddress(*principal.api_key, ctx.remote_address)) {
      return http::Response::Error(PermissionDeniedError(
          fmt::format("this API key may not be used from {}", ctx.remote_address)));
    }
    if (principal.require_password_change &&
        route.before_password_change != Route::BeforePasswordChange::kAllowed) {
      return http::Response::Json(
          status::forbidden,
          json::object{{"error", json::object{{"code", kPasswordChangeRequired},
                                              {"message",
                                               "you must change your password first (POST "
                                               "/v2/auth/change-password, segma ctl "
                                               "change-password)"}}}});
    }
  }
  if (route.access == Access::kGlobal) {
    Status s = auth::Authorize(principal, route.action, route.resource, std::nullopt);
    if (!s.ok()) return http::Response::Error(s);
  }
  ApiContext api(ctx, principal, route.resource, route.action, services);
  Result<http::Response> r = route.handler(api);
  note = std::move(api.audit);
  if (watch && r.ok() && r->msg.result_int() == 200) {
    // The list the plain GET returns becomes the stream's first events.
    Result<json::value> listed = ParseJson(r->msg.body());
    json::array items;
    if (listed.ok() && listed->is_object() && listed->as_object().contains("items")) {
      items = listed->as_object().at("items").as_array();
    }
    return Watch(route, services, ctx, principal, std::move(items));
  }
  if (!r.ok()) return http::Response::Error(r.status());
  if (route.access == Access::kProject && !api.authorized() && r->msg.result_int() < 300) {
    // A project route that never asked auth::Authorize is a bug: refuse rather than leak.
    Logger("api")->error("[req={}] route {} skipped its project check", ctx.request_id,
                         route.pattern);
    return http::Response::Error(InternalError("authorization was not checked"));
  }
  return std::move(r).value();
}

}  // namespace

void Install(http::Router& router, Services& services, const std::vector<Route>& routes) {
  for (const Route& route : routes) {
    router.Add(route.method, route.pattern,
               [&services, route](http::RequestContext& ctx) -> asio::awaitable<http::Response> {
                 const bool watch = !route.watch_resource.empty() && ctx.Query("watch") == "true";
                 co_return co_await http::RunBlocking(
                     services.blocking, [&services, &route, &ctx, watch]() -> http::Response {
                       auth::Principal principal;
                       AuditNote note;
                       http::Response res = Serve(route, services, ctx, watch, principal, note);
                       if (Audited(route, ctx.req.method())) {
                         // Recorded before the response leaves: one short transaction on the
                         // store's connection (AuditStoreTest.AppendIsCheap). A failure is logged,
                         // not answered.
                         Result<store::AuditEvent> recorded = services.store.AppendAuditEvent(
                             AuditEventFor(route, ctx, principal, note, res.msg.result_int(),
                                           res.msg.body()));
                         if (!recorded.ok()) {
                           Logger("api")->error("[req={}] audit record of {} {} failed: {}",
                                                ctx.request_id, ctx.req.method_string(),
                                                route.pattern, recorded.status().ToString());
                         }
                       }
                       return res;
                     });
               });
  }
}

void InstallProbes(http::Router& router, Services& services, metrics::Registry& registry) {
  router.Add(http::bhttp::verb::get, "/healthz",
             [](http::RequestContext&) -> asio::awaitable<http::Response> {
               co_return http::Response::Json(status::ok, json::object{{"status", "ok"}});
             });
  router.Add(http::bhttp::verb::get, "/readyz",
             [&services](http::RequestContext&) -> asio::awaitable<http::Response> {
               Status s = co_await http::RunBlocking(services.blocking,
                                                     [&services] { return services.store.Ping(); });
               if (!s.ok())
                 co_return http::Response::Error(UnavailableError("store: " + s.message()));
               co_return http::Response::Json(status::ok, json::object{{"status", "ready"}});
             });
  router.Add(http::bhttp::verb::get, "/metrics",
             [&registry](http::RequestContext&) -> asio::awaitable<http::Response> {
               co_return http::Response::Text(status::ok, registry.Serialize(),
                                              "text/plain; version=0.0.4; charset=utf-8");
             });
}

}  // namespace segma::api
