#include "store/sqlite/sqlite_util.h"

#include <algorithm>

#include <fmt/format.h>

namespace segma::store {

Status SqliteError(sqlite3* db, std::string_view what) {
  const int rc = sqlite3_extended_errcode(db);
  std::string msg = fmt::format("{}: {}", what, sqlite3_errmsg(db));
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_READONLY:
      return UnavailableError(std::move(msg));
    default:
      return InternalError(std::move(msg));
  }
}

Result<SqliteStmt> SqlitePrepare(sqlite3* db, std::string_view sql, std::string_view what) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr) !=
      SQLITE_OK) {
    return SqliteError(db, what);
  }
  return SqliteStmt(stmt, &sqlite3_finalize);
}

void SqliteBindText(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text64(s, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
}

std::string SqliteColumnText(sqlite3_stmt* s, int i) {
  const unsigned char* p = sqlite3_column_text(s, i);
  return p ? std::string(reinterpret_cast<const char*>(p),
                         static_cast<size_t>(sqlite3_column_bytes(s, i)))
           : std::string();
}

Result<SqlitePage> SqlitePageOf(const ListOptions& options,
                                std::initializer_list<std::string_view> sortable) {
  if (options.page < 1) return InvalidArgumentError("page must be at least 1");
  if (options.per_page < 1) return InvalidArgumentError("per_page must be at least 1");
  SqlitePage page;
  page.sort = options.sort;
  page.descending = !page.sort.empty() && page.sort.front() == '-';
  if (page.descending) page.sort.erase(0, 1);
  if (page.sort.empty()) page.sort = "id";
  if (std::find(sortable.begin(), sortable.end(), page.sort) == sortable.end()) {
    return InvalidArgumentError(fmt::format("sort must be one of {}", fmt::join(sortable, ", ")));
  }
  page.limit = std::min<int64_t>(options.per_page, ListOptions::kMaxPerPage);
  page.offset = (static_cast<int64_t>(options.page) - 1) * page.limit;
  return page;
}

std::string SqlitePage::OrderAndLimit(std::string_view alias) const {
  return fmt::format(" ORDER BY {0}.{1} {2}, {0}.id LIMIT {3} OFFSET {4}", alias, sort,
                     descending ? "DESC" : "ASC", limit, offset);
}

Result<int64_t> SqliteCount(sqlite3* db, sqlite3_stmt* s, std::string_view what) {
  if (sqlite3_step(s) != SQLITE_ROW) return SqliteError(db, what);
  return sqlite3_column_int64(s, 0);
}

std::string SqliteLikePattern(std::string_view q) {
  std::string p = "%";
  for (char c : q) {
    if (c == '%' || c == '_' || c == '\\') p += '\\';
    p += static_cast<char>((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
  }
  p += '%';
  return p;
}

}  // namespace segma::store
