#include "store/sqlite/sqlite_audit.h"

#include <charconv>
#include <vector>

#include <fmt/format.h>

#include "common/crypto.h"
#include "common/json.h"
#include "store/sqlite/sqlite_util.h"

namespace segma::store {

namespace {

constexpr const char* kCols =
    "e.id, e.at, e.actor_kind, e.actor_id, e.actor_name, e.method, e.route, e.resource, "
    "e.resource_id, e.project_id, e.status, e.client_address, e.request_id, e.prev_hash, e.hash";

std::optional<int64_t> ColOptInt(sqlite3_stmt* s, int i) {
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_int64(s, i);
}

void BindOptInt(sqlite3_stmt* s, int i, const std::optional<int64_t>& v) {
  if (v) {
    sqlite3_bind_int64(s, i, *v);
  } else {
    sqlite3_bind_null(s, i);
  }
}

AuditEvent DecodeRow(sqlite3_stmt* s) {
  AuditEvent e;
  e.id = sqlite3_column_int64(s, 0);
  e.at = FromUnixMillis(sqlite3_column_int64(s, 1));
  e.actor_kind = SqliteColumnText(s, 2);
  e.actor_id = ColOptInt(s, 3);
  e.actor_name = SqliteColumnText(s, 4);
  e.method = SqliteColumnText(s, 5);
  e.route = SqliteColumnText(s, 6);
  e.resource = SqliteColumnText(s, 7);
  e.resource_id = SqliteColumnText(s, 8);
  e.project_id = ColOptInt(s, 9);
  e.status = static_cast<int>(sqlite3_column_int64(s, 10));
  e.client_address = SqliteColumnText(s, 11);
  e.request_id = SqliteColumnText(s, 12);
  e.prev_hash = SqliteColumnText(s, 13);
  e.hash = SqliteColumnText(s, 14);
  return e;
}

// The anchor the first row links to: the hash of the last pruned row, "" before any pruning.
Result<std::pair<int64_t, std::string>> Anchor(sqlite3* db) {
  ASSIGN_OR_RETURN(SqliteStmt s,
                   SqlitePrepare(db, "SELECT last_pruned_id, last_pruned_hash FROM audit_anchor",
                                 "prepare audit anchor"));
  const int rc = sqlite3_step(s.get());
  if (rc == SQLITE_DONE) return std::pair<int64_t, std::string>(0, "");
  if (rc != SQLITE_ROW) return SqliteError(db, "read audit anchor");
  return std::pair<int64_t, std::string>(sqlite3_column_int64(s.get(), 0),
                                         SqliteColumnText(s.get(), 1));
}

// "kind:id" when `actor` has that form with a known kind, for the actor filter.
std::optional<std::pair<std::string, int64_t>> KindAndId(const std::string& actor) {
  const size_t colon = actor.find(':');
  if (colon == std::string::npos) return std::nullopt;
  const std::string kind = actor.substr(0, colon);
  if (kind != "user" && kind != "api_key" && kind != "worker") return std::nullopt;
  int64_t id = 0;
  const char* first = actor.data() + colon + 1;
  const char* last = actor.data() + actor.size();
  auto [ptr, ec] = std::from_chars(first, last, id);
  if (ec != std::errc() || ptr != last || first == last) return std::nullopt;
  return std::pair<std::string, int64_t>(kind, id);
}

}  // namespace

std::string AuditEventHash(const std::string& prev_hash, const AuditEvent& e) {
  auto opt = [](const std::optional<int64_t>& v) { return v ? json::value(*v) : json::value(); };
  const json::array fields{e.id,          ToUnixMillis(e.at), e.actor_kind, opt(e.actor_id),
                           e.actor_name,  e.method,           e.route,      e.resource,
                           e.resource_id, opt(e.project_id),  e.status,     e.client_address,
                           e.request_id};
  return Sha256Hex(prev_hash + "\n" + json::serialize(fields));
}

Result<AuditEvent> SqliteAppendAuditEvent(sqlite3* db, const AuditEvent& event, Timestamp now) {
  AuditEvent e = event;
  // Milliseconds, as stored: the hash covers what a reader gets back.
  e.at = FromUnixMillis(ToUnixMillis(now));
  {
    ASSIGN_OR_RETURN(SqliteStmt last,
                     SqlitePrepare(db, "SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1",
                                   "prepare audit head"));
    const int rc = sqlite3_step(last.get());
    if (rc == SQLITE_ROW) {
      e.prev_hash = SqliteColumnText(last.get(), 1);
    } else if (rc == SQLITE_DONE) {
      ASSIGN_OR_RETURN(auto anchor, Anchor(db));
      e.prev_hash = anchor.second;
    } else {
      return SqliteError(db, "read audit head");
    }
  }
  // The id is part of the hash: take the next one explicitly (AUTOINCREMENT never reuses it).
  {
    ASSIGN_OR_RETURN(
        SqliteStmt next,
        SqlitePrepare(db,
                      "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = "
                      "'audit_events'), 0), COALESCE((SELECT MAX(id) FROM audit_events), 0), "
                      "COALESCE((SELECT last_pruned_id FROM audit_anchor), 0)) + 1",
                      "prepare audit id"));
    if (sqlite3_step(next.get()) != SQLITE_ROW) return SqliteError(db, "next audit id");
    e.id = sqlite3_column_int64(next.get(), 0);
  }
  e.hash = AuditEventHash(e.prev_hash, e);
  ASSIGN_OR_RETURN(
      SqliteStmt s,
      SqlitePrepare(db,
                    "INSERT INTO audit_events (id, at, actor_kind, actor_id, actor_name, method, "
                    "route, resource, resource_id, project_id, status, client_address, "
                    "request_id, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    "prepare audit insert"));
  sqlite3_bind_int64(s.get(), 1, e.id);
  sqlite3_bind_int64(s.get(), 2, ToUnixMillis(e.at));
  SqliteBindText(s.get(), 3, e.actor_kind);
  BindOptInt(s.get(), 4, e.actor_id);
  SqliteBindText(s.get(), 5, e.actor_name);
  SqliteBindText(s.get(), 6, e.method);
  SqliteBindText(s.get(), 7, e.route);
  SqliteBindText(s.get(), 8, e.resource);
  SqliteBindText(s.get(), 9, e.resource_id);
  BindOptInt(s.get(), 10, e.project_id);
  sqlite3_bind_int64(s.get(), 11, e.status);
  SqliteBindText(s.get(), 12, e.client_address);
  SqliteBindText(s.get(), 13, e.request_id);
  SqliteBindText(s.get(), 14, e.prev_hash);
  SqliteBindText(s.get(), 15, e.hash);
  if (sqlite3_step(s.get()) != SQLITE_DONE) return SqliteError(db, "insert audit event");
  return e;
}

Result<ListResult<AuditEvent>> SqliteListAuditEvents(sqlite3* db, const ListOptions& options,
                                                     const AuditFilter& filter) {
  ASSIGN_OR_RETURN(SqlitePage page, SqlitePageOf(options, {"id"}));
  std::string where = " WHERE 1";
  std::optional<std::pair<std::string, int64_t>> kind_id;
  if (filter.actor) {
    kind_id = KindAndId(*filter.actor);
    where += kind_id ? " AND e.actor_kind = ? AND e.actor_id = ?" : " AND e.actor_name = ?";
  }
  if (filter.project_id) where += " AND e.project_id = ?";
  if (filter.resource) where += " AND e.resource = ?";
  if (filter.from) where += " AND e.at >= ?";
  if (filter.to) where += " AND e.at < ?";
  auto bind = [&](sqlite3_stmt* s) {
    int i = 1;
    if (filter.actor) {
      if (kind_id) {
        SqliteBindText(s, i++, kind_id->first);
        sqlite3_bind_int64(s, i++, kind_id->second);
      } else {
        SqliteBindText(s, i++, *filter.actor);
      }
    }
    if (filter.project_id) sqlite3_bind_int64(s, i++, *filter.project_id);
    if (filter.resource) SqliteBindText(s, i++, *filter.resource);
    if (filter.from) sqlite3_bind_int64(s, i++, ToUnixMillis(*filter.from));
    if (filter.to) sqlite3_bind_int64(s, i++, ToUnixMillis(*filter.to));
  };
  ListResult<AuditEvent> out;
  {
    ASSIGN_OR_RETURN(SqliteStmt c, SqlitePrepare(db, "SELECT COUNT(*) FROM audit_events e" + where,
                                                 "prepare audit count"));
    bind(c.get());
    ASSIGN_OR_RETURN(out.total, SqliteCount(db, c.get(), "count audit events"));
  }
  ASSIGN_OR_RETURN(SqliteStmt s, SqlitePrepare(db,
                                               fmt::format("SELECT {} FROM audit_events e{}{}",
                                                           kCols, where, page.OrderAndLimit("e")),
                                               "prepare audit list"));
  bind(s.get());
  for (;;) {
    const int rc = sqlite3_step(s.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqliteError(db, "list audit events");
    out.items.push_back(DecodeRow(s.get()));
  }
  return out;
}

Result<AuditVerification> SqliteVerifyAuditChain(sqlite3* db) {
  ASSIGN_OR_RETURN(auto anchor, Anchor(db));
  ASSIGN_OR_RETURN(
      SqliteStmt s,
      SqlitePrepare(db, fmt::format("SELECT {} FROM audit_events e ORDER BY e.id", kCols),
                    "prepare audit verify"));
  AuditVerification v;
  std::string expected_prev = anchor.second;
  int64_t prev_id = anchor.first;
  auto fail = [&v](int64_t id, std::string reason) {
    v.ok = false;
    v.first_bad_id = id;
    v.reason = std::move(reason);
  };
  for (;;) {
    const int rc = sqlite3_step(s.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqliteError(db, "read audit events");
    const AuditEvent e = DecodeRow(s.get());
    ++v.checked;
    v.head_hash = e.hash;
    if (e.prev_hash != expected_prev) {
      const std::string before = prev_id == anchor.first ? std::string("the chain's anchor")
                                                         : fmt::format("row {}", prev_id);
      fail(e.id,
           e.id != prev_id + 1
               ? fmt::format("row {} does not link to {}: rows {}..{} were deleted", e.id, before,
                             prev_id + 1, e.id - 1)
               : fmt::format("row {} does not link to {}: that row was altered, or this row's "
                             "link was",
                             e.id, before));
      break;
    }
    if (AuditEventHash(e.prev_hash, e) != e.hash) {
      fail(e.id, fmt::format("row {} was altered: its hash does not match its contents", e.id));
      break;
    }
    expected_prev = e.hash;
    prev_id = e.id;
  }
  return v;
}

Result<int64_t> SqlitePruneAuditEvents(sqlite3* db, Timestamp before) {
  int64_t last_id = 0;
  std::string last_hash;
  {
    ASSIGN_OR_RETURN(
        SqliteStmt s,
        SqlitePrepare(db, "SELECT id, hash FROM audit_events WHERE at < ? ORDER BY id DESC LIMIT 1",
                      "prepare audit prune"));
    sqlite3_bind_int64(s.get(), 1, ToUnixMillis(before));
    const int rc = sqlite3_step(s.get());
    if (rc == SQLITE_DONE) return 0;
    if (rc != SQLITE_ROW) return SqliteError(db, "read audit prune point");
    last_id = sqlite3_column_int64(s.get(), 0);
    last_hash = SqliteColumnText(s.get(), 1);
  }
  // Everything up to that row goes, so that the anchor is exactly the link of the next one.
  ASSIGN_OR_RETURN(SqliteStmt del, SqlitePrepare(db, "DELETE FROM audit_events WHERE id <= ?",
                                                 "prepare audit delete"));
  sqlite3_bind_int64(del.get(), 1, last_id);
  if (sqlite3_step(del.get()) != SQLITE_DONE) return SqliteError(db, "prune audit events");
  const int64_t deleted = sqlite3_changes(db);
  ASSIGN_OR_RETURN(SqliteStmt anchor,
                   SqlitePrepare(db,
                                 "INSERT INTO audit_anchor (id, last_pruned_id, last_pruned_hash) "
                                 "VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                                 "last_pruned_id = excluded.last_pruned_id, "
                                 "last_pruned_hash = excluded.last_pruned_hash",
                                 "prepare audit anchor"));
  sqlite3_bind_int64(anchor.get(), 1, last_id);
  SqliteBindText(anchor.get(), 2, last_hash);
  if (sqlite3_step(anchor.get()) != SQLITE_DONE) return SqliteError(db, "write audit anchor");
  return deleted;
}

}  // namespace segma::store
