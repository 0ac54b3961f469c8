#include "common/clock.h"

#include <time.h>

#include <cstdio>

#include <fmt/format.h>

namespace segma {

SystemClock& SystemClock::Get() {
  static SystemClock clock;
  return clock;
}

int64_t ToUnixMillis(Timestamp t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

Timestamp FromUnixMillis(int64_t ms) {
  return Timestamp(std::chrono::duration_cast<Duration>(std::chrono::milliseconds(ms)));
}

std::string FormatRfc3339(Timestamp t) {
  const int64_t ms = ToUnixMillis(t);
  int64_t secs = ms / 1000;
  int64_t frac = ms % 1000;
  if (frac < 0) {
    frac += 1000;
    secs -= 1;
  }
  const time_t tt = static_cast<time_t>(secs);
  struct tm tm {};
  gmtime_r(&tt, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

namespace {

bool ParseDigits(std::string_view s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  return true;
}

}  // namespace

Result<Timestamp> ParseRfc3339(std::string_view s) {
  auto bad = [&] {
    return InvalidArgumentError(
        fmt::format("invalid timestamp '{}': want RFC 3339 like 2027-01-01T00:00:00Z", s));
  };
  int year, mon, day, hour = 0, min = 0, sec = 0, millis = 0;
  if (!ParseDigits(s, 0, 4, year) || s.size() < 10 || s[4] != '-' || !ParseDigits(s, 5, 2, mon) ||
      s[7] != '-' || !ParseDigits(s, 8, 2, day)) {
    return bad();
  }
  size_t pos = 10;
  int offset_minutes = 0;
  if (pos < s.size()) {
    if ((s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ') || !ParseDigits(s, pos + 1, 2, hour) ||
        s.size() < pos + 9 || s[pos + 3] != ':' || !ParseDigits(s, pos + 4, 2, min) ||
        s[pos + 6] != ':' || !ParseDigits(s, pos + 7, 2, sec)) {
      return bad();
    }
    pos += 9;
    if (pos < s.size() && s[pos] == '.') {
      ++pos;
      int digits = 0;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
        if (digits < 3) millis = millis * 10 + (s[pos] - '0');
        ++digits;
        ++pos;
      }
      if (digits == 0) return bad();
      for (int i = digits; i < 3; ++i) millis *= 10;
    }
    if (pos >= s.size()) return bad();
    if (s[pos] == 'Z' || s[pos] == 'z') {
      ++pos;
    } else if (s[pos] == '+' || s[pos] == '-') {
      int oh, om;
      if (!ParseDigits(s, pos + 1, 2, oh) || s.size() < pos + 6 || s[pos + 3] != ':' ||
          !ParseDigits(s, pos + 4, 2, om)) {
        return bad();
      }
      offset_minutes = (oh * 60 + om) * (s[pos] == '-' ? -1 : 1);
      pos += 6;
    } else {
      return bad();
    }
    if (pos != s.size()) return bad();
  }
  if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60) return bad();
  struct tm tm {};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  const time_t secs = timegm(&tm);
  const int64_t ms = (static_cast<int64_t>(secs) - offset_minutes * 60LL) * 1000 + millis;
  return FromUnixMillis(ms);
}

}  // namespace segma
