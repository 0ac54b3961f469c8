#pragma once

// Failed sign-ins counted per user name and per client address, with lockouts that double on
// repetition (docs/adr/0036-sign-in-lockout-and-trusted-proxies.md). In memory: the server is one
// process, and a restart forgetting the counts costs an attacker a restart of segma.

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/clock.h"

namespace segma::auth {

struct SignInLimits {
  // Failures within `window` that start a lockout.
  int failures_per_user = 5;
  int failures_per_address = 20;
  Duration window = std::chrono::minutes(15);
  // The first lockout; each further one (of the same name or address, before `forget_after`
  // passes without a failure) doubles, up to `max_lockout`.
  Duration first_lockout = std::chrono::minutes(15);
  Duration max_lockout = std::chrono::hours(4);
  Duration forget_after = std::chrono::hours(24);
  // Names and addresses tracked at most (each); beyond, stale entries are dropped and then new
  // ones are not tracked until room frees up. Bounds memory under a flood of made-up names.
  size_t max_tracked = 100'000;
};

// Thread-safe. `clock` must outlive it.
class SignInLimiter {
 public:
  explicit SignInLimiter(const Clock& clock, SignInLimits limits = {});

  // How much longer a sign-in as `username` from `address` is refused: the longer of the name's
  // and the address's lockouts; nullopt when neither is locked. `admin`: the name is never
  // locked (only the address), so that nobody can lock an administrator out from elsewhere. An
  // empty address is not tracked.
  std::optional<Duration> Locked(std::string_view username, std::string_view address,
                                 bool admin) const;
  // Counts a failed sign-in (wrong password or unknown user) against the name (unless `admin`)
  // and the address; starts a lockout when either reaches its limit within the window.
  void RecordFailure(std::string_view username, std::string_view address, bool admin);
  // A successful sign-in forgets the name's failures and lockouts. The address's stay: one valid
  // account must not reset the count of guesses against others from the same place.
  void RecordSuccess(std::string_view username);

  const SignInLimits& limits() const { return limits_; }

 private:
  struct Entry {
    std::deque<Timestamp> failures;  // within the window, oldest first
    std::optional<Timestamp> locked_until;
    int lockouts = 0;  // since the last quiet period of forget_after
    Timestamp last_failure;
  };
  using Map = std::unordered_map<std::string, Entry>;

  std::optional<Duration> Remaining(const Map& map, std::string_view key, Timestamp now) const;
  void Fail(Map& map, std::string_view key, int limit, Timestamp now);
  // Drops entries with no lockout running and no failure within forget_after.
  void Sweep(Map& map, Timestamp now);

  const Clock& clock_;
  const SignInLimits limits_;
  mutable std::mutex mu_;
  Map by_user_;     // GUARDED_BY(mu_)
  Map by_address_;  // GUARDED_BY(mu_)
};

}  // namespace segma::auth
