// GET /v2/usage: request, token, GPU-time and cost totals per project, user, key, route,
// deployment, GPU type or finish over a time range, optionally per hour/day/month (UTC), as JSON
// or CSV (for charge-back). Requests are the gateway usage meter's records; GPU time is the
// store's ledger. GET/PUT /v2/prices: the admin-set price table the cost column uses.

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

// The numeric columns of one usage row, in the order of the CSV header below.
json::object UsageColumns(const store::UsageSummary& r) {
  return {{"requests", r.requests},
          {"errors", r.errors},
          {"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"cached_tokens", r.cached_tokens},
          {"cut_short", r.cut_short},
          {"gpu_hours", r.gpu_hours()},
          {"vram_gib_hours", r.vram_gib_hours},
          {"cost", r.cost}};
}

Result<Response> GetUsage(ApiContext& c) {
  store::UsageQuery q;
  const std::string group_by = c.http.Query("group_by").value_or("project");
  std::optional<store::UsageGroupBy> g = store::ParseUsageGroupBy(group_by);
  if (!g) {
    return InvalidArgumentError(
        "group_by must be one of project, user, key, model, route, deployment, gpu_type, finish");
  }
  q.group_by = *g;
  const std::optional<std::string> bucket = c.http.Query("bucket");
  if (bucket) {
    std::optional<store::UsageBucket> b = store::ParseUsageBucket(*bucket);
    if (!b) return InvalidArgumentError("bucket must be one of hour, day, month");
    q.bucket = *b;
  }
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
  // Hourly rows over years would be a denial of service: at most this many buckets.
  constexpr int64_t kMaxHourBuckets = 24 * 400;
  if (q.bucket == store::UsageBucket::kHour &&
      q.to - q.from > std::chrono::hours(kMaxHourBuckets)) {
    return InvalidArgumentError("bucket=hour covers at most 400 days; use day or month");
  }
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
  ASSIGN_OR_RETURN(store::PriceTable prices, c.s.store.GetPrices());
  if (format == "csv") {
    std::string csv = (bucket ? "bucket," : "") + group_by +
                      ",requests,errors,prompt_tokens,completion_tokens,cached_tokens,cut_short,"
                      "gpu_hours,vram_gib_hours,cost\n";
    for (const store::UsageSummary& r : rows) {
      if (r.bucket) csv += FormatRfc3339(*r.bucket) + ",";
      csv += fmt::format("{},{},{},{},{},{},{},{},{},{}\n", CsvField(r.key), r.requests, r.errors,
                         r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.cut_short,
                         r.gpu_hours(), r.vram_gib_hours, r.cost);
    }
    Response res =
        Response::Text(http::bhttp::status::ok, std::move(csv), "text/csv; charset=utf-8");
    res.msg.set(http::bhttp::field::content_disposition,
                "attachment; filename=\"segma-usage-" + group_by + ".csv\"");
    return res;
  }
  json::array items;
  store::UsageSummary total;
  for (const store::UsageSummary& r : rows) {
    json::object item;
    if (r.bucket) item["bucket"] = FormatRfc3339(*r.bucket);
    item[group_by] = r.key;
    for (auto& [k, v] : UsageColumns(r)) item[k] = v;
    items.push_back(std::move(item));
    total.requests += r.requests;
    total.errors += r.errors;
    total.prompt_tokens += r.prompt_tokens;
    total.completion_tokens += r.completion_tokens;
    total.cached_tokens += r.cached_tokens;
    total.cut_short += r.cut_short;
    total.gpu_ms += r.gpu_ms;
    total.vram_gib_hours += r.vram_gib_hours;
    total.cost += r.cost;
  }
  json::object out{{"group_by", group_by},      {"from", FormatRfc3339(q.from)},
                   {"to", FormatRfc3339(q.to)}, {"currency", prices.currency},
                   {"items", std::move(items)}, {"totals", UsageColumns(total)}};
  if (bucket) out["bucket"] = *bucket;
  return ObjectResponse(std::move(out));
}

json::object PricesJson(const store::PriceTable& t) {
  json::array items;
  for (const store::Price& p : t.items) {
    items.push_back({{"unit", store::PriceUnitName(p.unit)}, {"name", p.name}, {"price", p.price}});
  }
  return {{"currency", t.currency},
          {"items", std::move(items)},
          {"updated_at", FormatRfc3339(t.updated_at)}};
}

Result<Response> GetPrices(ApiContext& c) {
  ASSIGN_OR_RETURN(store::PriceTable t, c.s.store.GetPrices());
  return ObjectResponse(PricesJson(t));
}

// PUT /v2/prices {"currency":"USD","items":[{"unit","name","price"}]}: replaces the whole table.
Result<Response> PutPrices(ApiContext& c) {
  json::object storage;
  JsonReader r = c.Body(storage);
  store::PriceTable t;
  t.currency = r.OptionalString("currency").value_or("USD");
  const json::value* items = r.OptionalValue("items");
  if (items == nullptr) {
    r.Fail("items", "is required");
  } else if (!items->is_array()) {
    r.Fail("items", "must be an array");
  } else {
    const json::array& a = items->as_array();
    for (size_t i = 0; i < a.size() && r.ok(); ++i) {
      const std::string path = fmt::format("items[{}]", i);
      if (!a[i].is_object()) {
        r.Fail(path, "must be an object");
        break;
      }
      JsonReader item(a[i].as_object(), r.Path(path));
      store::Price p;
      const std::string unit = item.String("unit");
      std::optional<store::PriceUnit> u = store::ParsePriceUnit(unit);
      if (item.ok() && !u) {
        item.Fail("unit", "must be one of prompt_1m_tokens, completion_1m_tokens, gpu_hour");
      }
      if (u) p.unit = *u;
      p.name = item.String("name");
      std::optional<double> price = item.OptionalDouble("price");
      if (!price && item.ok()) item.Fail("price", "is required");
      p.price = price.value_or(0);
      Status s = item.Finish();
      if (!s.ok()) {
        r.FailStatus(s);
        break;
      }
      t.items.push_back(std::move(p));
    }
  }
  RETURN_IF_ERROR(r.Finish());
  ASSIGN_OR_RETURN(store::PriceTable stored, c.s.store.ReplacePrices(t));
  return ObjectResponse(PricesJson(stored));
}

}  // namespace

std::vector<Route> UsageRoutes() {
  return {
      {verb::get, "/v2/usage", Access::kProject, Resource::kUsage, Action::kRead, GetUsage, ""},
      {verb::get, "/v2/prices", Access::kGlobal, Resource::kPrices, Action::kRead, GetPrices, ""},
      {verb::put, "/v2/prices", Access::kGlobal, Resource::kPrices, Action::kUpdate, PutPrices,
       ""}};
}

}  // namespace segma::api
