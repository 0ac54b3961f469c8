#include "common/clock.h"

#include <gtest/gtest.h>

namespace segma {
namespace {

TEST(ClockTest, FakeClockMovesOnlyWhenTold) {
  FakeClock clock;
  Timestamp t0 = clock.Now();
  EXPECT_EQ(clock.Now(), t0);
  clock.Advance(std::chrono::seconds(90));
  EXPECT_EQ(clock.Now() - t0, std::chrono::seconds(90));
}

TEST(ClockTest, Rfc3339RoundTrip) {
  Timestamp t = FromUnixMillis(1798761600123);  // 2027-01-01T00:00:00.123Z
  EXPECT_EQ(FormatRfc3339(t), "2027-01-01T00:00:00.123Z");
  EXPECT_EQ(*ParseRfc3339("2027-01-01T00:00:00.123Z"), t);
  EXPECT_EQ(ToUnixMillis(*ParseRfc3339("2027-01-01T00:00:00Z")), 1798761600000);
  EXPECT_EQ(ToUnixMillis(*ParseRfc3339("2027-01-01T02:00:00+02:00")), 1798761600000);
  EXPECT_EQ(ToUnixMillis(*ParseRfc3339("2027-01-01")), 1798761600000);
}

TEST(ClockTest, Rfc3339RejectsGarbage) {
  for (const char* bad : {"", "tomorrow", "2027-13-01T00:00:00Z", "2027-01-01T00:00:00",
                          "2027-01-01T00:00:00Zjunk", "2027-01-01T25:00:00Z", "2027-01-01T00:00:00."}) {
    EXPECT_FALSE(ParseRfc3339(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace segma
