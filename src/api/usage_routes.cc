// GET /v2/usage: token and request totals per project, user, key or model over a time range, as
// JSON or CSV (for cost allocation). Rows are written by the gateway's usage meter.

#include <fmt/format.h>

#include "api/api.h"

namespace segma::api {

namespace {

using auth::Action;
using auth::Resource;
using http::Response;
using http::bhttp::verb;

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

Result<Response> GetUsage(ApiContext& c) {
  store::UsageQuery q;
  const std::string group_by = c.http.Query("group_by").value_or("project");
  std::optional<store::UsageGroupBy> g = store::ParseUsageGroupBy(group_by);
  if (!g) return InvalidArgumentError("group_by must be one of project, user, key, model, finish");
  q.group_by = *g;
  // Default range: the last 30 days.
  q.to = c.s.clock.Now();
  q.from = q.to - std::chrono::hours(24 * 30);
  if (auto from = c.http.Query("from")) {
    ASSIGN_OR_RETURN(q.from, ParseRfc3339(*from));
  }
  if (auto to = c.http.Query("to")) {
    ASSIGN_OR_RETURN(q.to, ParseRfc3339(*to));
  }
  if (q.to <= q.from) return InvalidArgumentError("to must be after from");
  const std::string format = c.http.Query("format").value_or("json");
  if (format != "json" && format != "csv")
    return InvalidArgumentError("format must be json or csv");

  ASSIGN_OR_RETURN(std::optional<int64_t> project_id, QueryInt(c.http, "project_id"));
  if (project_id) {
    RETURN_IF_ERROR(c.AuthorizeProject(*project_id));
    q.project_ids = std::vector<int64_t>{*project_id};
  } else {
    RETURN_IF_ERROR(c.Authorize(Action::kRead, Resource::kUsage, std::nullopt));
    if (c.principal.api_key) {
      q.project_ids = std::vector<int64_t>{c.principal.api_key->project_id};
    } else if (!c.principal.is_admin) {
      std::vector<int64_t> ids;
      for (const auto& [pid, role] : c.principal.project_roles) ids.push_back(pid);
      q.project_ids = std::move(ids);
    }
  }
  ASSIGN_OR_RETURN(std::vector<store::UsageSummary> rows, c.s.store.QueryUsage(q));
  if (format == "csv") {
    std::string csv =
        group_by + ",requests,errors,prompt_tokens,completion_tokens,cached_tokens,cut_short\n";
    for (const store::UsageSummary& r : rows) {
      csv += fmt::format("{},{},{},{},{},{},{}\n", CsvField(r.key), r.requests, r.errors,
                         r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.cut_short);
    }
    Response res =
        Response::Text(http::bhttp::status::ok, std::move(csv), "text/csv; charset=utf-8");
    res.msg.set(http::bhttp::field::content_disposition,
                "attachment; filename=\"segma-usage-" + group_by + ".csv\"");
    return res;
  }
  json::array items;
  for (const store::UsageSummary& r : rows) {
    items.push_back({{group_by, r.key},
                     {"requests", r.requests},
                     {"errors", r.errors},
                     {"prompt_tokens", r.prompt_tokens},
                     {"completion_tokens", r.completion_tokens},
                     {"cached_tokens", r.cached_tokens},
                     {"cut_short", r.cut_short}});
  }
  return ObjectResponse({{"group_by", group_by},
                         {"from", FormatRfc3339(q.from)},
                         {"to", FormatRfc3339(q.to)},
                         {"items", std::move(items)}});
}

}  // namespace

std::vector<Route> UsageRoutes() {
  return {
      {verb::get, "/v2/usage", Access::kProject, Resource::kUsage, Action::kRead, GetUsage, ""}};
}

}  // namespace segma::api
