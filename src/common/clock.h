#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace segma {

using Timestamp = std::chrono::system_clock::time_point;
using Duration = std::chrono::system_clock::duration;

// The source of time for everything that makes decisions from it (heartbeat grace, expiry,
// backoff). Production uses SystemClock; tests advance a FakeClock instead of sleeping.
// Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual Timestamp Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  Timestamp Now() const override { return std::chrono::system_clock::now(); }
  // A process-wide instance, for wiring in main().
  static SystemClock& Get();
};

// A clock that moves only when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(Timestamp start = Timestamp(std::chrono::seconds(1'800'000'000)))
      : now_ns_(ToNs(start)) {}
  Timestamp Now() const override { return Timestamp(std::chrono::nanoseconds(now_ns_.load())); }
  void Advance(Duration d) { now_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(); }
  void Set(Timestamp t) { now_ns_ = ToNs(t); }

 private:
  static int64_t ToNs(Timestamp t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }
  std::atomic<int64_t> now_ns_;
};

// Milliseconds since the Unix epoch: how the store keeps time.
int64_t ToUnixMillis(Timestamp t);
Timestamp FromUnixMillis(int64_t ms);

// RFC 3339 in UTC with millisecond precision: "2026-11-28T01:02:03.456Z".
std::string FormatRfc3339(Timestamp t);
// Accepts "YYYY-MM-DDTHH:MM:SS[.fff]Z" or with a "+HH:MM" offset, or a date "YYYY-MM-DD".
Result<Timestamp> ParseRfc3339(std::string_view text);

}  // namespace segma
