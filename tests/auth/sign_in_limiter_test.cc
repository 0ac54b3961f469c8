// The sign-in lockout's timing, on a FakeClock: per name and per address, the window, doubling
// lockouts with a cap, forgetting, the admin exemption, and its memory bound.

#include "auth/sign_in_limiter.h"

#include <string>

#include <gtest/gtest.h>

namespace segma::auth {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

class SignInLimiterTest : public ::testing::Test {
 protected:
  void FailTimes(int n, const std::string& user, const std::string& address, bool admin = false) {
    for (int i = 0; i < n; ++i) limiter_.RecordFailure(user, address, admin);
  }

  FakeClock clock_;
  SignInLimiter limiter_{clock_};
};

TEST_F(SignInLimiterTest, FiveFailuresLockTheNameForFifteenMinutes) {
  FailTimes(4, "alice", "192.0.2.1");
  EXPECT_FALSE(limiter_.Locked("alice", "192.0.2.1", false));
  limiter_.RecordFailure("alice", "192.0.2.2", false);  // from elsewhere: the name counts
  ASSERT_TRUE(limiter_.Locked("alice", "192.0.2.9", false));
  EXPECT_EQ(*limiter_.Locked("alice", "192.0.2.9", false), minutes(15));
  EXPECT_FALSE(limiter_.Locked("bob", "192.0.2.9", false));  // other names are not
  clock_.Advance(minutes(14));
  EXPECT_EQ(*limiter_.Locked("alice", "", false), minutes(1));
  clock_.Advance(minutes(1));
  EXPECT_FALSE(limiter_.Locked("alice", "", false));
}

TEST_F(SignInLimiterTest, FailuresOutsideTheWindowDoNotCount) {
  FailTimes(4, "alice", "");
  clock_.Advance(minutes(15));
  limiter_.RecordFailure("alice", "", false);
  FailTimes(3, "alice", "");
  EXPECT_FALSE(limiter_.Locked("alice", "", false));
  limiter_.RecordFailure("alice", "", false);
  EXPECT_TRUE(limiter_.Locked("alice", "", false));
}

TEST_F(SignInLimiterTest, RepeatedLockoutsDoubleUpToFourHours) {
  const Duration expected[] = {minutes(15), minutes(30), hours(1), hours(2), hours(4), hours(4)};
  for (Duration d : expected) {
    FailTimes(5, "alice", "");
    ASSERT_TRUE(limiter_.Locked("alice", "", false));
    EXPECT_EQ(*limiter_.Locked("alice", "", false), d);
    clock_.Advance(d);
    EXPECT_FALSE(limiter_.Locked("alice", "", false));
  }
}

TEST_F(SignInLimiterTest, AttemptsDuringALockoutAreNotCounted) {
  FailTimes(5, "alice", "");
  clock_.Advance(minutes(5));
  FailTimes(50, "alice", "");  // refused without a password check: not failures
  EXPECT_EQ(*limiter_.Locked("alice", "", false), minutes(10));
  clock_.Advance(minutes(10));
  EXPECT_FALSE(limiter_.Locked("alice", "", false));
}

TEST_F(SignInLimiterTest, ADayWithoutFailuresForgetsEarlierLockouts) {
  FailTimes(5, "alice", "");
  clock_.Advance(minutes(15));
  FailTimes(5, "alice", "");
  EXPECT_EQ(*limiter_.Locked("alice", "", false), minutes(30));
  clock_.Advance(hours(25));
  FailTimes(5, "alice", "");
  EXPECT_EQ(*limiter_.Locked("alice", "", false), minutes(15));
}

TEST_F(SignInLimiterTest, SuccessForgetsTheNameButNotTheAddress) {
  FailTimes(4, "alice", "192.0.2.1");
  FailTimes(15, "mallory", "192.0.2.1");
  limiter_.RecordSuccess("alice");
  limiter_.RecordSuccess("mallory");
  FailTimes(4, "alice", "192.0.2.7");
  EXPECT_FALSE(limiter_.Locked("alice", "192.0.2.7", false));
  // 19 failures from .1 so far: the 20th locks the address for every name.
  limiter_.RecordFailure("carol", "192.0.2.1", false);
  ASSERT_TRUE(limiter_.Locked("dave", "192.0.2.1", false));
  EXPECT_EQ(*limiter_.Locked("dave", "192.0.2.1", false), minutes(15));
  EXPECT_FALSE(limiter_.Locked("dave", "192.0.2.2", false));
}

TEST_F(SignInLimiterTest, AnAdminIsNeverLockedByNameOnlyByAddress) {
  // Someone elsewhere guesses the admin's password from many addresses.
  for (int i = 0; i < 19; ++i) FailTimes(5, "admin", "198.51.100." + std::to_string(i), true);
  EXPECT_FALSE(limiter_.Locked("admin", "192.0.2.1", true));  // the admin at their desk
  // The guessing addresses did not lock (5 each), but one that keeps trying does.
  FailTimes(20, "admin", "198.51.100.200", true);
  EXPECT_TRUE(limiter_.Locked("admin", "198.51.100.200", true));
  EXPECT_FALSE(limiter_.Locked("admin", "192.0.2.1", true));
}

TEST_F(SignInLimiterTest, LongerOfNameAndAddressLockouts) {
  SignInLimits l;
  l.failures_per_user = 2;
  l.failures_per_address = 2;
  SignInLimiter limiter(clock_, l);
  limiter.RecordFailure("alice", "192.0.2.1", false);
  limiter.RecordFailure("alice", "192.0.2.1", false);
  clock_.Advance(minutes(15));
  limiter.RecordFailure("alice", "192.0.2.1", false);
  limiter.RecordFailure("alice", "192.0.2.2", false);  // the name's second lockout: 30 min
  limiter.RecordFailure("bob", "192.0.2.1", false);    // the address's second: 30 min
  clock_.Advance(minutes(20));
  limiter.RecordSuccess("bob");
  limiter.RecordFailure("bob", "192.0.2.3", false);
  limiter.RecordFailure("bob", "192.0.2.3", false);  // 192.0.2.3's first: 15 min
  EXPECT_EQ(*limiter.Locked("alice", "192.0.2.3", false), minutes(15));
  EXPECT_EQ(*limiter.Locked("bob", "192.0.2.3", false), minutes(15));
  EXPECT_EQ(*limiter.Locked("carol", "192.0.2.1", false), minutes(10));
}

TEST_F(SignInLimiterTest, MadeUpNamesCannotGrowItWithoutBound) {
  SignInLimits l;
  l.max_tracked = 100;
  SignInLimiter limiter(clock_, l);
  for (int i = 0; i < 1000; ++i) limiter.RecordFailure("user" + std::to_string(i), "", false);
  // The first names are tracked, the rest are not (yet): a day later they make room.
  for (int i = 0; i < 4; ++i) limiter.RecordFailure("user5", "", false);
  EXPECT_TRUE(limiter.Locked("user5", "", false));
  for (int i = 0; i < 5; ++i) limiter.RecordFailure("user500", "", false);
  EXPECT_FALSE(limiter.Locked("user500", "", false));
  clock_.Advance(hours(24));
  for (int i = 0; i < 5; ++i) limiter.RecordFailure("user500", "", false);
  EXPECT_TRUE(limiter.Locked("user500", "", false));
}

}  // namespace
}  // namespace segma::auth
