#include "store/sqlite/sqlite_prices.h"

#include <cmath>
#include <set>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "store/sqlite/sqlite_util.h"

namespace segma::store {

namespace {

constexpr size_t kMaxPriceNameLength = 256;

Status Exec(sqlite3* db, const char* sql) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return SqliteError(db, sql);
  return OkStatus();
}

Status WriteAll(sqlite3* db, const PriceTable& t, Timestamp now) {
  RETURN_IF_ERROR(Exec(db, "DELETE FROM prices"));
  ASSIGN_OR_RETURN(SqliteStmt ins, SqlitePrepare(db,
                                                 "INSERT INTO prices (unit, name, price) VALUES "
                                                 "(?, ?, ?)",
                                                 "prepare price statement"));
  for (const Price& p : t.items) {
    sqlite3_stmt* s = ins.get();
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    SqliteBindText(s, 1, PriceUnitName(p.unit));
    SqliteBindText(s, 2, p.name);
    sqlite3_bind_double(s, 3, p.price);
    if (sqlite3_step(s) != SQLITE_DONE) return SqliteError(db, "insert price");
  }
  ASSIGN_OR_RETURN(SqliteStmt set, SqlitePrepare(db,
                                                 "UPDATE price_settings SET currency = ?, "
                                                 "updated_at = ? WHERE id = 1",
                                                 "prepare price statement"));
  SqliteBindText(set.get(), 1, t.currency);
  sqlite3_bind_int64(set.get(), 2, ToUnixMillis(now));
  if (sqlite3_step(set.get()) != SQLITE_DONE) return SqliteError(db, "update price settings");
  return OkStatus();
}

}  // namespace

std::string_view PriceUnitName(PriceUnit u) {
  switch (u) {
    case PriceUnit::kPrompt1MTokens:
      return "prompt_1m_tokens";
    case PriceUnit::kCompletion1MTokens:
      return "completion_1m_tokens";
    case PriceUnit::kGpuHour:
      return "gpu_hour";
  }
  return "gpu_hour";
}

std::optional<PriceUnit> ParsePriceUnit(std::string_view s) {
  for (PriceUnit u :
       {PriceUnit::kPrompt1MTokens, PriceUnit::kCompletion1MTokens, PriceUnit::kGpuHour}) {
    if (s == PriceUnitName(u)) return u;
  }
  return std::nullopt;
}

Status ValidatePriceTable(const PriceTable& t) {
  if (t.currency.size() != 3 ||
      t.currency.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ") != std::string::npos) {
    return InvalidArgumentError(
        fmt::format("currency must be three capital letters (like USD), not '{}'", t.currency));
  }
  std::set<std::pair<PriceUnit, std::string>> seen;
  for (size_t i = 0; i < t.items.size(); ++i) {
    const Price& p = t.items[i];
    if (p.name.empty() || p.name.size() > kMaxPriceNameLength) {
      return InvalidArgumentError(
          fmt::format("items[{}].name must be 1 to {} characters", i, kMaxPriceNameLength));
    }
    if (!std::isfinite(p.price) || p.price < 0) {
      return InvalidArgumentError(fmt::format("items[{}].price must be a non-negative number", i));
    }
    if (!seen.insert({p.unit, p.name}).second) {
      return InvalidArgumentError(
          fmt::format("items[{}]: {} of '{}' is given twice", i, PriceUnitName(p.unit), p.name));
    }
  }
  return OkStatus();
}

Result<PriceTable> SqliteGetPrices(sqlite3* db) {
  PriceTable t;
  {
    ASSIGN_OR_RETURN(
        SqliteStmt st,
        SqlitePrepare(db, "SELECT currency, updated_at FROM price_settings WHERE id = 1",
                      "prepare price statement"));
    const int rc = sqlite3_step(st.get());
    if (rc == SQLITE_ROW) {
      t.currency = SqliteColumnText(st.get(), 0);
      t.updated_at = FromUnixMillis(sqlite3_column_int64(st.get(), 1));
    } else if (rc != SQLITE_DONE) {
      return SqliteError(db, "read price settings");
    }
  }
  ASSIGN_OR_RETURN(SqliteStmt st,
                   SqlitePrepare(db, "SELECT unit, name, price FROM prices ORDER BY unit, name",
                                 "prepare price statement"));
  for (int rc; (rc = sqlite3_step(st.get())) != SQLITE_DONE;) {
    if (rc != SQLITE_ROW) return SqliteError(db, "read prices");
    const std::string unit = SqliteColumnText(st.get(), 0);
    std::optional<PriceUnit> u = ParsePriceUnit(unit);
    if (!u) return InternalError(fmt::format("stored price unit '{}' is unknown", unit));
    t.items.push_back({*u, SqliteColumnText(st.get(), 1), sqlite3_column_double(st.get(), 2)});
  }
  return t;
}

Result<PriceTable> SqliteReplacePrices(sqlite3* db, const PriceTable& table, Timestamp now) {
  RETURN_IF_ERROR(ValidatePriceTable(table));
  RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE"));
  Status s = WriteAll(db, table, now);
  if (s.ok()) s = Exec(db, "COMMIT");
  if (!s.ok()) {
    if (!sqlite3_get_autocommit(db)) (void)Exec(db, "ROLLBACK");
    return s;
  }
  return SqliteGetPrices(db);
}

}  // namespace segma::store
