#include "gateway/limits.h"

#include <fmt/format.h>

namespace segma::gateway {

void StaticLimitsSource::SetKeyLimits(int64_t key_id, LimitConfig config) {
  std::unique_lock lock(mu_);
  keys_[key_id] = config;
}

void StaticLimitsSource::SetProjectLimits(int64_t project_id, LimitConfig config) {
  std::unique_lock lock(mu_);
  projects_[project_id] = config;
}

LimitConfig StaticLimitsSource::ForKey(int64_t key_id) const {
  std::shared_lock lock(mu_);
  auto it = keys_.find(key_id);
  return it == keys_.end() ? key_default_ : it->second;
}

LimitConfig StaticLimitsSource::ForProject(int64_t project_id) const {
  std::shared_lock lock(mu_);
  auto it = projects_.find(project_id);
  return it == projects_.end() ? project_default_ : it->second;
}

Limiter::Windows Limiter::WindowsAt(Timestamp now) const {
  using namespace std::chrono;
  Windows w;
  const auto secs = duration_cast<seconds>(now.time_since_epoch()).count();
  w.minute = secs >= 0 ? secs / 60 : (secs - 59) / 60;
  w.next_minute = Timestamp(seconds((w.minute + 1) * 60));
  const auto today = floor<days>(now);
  w.day = today.time_since_epoch().count();
  w.next_day = Timestamp(today + days(1));
  const year_month_day ymd{today};
  w.month = static_cast<int>(ymd.year()) * 12 + static_cast<int64_t>(unsigned(ymd.month())) - 1;
  const year_month next = year_month(ymd.year(), ymd.month()) + months(1);
  w.next_month = Timestamp(sys_days(next / 1));
  return w;
}

Limiter::Counters& Limiter::CountersFor(std::unordered_map<int64_t, std::unique_ptr<Counters>>& map,
                                        int64_t id) {
  {
    std::shared_lock lock(map_mu_);
    auto it = map.find(id);
    if (it != map.end()) return *it->second;
  }
  std::unique_lock lock(map_mu_);
  auto& slot = map[id];
  if (slot == nullptr) slot = std::make_unique<Counters>();
  return *slot;  // entries are never erased, so the reference stays valid
}

void Limiter::Roll(Counters& c, const Windows& w) {
  if (c.minute != w.minute) {
    c.minute = w.minute;
    c.requests = 0;
    c.tokens = 0;
  }
  if (c.day != w.day) {
    c.day = w.day;
    c.day_tokens = 0;
  }
  if (c.month != w.month) {
    c.month = w.month;
    c.month_tokens = 0;
  }
}

namespace {

std::chrono::seconds Until(Timestamp now, Timestamp then) {
  auto s = std::chrono::ceil<std::chrono::seconds>(then - now);
  return s < std::chrono::seconds(1) ? std::chrono::seconds(1) : s;
}

}  // namespace

std::optional<Rejection> Limiter::Check(const Counters& c, const LimitConfig& l, int64_t reserve,
                                        const Windows& w, Timestamp now, std::string_view who) {
  if (l.max_concurrent && c.concurrent + 1 > *l.max_concurrent) {
    return Rejection{ResourceExhaustedError(fmt::format(
                         "{} reached its limit of {} concurrent requests", who, *l.max_concurrent)),
                     std::chrono::seconds(1)};
  }
  if (l.requests_per_minute && c.requests + 1 > *l.requests_per_minute) {
    return Rejection{ResourceExhaustedError(fmt::format("{} reached its limit of {} requests per "
                                                        "minute",
                                                        who, *l.requests_per_minute)),
                     Until(now, w.next_minute)};
  }
  if (l.tokens_per_minute && c.tokens + reserve > *l.tokens_per_minute) {
    return Rejection{
        ResourceExhaustedError(fmt::format("{} reached its limit of {} tokens per minute ({} "
                                           "reserved for this request)",
                                           who, *l.tokens_per_minute, reserve)),
        Until(now, w.next_minute)};
  }
  if (l.tokens_per_day && c.day_tokens + reserve > *l.tokens_per_day) {
    return Rejection{ResourceExhaustedError(fmt::format("{} reached its daily budget of {} tokens",
                                                        who, *l.tokens_per_day)),
                     Until(now, w.next_day)};
  }
  if (l.tokens_per_month && c.month_tokens + reserve > *l.tokens_per_month) {
    return Rejection{ResourceExhaustedError(fmt::format(
                         "{} reached its monthly budget of {} tokens", who, *l.tokens_per_month)),
                     Until(now, w.next_month)};
  }
  return std::nullopt;
}

void Limiter::Charge(Counters& c, int64_t reserve) {
  c.concurrent += 1;
  c.requests += 1;
  c.tokens += reserve;
  c.day_tokens += reserve;
  c.month_tokens += reserve;
}

void Limiter::Settle(Counters& c, const Admission& a, int64_t actual) {
  c.concurrent -= 1;
  const int64_t delta = actual - a.reserved_tokens;
  if (c.minute == a.minute) c.tokens = std::max<int64_t>(0, c.tokens + delta);
  if (c.day == a.day) c.day_tokens = std::max<int64_t>(0, c.day_tokens + delta);
  if (c.month == a.month) c.month_tokens = std::max<int64_t>(0, c.month_tokens + delta);
}

std::variant<Admission, Rejection> Limiter::Admit(int64_t key_id, int64_t project_id,
                                                  int64_t reserve_tokens) {
  const Timestamp now = clock_.Now();
  const Windows w = WindowsAt(now);
  const LimitConfig key_limits = source_.ForKey(key_id);
  const LimitConfig project_limits = source_.ForProject(project_id);
  Counters& kc = CountersFor(keys_, key_id);
  Counters& pc = CountersFor(projects_, project_id);
  // Always key before project: one fixed order, no deadlock.
  std::scoped_lock lock(kc.mu, pc.mu);
  Roll(kc, w);
  Roll(pc, w);
  if (auto r = Check(kc, key_limits, reserve_tokens, w, now, "this API key")) return *r;
  if (auto r = Check(pc, project_limits, reserve_tokens, w, now, "this project")) return *r;
  Charge(kc, reserve_tokens);
  Charge(pc, reserve_tokens);
  return Admission{key_id, project_id, reserve_tokens, w.minute, w.day, w.month, true};
}

void Limiter::Finish(Admission& admission, int64_t actual_tokens) {
  if (!admission.active) return;
  admission.active = false;
  Counters& kc = CountersFor(keys_, admission.key_id);
  Counters& pc = CountersFor(projects_, admission.project_id);
  std::scoped_lock lock(kc.mu, pc.mu);
  Settle(kc, admission, actual_tokens);
  Settle(pc, admission, actual_tokens);
}

void Limiter::Seed(std::unordered_map<int64_t, std::unique_ptr<Counters>>& map, int64_t id,
                   int64_t tokens_today, int64_t tokens_this_month) {
  const Windows w = WindowsAt(clock_.Now());
  Counters& c = CountersFor(map, id);
  std::lock_guard lock(c.mu);
  Roll(c, w);
  c.day_tokens += std::max<int64_t>(0, tokens_today);
  c.month_tokens += std::max<int64_t>(0, tokens_this_month);
}

void Limiter::SeedKeyBudget(int64_t key_id, int64_t tokens_today, int64_t tokens_this_month) {
  Seed(keys_, key_id, tokens_today, tokens_this_month);
}

void Limiter::SeedProjectBudget(int64_t project_id, int64_t tokens_today,
                                int64_t tokens_this_month) {
  Seed(projects_, project_id, tokens_today, tokens_this_month);
}

Limiter::Usage Limiter::UsageOf(const std::unordered_map<int64_t, std::unique_ptr<Counters>>& map,
                                int64_t id) const {
  std::shared_lock lock(map_mu_);
  auto it = map.find(id);
  if (it == map.end()) return {};
  Counters& c = *it->second;
  std::lock_guard counters_lock(c.mu);
  const Windows w = WindowsAt(clock_.Now());
  Usage u;
  u.concurrent = c.concurrent;
  if (c.minute == w.minute) {
    u.requests_this_minute = c.requests;
    u.tokens_this_minute = c.tokens;
  }
  if (c.day == w.day) u.tokens_today = c.day_tokens;
  if (c.month == w.month) u.tokens_this_month = c.month_tokens;
  return u;
}

Limiter::Usage Limiter::KeyUsage(int64_t key_id) const { return UsageOf(keys_, key_id); }
Limiter::Usage Limiter::ProjectUsage(int64_t project_id) const {
  return UsageOf(projects_, project_id);
}

}  // namespace segma::gateway
