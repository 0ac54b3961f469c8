#include "store/sqlite/sqlite_usage.h"

#include <chrono>
#include <compare>
#include <map>
#include <memory>
#include <string>

#include <fmt/format.h>

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
  }
  return "project";
}

std::optional<UsageGroupBy> ParseUsageGroupBy(std::string_view s) {
  for (UsageGroupBy g : {UsageGroupBy::kProject, UsageGroupBy::kUser, UsageGroupBy::kKey,
                         UsageGroupBy::kModel, UsageGroupBy::kFinish}) {
    if (s == UsageGroupByName(g)) return g;
  }
  return std::nullopt;
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

Result<std::vector<UsageSummary>> SqliteQueryUsage(sqlite3* db, const UsageQuery& query) {
  if (query.from > query.to) return InvalidArgumentError("from must not be after to");
  std::string_view column;
  switch (query.group_by) {
    case UsageGroupBy::kProject:
      column = "CAST(project_id AS TEXT)";
      break;
    case UsageGroupBy::kUser:
      column = "CAST(user_id AS TEXT)";
      break;
    case UsageGroupBy::kKey:
      column = "CAST(api_key_id AS TEXT)";
      break;
    case UsageGroupBy::kModel:
      column = "model";
      break;
    case UsageGroupBy::kFinish:
      column = "finish";
      break;
  }
  std::string sql = fmt::format(
      "SELECT {} AS k, COUNT(*), SUM(status >= 400), SUM(prompt_tokens), "
      "SUM(completion_tokens), SUM(cached_tokens), SUM(finish != 'complete') FROM usage_records "
      "WHERE created_at >= ? AND created_at < ?",
      column);
  if (query.project_ids) {
    if (query.project_ids->empty()) return std::vector<UsageSummary>{};
    sql += " AND project_id IN (";
    for (size_t i = 0; i < query.project_ids->size(); ++i) sql += i == 0 ? "?" : ",?";
    sql += ")";
  }
  sql += " GROUP BY k ORDER BY ";
  const bool textual =
      query.group_by == UsageGroupBy::kModel || query.group_by == UsageGroupBy::kFinish;
  sql += textual ? "k" : "CAST(k AS INTEGER)";
  ASSIGN_OR_RETURN(StmtPtr st, Prepare(db, sql));
  sqlite3_stmt* s = st.get();
  sqlite3_bind_int64(s, 1, ToUnixMillis(query.from));
  sqlite3_bind_int64(s, 2, ToUnixMillis(query.to));
  if (query.project_ids) {
    int i = 3;
    for (int64_t id : *query.project_ids) sqlite3_bind_int64(s, i++, id);
  }
  std::vector<UsageSummary> out;
  for (;;) {
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return Error(db, "query usage");
    UsageSummary u;
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    u.key = text != nullptr ? text : "";
    u.requests = sqlite3_column_int64(s, 1);
    u.errors = sqlite3_column_int64(s, 2);
    u.prompt_tokens = sqlite3_column_int64(s, 3);
    u.completion_tokens = sqlite3_column_int64(s, 4);
    u.cached_tokens = sqlite3_column_int64(s, 5);
    u.cut_short = sqlite3_column_int64(s, 6);
    out.push_back(std::move(u));
  }
  return out;
}

}  // namespace segma::store
