#include "store/sqlite/sqlite_usage.h"

#include <algorithm>
#include <chrono>
#include <compare>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include <fmt/format.h>

#include "store/sqlite/sqlite_gpu_ledger.h"
#include "store/sqlite/sqlite_prices.h"
#include "store/sqlite/sqlite_util.h"

namespace segma::store {

namespace {

using StmtPtr = SqliteStmt;

Status Error(sqlite3* db, std::string_view what) { return SqliteError(db, what); }

Result<StmtPtr> Prepare(sqlite3* db, std::string_view sql) {
  return SqlitePrepare(db, sql, "prepare usage statement");
}

Status Exec(sqlite3* db, const char* sql) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return Error(db, sql);
  return OkStatus();
}

std::string DayOf(Timestamp t) {
  const std::chrono::year_month_day ymd{std::chrono::floor<std::chrono::days>(t)};
  return fmt::format("{:04}-{:02}-{:02}", static_cast<int>(ymd.year()),
                     static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
}

// One row of usage_daily.
struct DailyKey {
  std::string day;
  int64_t project_id, user_id, api_key_id;
  std::string model;
  auto operator<=>(const DailyKey&) const = default;
};
struct DailySums {
  int64_t requests = 0, errors = 0, prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
};

Status InsertAll(sqlite3* db, const std::vector<UsageRecord>& batch) {
  ASSIGN_OR_RETURN(StmtPtr ins,
                   Prepare(db,
                           "INSERT OR IGNORE INTO usage_records (request_id, created_at, "
                           "api_key_id, user_id, project_id, model, deployment_id, instance_id, "
                           "prompt_tokens, completion_tokens, cached_tokens, ttft_ms, "
                           "duration_ms, status, finish) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"));
  ASSIGN_OR_RETURN(
      StmtPtr roll,
      Prepare(db,
              "INSERT INTO usage_daily (day, project_id, user_id, api_key_id, model, requests, "
              "errors, prompt_tokens, completion_tokens, cached_tokens) VALUES "
              "(?,?,?,?,?,?,?,?,?,?) ON CONFLICT (day, project_id, user_id, api_key_id, model) "
              "DO UPDATE SET requests = requests + excluded.requests, "
              "errors = errors + excluded.errors, "
              "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
              "completion_tokens = completion_tokens + excluded.completion_tokens, "
              "cached_tokens = cached_tokens + excluded.cached_tokens"));
  std::map<DailyKey, DailySums> daily;
  for (const UsageRecord& r : batch) {
    sqlite3_stmt* s = ins.get();
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    SqliteBindText(s, 1, r.request_id);
    sqlite3_bind_int64(s, 2, ToUnixMillis(r.time));
    sqlite3_bind_int64(s, 3, r.api_key_id);
    sqlite3_bind_int64(s, 4, r.user_id);
    sqlite3_bind_int64(s, 5, r.project_id);
    SqliteBindText(s, 6, r.model);
    sqlite3_bind_int64(s, 7, r.deployment_id);
    sqlite3_bind_int64(s, 8, r.instance_id);
    sqlite3_bind_int64(s, 9, r.prompt_tokens);
    sqlite3_bind_int64(s, 10, r.completion_tokens);
    sqlite3_bind_int64(s, 11, r.cached_tokens);
    if (r.ttft_ms) {
      sqlite3_bind_double(s, 12, *r.ttft_ms);
    } else {
      sqlite3_bind_null(s, 12);
    }
    sqlite3_bind_double(s, 13, r.duration_ms);
    sqlite3_bind_int64(s, 14, r.status);
    SqliteBindText(s, 15, UsageFinishName(r.finish));
    if (sqlite3_step(s) != SQLITE_DONE) return Error(db, "insert usage record");
    if (sqlite3_changes(db) == 0) continue;  // already recorded: not rolled up twice
    // The batch's roll-ups are summed here and written once per (day, project, user, key, model):
    // a batch of one key's traffic then costs one upsert instead of one per record.
    DailySums& sums =
        daily[DailyKey{DayOf(r.time), r.project_id, r.user_id, r.api_key_id, r.model}];
    ++sums.requests;
    sums.errors += r.status >= 400 ? 1 : 0;
    sums.prompt_tokens += r.prompt_tokens;
    sums.completion_tokens += r.completion_tokens;
    sums.cached_tokens += r.cached_tokens;
  }
  for (const auto& [key, sums] : daily) {
    sqlite3_stmt* u = roll.get();
    sqlite3_reset(u);
    sqlite3_clear_bindings(u);
    SqliteBindText(u, 1, key.day);
    sqlite3_bind_int64(u, 2, key.project_id);
    sqlite3_bind_int64(u, 3, key.user_id);
    sqlite3_bind_int64(u, 4, key.api_key_id);
    SqliteBindText(u, 5, key.model);
    sqlite3_bind_int64(u, 6, sums.requests);
    sqlite3_bind_int64(u, 7, sums.errors);
    sqlite3_bind_int64(u, 8, sums.prompt_tokens);
    sqlite3_bind_int64(u, 9, sums.completion_tokens);
    sqlite3_bind_int64(u, 10, sums.cached_tokens);
    if (sqlite3_step(u) != SQLITE_DONE) return Error(db, "update daily usage");
  }
  return OkStatus();
}

// The SELECT summing usage_records per (bucket ms, key, model) over [?1, ?2) and the projects
// bound from ?3 on.
std::string RecordsSql(const UsageQuery& query) {
  std::string_view column;
  switch (query.group_by) {
    case UsageGroupBy::kProject:
      column = "CAST(r.project_id AS TEXT)";
      break;
    case UsageGroupBy::kUser:
      column = "CAST(r.user_id AS TEXT)";
      break;
    case UsageGroupBy::kKey:
      column = "CAST(r.api_key_id AS TEXT)";
      break;
    case UsageGroupBy::kModel:
    case UsageGroupBy::kRoute:
      column = "r.model";
      break;
    case UsageGroupBy::kFinish:
      column = "r.finish";
      break;
    case UsageGroupBy::kDeployment:
      column = "CAST(r.deployment_id AS TEXT)";
      break;
    case UsageGroupBy::kGpuType:
      // What the serving instance held when the request arrived: its latest interval by then
      // (the main worker's, opened first). Requests that reached no instance: "".
      column =
          "COALESCE((SELECT g.gpu_type FROM gpu_intervals g WHERE g.instance_id = r.instance_id "
          "AND r.instance_id != 0 AND g.started_at <= r.created_at ORDER BY g.started_at DESC, "
          "g.id LIMIT 1), '')";
      break;
  }
  std::string_view bucket;
  switch (query.bucket) {
    case UsageBucket::kNone:
      bucket = "0";
      break;
    case UsageBucket::kHour:
      bucket = "(r.created_at / 3600000) * 3600000";
      break;
    case UsageBucket::kDay:
      bucket = "(r.created_at / 86400000) * 86400000";
      break;
    case UsageBucket::kMonth:
      bucket =
          "CAST(strftime('%s', r.created_at / 1000, 'unixepoch', 'start of month') AS INTEGER) "
          "* 1000";
      break;
  }
  std::string sql = fmt::format(
      "SELECT {} AS b, {} AS k, r.model, COUNT(*), SUM(r.prompt_tokens), "
      "SUM(r.completion_tokens), SUM(r.status >= 400), SUM(r.cached_tokens), "
      "SUM(r.finish != 'complete') FROM usage_records r WHERE r.created_at >= ? AND "
      "r.created_at < ?",
      bucket, column);
  if (query.project_ids) {
    sql += " AND r.project_id IN (";
    for (size_t i = 0; i < query.project_ids->size(); ++i) sql += i == 0 ? "?" : ",?";
    sql += ")";
  }
  return sql + " GROUP BY b, k, r.model";
}

}  // namespace

std::string_view UsageGroupByName(UsageGroupBy g) {
  switch (g) {
    case UsageGroupBy::kProject:
      return "project";
    case UsageGroupBy::kUser:
      return "user";
    case UsageGroupBy::kKey:
      return "key";
    case UsageGroupBy::kModel:
      return "model";
    case UsageGroupBy::kFinish:
      return "finish";
    case UsageGroupBy::kRoute:
      return "route";
    case UsageGroupBy::kDeployment:
      return "deployment";
    case UsageGroupBy::kGpuType:
      return "gpu_type";
  }
  return "project";
}

std::optional<UsageGroupBy> ParseUsageGroupBy(std::string_view s) {
  for (UsageGroupBy g : {UsageGroupBy::kProject, UsageGroupBy::kUser, UsageGroupBy::kKey,
                         UsageGroupBy::kModel, UsageGroupBy::kFinish, UsageGroupBy::kRoute,
                         UsageGroupBy::kDeployment, UsageGroupBy::kGpuType}) {
    if (s == UsageGroupByName(g)) return g;
  }
  return std::nullopt;
}

std::string_view UsageBucketName(UsageBucket b) {
  switch (b) {
    case UsageBucket::kNone:
      return "";
    case UsageBucket::kHour:
      return "hour";
    case UsageBucket::kDay:
      return "day";
    case UsageBucket::kMonth:
      return "month";
  }
  return "";
}

std::optional<UsageBucket> ParseUsageBucket(std::string_view s) {
  for (UsageBucket b : {UsageBucket::kHour, UsageBucket::kDay, UsageBucket::kMonth}) {
    if (s == UsageBucketName(b)) return b;
  }
  return std::nullopt;
}

Timestamp UsageBucketStart(UsageBucket b, Timestamp t) {
  using std::chrono::floor;
  switch (b) {
    case UsageBucket::kNone:
      return t;
    case UsageBucket::kHour:
      return floor<std::chrono::hours>(t);
    case UsageBucket::kDay:
      return floor<std::chrono::days>(t);
    case UsageBucket::kMonth: {
      const std::chrono::year_month_day ymd{floor<std::chrono::days>(t)};
      return std::chrono::sys_days{ymd.year() / ymd.month() / 1};
    }
  }
  return t;
}

Timestamp UsageBucketNext(UsageBucket b, Timestamp bucket_start) {
  switch (b) {
    case UsageBucket::kNone:
      return Timestamp::max();
    case UsageBucket::kHour:
      return bucket_start + std::chrono::hours(1);
    case UsageBucket::kDay:
      return bucket_start + std::chrono::days(1);
    case UsageBucket::kMonth: {
      const std::chrono::year_month_day ymd{std::chrono::floor<std::chrono::days>(bucket_start)};
      return std::chrono::sys_days{(ymd.year() / ymd.month() + std::chrono::months(1)) / 1};
    }
  }
  return Timestamp::max();
}

std::string_view UsageFinishName(UsageFinish f) {
  switch (f) {
    case UsageFinish::kComplete:
      return "complete";
    case UsageFinish::kClientDisconnected:
      return "client_disconnected";
    case UsageFinish::kUpstreamFailed:
      return "upstream_failed";
    case UsageFinish::kGatewayCrashed:
      return "gateway_crashed";
  }
  return "complete";
}

std::optional<UsageFinish> ParseUsageFinish(std::string_view s) {
  for (UsageFinish f : {UsageFinish::kComplete, UsageFinish::kClientDisconnected,
                        UsageFinish::kUpstreamFailed, UsageFinish::kGatewayCrashed}) {
    if (s == UsageFinishName(f)) return f;
  }
  return std::nullopt;
}

Status SqliteInsertUsageRecords(sqlite3* db, const std::vector<UsageRecord>& batch) {
  if (batch.empty()) return OkStatus();
  RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE"));
  Status s = InsertAll(db, batch);
  if (s.ok()) s = Exec(db, "COMMIT");
  if (!s.ok() && !sqlite3_get_autocommit(db)) (void)Exec(db, "ROLLBACK");
  return s;
}

Result<std::vector<UsageSummary>> SqliteQueryUsage(sqlite3* db, const UsageQuery& query,
                                                   Timestamp now) {
  if (query.from > query.to) return InvalidArgumentError("from must not be after to");
  if (query.project_ids && query.project_ids->empty()) return std::vector<UsageSummary>{};
  ASSIGN_OR_RETURN(PriceTable prices, SqliteGetPrices(db));
  std::map<std::pair<PriceUnit, std::string>, double> price;
  for (const Price& p : prices.items) price[{p.unit, p.name}] = p.price;
  const auto price_of = [&](PriceUnit u, const std::string& name) {
    auto it = price.find({u, name});
    return it == price.end() ? 0.0 : it->second;
  };

  const bool numeric =
      query.group_by == UsageGroupBy::kProject || query.group_by == UsageGroupBy::kUser ||
      query.group_by == UsageGroupBy::kKey || query.group_by == UsageGroupBy::kDeployment;
  // Rows by (bucket, key), keys of id groupings ordered as numbers, the empty key last.
  std::map<std::tuple<int64_t, bool, int64_t, std::string>, UsageSummary> rows;
  const auto row = [&](int64_t bucket_ms, const std::string& key) -> UsageSummary& {
    const int64_t n = numeric && !key.empty() ? std::stoll(key) : 0;
    UsageSummary& r = rows[{bucket_ms, key.empty(), n, key}];
    r.key = key;
    if (query.bucket != UsageBucket::kNone) r.bucket = FromUnixMillis(bucket_ms);
    return r;
  };

  // The usage records, summed in SQL per (bucket, key, model): the model prices the tokens.
  ASSIGN_OR_RETURN(StmtPtr st, Prepare(db, RecordsSql(query)));
  sqlite3_stmt* s = st.get();
  sqlite3_bind_int64(s, 1, ToUnixMillis(query.from));
  sqlite3_bind_int64(s, 2, ToUnixMillis(query.to));
  if (query.project_ids) {
    int i = 3;
    for (int64_t id : *query.project_ids) sqlite3_bind_int64(s, i++, id);
  }
  for (;;) {
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return Error(db, "query usage");
    UsageSummary& u = row(sqlite3_column_int64(s, 0), SqliteColumnText(s, 1));
    const std::string model = SqliteColumnText(s, 2);
    const int64_t prompt = sqlite3_column_int64(s, 4);
    const int64_t completion = sqlite3_column_int64(s, 5);
    u.requests += sqlite3_column_int64(s, 3);
    u.errors += sqlite3_column_int64(s, 6);
    u.prompt_tokens += prompt;
    u.completion_tokens += completion;
    u.cached_tokens += sqlite3_column_int64(s, 7);
    u.cut_short += sqlite3_column_int64(s, 8);
    u.cost +=
        static_cast<double>(prompt) / 1e6 * price_of(PriceUnit::kPrompt1MTokens, model) +
        static_cast<double>(completion) / 1e6 * price_of(PriceUnit::kCompletion1MTokens, model);
  }

  // The ledger's intervals, clipped to [from, to) (open ones end now) and split at buckets.
  ASSIGN_OR_RETURN(std::vector<GpuInterval> intervals,
                   SqliteListGpuIntervals(db, query.from, query.to, query.project_ids));
  for (const GpuInterval& g : intervals) {
    const Timestamp start = std::max(g.started_at, query.from);
    const Timestamp end = std::min(g.ended_at.value_or(std::max(now, g.started_at)), query.to);
    std::string key;
    switch (query.group_by) {
      case UsageGroupBy::kProject:
        key = std::to_string(g.project_id);
        break;
      case UsageGroupBy::kDeployment:
        key = std::to_string(g.deployment_id);
        break;
      case UsageGroupBy::kGpuType:
        key = g.gpu_type;
        break;
      default:
        break;  // not attributable: the row with an empty key
    }
    const double gpu_hour_price = price_of(PriceUnit::kGpuHour, g.gpu_type);
    for (Timestamp piece = start; piece < end;) {
      const Timestamp bucket = query.bucket == UsageBucket::kNone
                                   ? FromUnixMillis(0)
                                   : UsageBucketStart(query.bucket, piece);
      const Timestamp piece_end = query.bucket == UsageBucket::kNone
                                      ? end
                                      : std::min(end, UsageBucketNext(query.bucket, bucket));
      const int64_t ms = ToUnixMillis(piece_end) - ToUnixMillis(piece);
      UsageSummary& u = row(ToUnixMillis(bucket), key);
      u.gpu_ms += g.gpu_count * ms;
      const double hours = static_cast<double>(ms) / 3.6e6;
      u.vram_gib_hours += static_cast<double>(g.vram_bytes) / (1024.0 * 1024 * 1024) * hours;
      u.cost += static_cast<double>(g.gpu_count) * hours * gpu_hour_price;
      piece = piece_end;
    }
  }
  std::vector<UsageSummary> out;
  out.reserve(rows.size());
  for (auto& [k, r] : rows) out.push_back(std::move(r));
  return out;
}

}  // namespace segma::store
