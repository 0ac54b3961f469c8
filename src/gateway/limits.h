#pragma once

// Per-key and per-project admission limits, exact on one instance:
//  - requests per minute and tokens per minute, over fixed windows aligned to the minute (UTC);
//  - concurrent requests;
//  - daily and monthly token budgets (UTC day, UTC calendar month).
// Tokens are reserved at admission (the request's max_tokens, or a default) and reconciled with
// the real usage when the request ends (Limiter::Finish), so concurrent requests cannot overshoot
// a token limit by more than their own reservations' error.
//
// Check and charge happen under the limited entities' mutexes (key, then project), so no two
// admissions can both see the last free unit: zero over-admission under any concurrency.
//
// Where limits come from is a seam (LimitsSource): the limits stored with keys and projects
// (KeyTableLimitsSource in key_table.h, fed by store events or a replica's state; ADR 0013), or
// configuration (StaticLimitsSource, for tests). Daily and monthly budgets survive a restart by
// seeding the counters from the recorded usage (SeedKeyBudget / SeedProjectBudget).

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <variant>

#include "common/clock.h"
#include "common/status.h"
#include "types/identity.h"

namespace segma::gateway {

// requests_per_minute, tokens_per_minute, max_concurrent, tokens_per_day, tokens_per_month;
// nullopt: unlimited. The same value the store keeps with keys and projects.
using LimitConfig = types::Limits;

// Where limits come from. Called on every admission: implementations answer from memory.
// Thread-safe.
class LimitsSource {
 public:
  virtual ~LimitsSource() = default;
  virtual LimitConfig ForKey(int64_t key_id) const = 0;
  virtual LimitConfig ForProject(int64_t project_id) const = 0;
};

// Limits from configuration: defaults plus per-id overrides (an override replaces the default
// config of that id as a whole). Thread-safe; Set* may be called while serving.
class StaticLimitsSource final : public LimitsSource {
 public:
  StaticLimitsSource() = default;
  StaticLimitsSource(LimitConfig key_default, LimitConfig project_default)
      : key_default_(key_default), project_default_(project_default) {}

  void SetKeyLimits(int64_t key_id, LimitConfig config);
  void SetProjectLimits(int64_t project_id, LimitConfig config);

  // LimitsSource
  LimitConfig ForKey(int64_t key_id) const override;
  LimitConfig ForProject(int64_t project_id) const override;

 private:
  const LimitConfig key_default_;
  const LimitConfig project_default_;
  mutable std::shared_mutex mu_;
  std::map<int64_t, LimitConfig> keys_;      // guarded by mu_
  std::map<int64_t, LimitConfig> projects_;  // guarded by mu_
};

// What an admission holds; give it back with Limiter::Finish (exactly once; the destructor of
// Admission does not release, so that the caller decides the real token count).
struct Admission {
  int64_t key_id = 0;
  int64_t project_id = 0;
  int64_t reserved_tokens = 0;
  int64_t minute = 0;  // the windows the reservation was charged to
  int64_t day = 0;
  int64_t month = 0;
  bool active = false;
};

struct Rejection {
  Status status;  // kResourceExhausted with a readable reason
  std::chrono::seconds retry_after{1};
};

class Limiter {
 public:
  // `source` and `clock` must outlive the limiter.
  Limiter(const LimitsSource& source, const Clock& clock) : source_(source), clock_(clock) {}

  // Admits a request of key `key_id` in project `project_id` reserving `reserve_tokens` tokens,
  // or says why not and when to retry. Thread-safe.
  std::variant<Admission, Rejection> Admit(int64_t key_id, int64_t project_id,
                                           int64_t reserve_tokens);

  // Ends an admitted request that used `actual_tokens` (prompt + completion; what the engine
  // reported, or the reservation if unknown). Releases its concurrency slot and replaces the
  // reservation by the actual count in the windows it was charged to (if they are still current).
  // Idempotent (a second call does nothing). Thread-safe.
  void Finish(Admission& admission, int64_t actual_tokens);

  // Adds tokens already spent today and this month (UTC) — the usage recorded before a restart —
  // to the daily and monthly counters of a key or a project, so that a restart does not reset a
  // budget. Call before the gateway admits requests (it adds; it does not deduplicate against
  // what this limiter has already counted). Thread-safe.
  void SeedKeyBudget(int64_t key_id, int64_t tokens_today, int64_t tokens_this_month);
  void SeedProjectBudget(int64_t project_id, int64_t tokens_today, int64_t tokens_this_month);

  // Current usage, for tests and /metrics. Thread-safe.
  struct Usage {
    int64_t requests_this_minute = 0;
    int64_t tokens_this_minute = 0;
    int64_t concurrent = 0;
    int64_t tokens_today = 0;
    int64_t tokens_this_month = 0;
  };
  Usage KeyUsage(int64_t key_id) const;
  Usage ProjectUsage(int64_t project_id) const;

 private:
  struct Counters {
    std::mutex mu;
    int64_t minute = -1;
    int64_t requests = 0;  // in `minute`
    int64_t tokens = 0;    // in `minute`
    int64_t concurrent = 0;
    int64_t day = -1;
    int64_t day_tokens = 0;
    int64_t month = -1;
    int64_t month_tokens = 0;
  };
  struct Windows {
    int64_t minute, day, month;
    Timestamp next_minute, next_day, next_month;
  };

  Counters& CountersFor(std::unordered_map<int64_t, std::unique_ptr<Counters>>& map, int64_t id);
  static void Roll(Counters& c, const Windows& w);
  static std::optional<Rejection> Check(const Counters& c, const LimitConfig& l, int64_t reserve,
                                        const Windows& w, Timestamp now, std::string_view who);
  static void Charge(Counters& c, int64_t reserve);
  static void Settle(Counters& c, const Admission& a, int64_t actual);
  void Seed(std::unordered_map<int64_t, std::unique_ptr<Counters>>& map, int64_t id,
            int64_t tokens_today, int64_t tokens_this_month);
  Windows WindowsAt(Timestamp now) const;
  Usage UsageOf(const std::unordered_map<int64_t, std::unique_ptr<Counters>>& map,
                int64_t id) const;

  const LimitsSource& source_;
  const Clock& clock_;
  mutable std::shared_mutex map_mu_;
  std::unordered_map<int64_t, std::unique_ptr<Counters>> keys_;      // guarded by map_mu_
  std::unordered_map<int64_t, std::unique_ptr<Counters>> projects_;  // guarded by map_mu_
};

}  // namespace segma::gateway
