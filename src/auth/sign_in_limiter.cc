#include "auth/sign_in_limiter.h"

#include <algorithm>

namespace segma::auth {

namespace {

// Usernames are at most 64 characters (ValidateName); longer attempts share one key per prefix.
constexpr size_t kMaxKeyLength = 256;

std::string_view Key(std::string_view s) { return s.substr(0, kMaxKeyLength); }

}  // namespace

SignInLimiter::SignInLimiter(const Clock& clock, SignInLimits limits)
    : clock_(clock), limits_(limits) {}

std::optional<Duration> SignInLimiter::Remaining(const Map& map, std::string_view key,
                                                 Timestamp now) const {
  auto it = map.find(std::string(Key(key)));
  if (it == map.end() || !it->second.locked_until || *it->second.locked_until <= now) {
    return std::nullopt;
  }
  return *it->second.locked_until - now;
}

std::optional<Duration> SignInLimiter::Locked(std::string_view username, std::string_view address,
                                              bool admin) const {
  const Timestamp now = clock_.Now();
  std::lock_guard lock(mu_);
  std::optional<Duration> by_name = admin ? std::nullopt : Remaining(by_user_, username, now);
  std::optional<Duration> by_address =
      address.empty() ? std::nullopt : Remaining(by_address_, address, now);
  if (by_name && by_address) return std::max(*by_name, *by_address);
  return by_name ? by_name : by_address;
}

void SignInLimiter::Fail(Map& map, std::string_view key, int limit, Timestamp now) {
  auto it = map.find(std::string(Key(key)));
  if (it == map.end()) {
    if (map.size() >= limits_.max_tracked) Sweep(map, now);
    if (map.size() >= limits_.max_tracked) return;
    it = map.emplace(std::string(Key(key)), Entry{}).first;
  }
  Entry& e = it->second;
  if (e.locked_until && *e.locked_until > now) return;  // refused, not tried: nothing to count
  if (e.lockouts > 0 && now - e.last_failure >= limits_.forget_after) e.lockouts = 0;
  e.last_failure = now;
  while (!e.failures.empty() && now - e.failures.front() >= limits_.window) e.failures.pop_front();
  e.failures.push_back(now);
  if (static_cast<int>(e.failures.size()) < limit) return;
  // The n-th lockout lasts first_lockout * 2^(n-1), capped.
  Duration lockout = limits_.first_lockout;
  for (int i = 0; i < e.lockouts && lockout < limits_.max_lockout; ++i) lockout *= 2;
  lockout = std::min(lockout, limits_.max_lockout);
  ++e.lockouts;
  e.locked_until = now + lockout;
  e.failures.clear();
}

void SignInLimiter::RecordFailure(std::string_view username, std::string_view address, bool admin) {
  const Timestamp now = clock_.Now();
  std::lock_guard lock(mu_);
  if (!admin) Fail(by_user_, username, limits_.failures_per_user, now);
  if (!address.empty()) Fail(by_address_, address, limits_.failures_per_address, now);
}

void SignInLimiter::RecordSuccess(std::string_view username) {
  std::lock_guard lock(mu_);
  by_user_.erase(std::string(Key(username)));
}

void SignInLimiter::Sweep(Map& map, Timestamp now) {
  std::erase_if(map, [&](const auto& kv) {
    const Entry& e = kv.second;
    const bool locked = e.locked_until && *e.locked_until > now;
    return !locked && now - e.last_failure >= limits_.forget_after;
  });
}

}  // namespace segma::auth
