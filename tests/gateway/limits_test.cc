#include "gateway/limits.h"

#include <atomic>
#include <future>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace segma::gateway {
namespace {

using Field = std::optional<int64_t> LimitConfig::*;
LimitConfig Limits(std::initializer_list<std::pair<Field, int64_t>> fields) {
  LimitConfig c;
  for (const auto& [f, v] : fields) c.*f = v;
  return c;
}

// 1,000 threads released together (blocked on one future, not spinning), each trying one
// admission.
template <typename F>
int RaceAdmissions(int n, F admit) {
  std::promise<void> start;
  std::shared_future<void> go = start.get_future().share();
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, go] {
      go.wait();
      if (admit()) admitted++;
    });
  }
  start.set_value();
  for (auto& t : threads) t.join();
  return admitted.load();
}

TEST(LimiterTest, RequestsPerMinuteExactUnderThousandConcurrentAdmissions) {
  FakeClock clock;
  StaticLimitsSource source(Limits({{&LimitConfig::requests_per_minute, 100}}), {});
  Limiter limiter(source, clock);
  std::vector<Admission> held(1000);
  std::atomic<int> slot{0};
  std::mutex mu;
  const int admitted = RaceAdmissions(1000, [&] {
    auto r = limiter.Admit(1, 1, 0);
    if (!std::holds_alternative<Admission>(r)) {
      EXPECT_EQ(std::get<Rejection>(r).status.code(), StatusCode::kResourceExhausted);
      return false;
    }
    std::lock_guard lock(mu);
    held[slot++] = std::get<Admission>(r);
    return true;
  });
  EXPECT_EQ(admitted, 100);
  for (int i = 0; i < admitted; ++i) limiter.Finish(held[i], 0);
  EXPECT_EQ(limiter.KeyUsage(1).requests_this_minute, 100);
  EXPECT_EQ(limiter.KeyUsage(1).concurrent, 0);
}

TEST(LimiterTest, ConcurrencyAndProjectLimitsExactUnderThousandThreads) {
  FakeClock clock;
  StaticLimitsSource source(Limits({{&LimitConfig::max_concurrent, 40}}),
                            Limits({{&LimitConfig::max_concurrent, 25}}));
  Limiter limiter(source, clock);
  // 1,000 threads over 10 keys of one project: the project's 25 is the binding limit.
  std::atomic<int> next{0};
  const int admitted = RaceAdmissions(1000, [&] {
    auto r = limiter.Admit(next++ % 10, 7, 0);
    return std::holds_alternative<Admission>(r);
  });
  EXPECT_EQ(admitted, 25);
  EXPECT_EQ(limiter.ProjectUsage(7).concurrent, 25);
}

TEST(LimiterTest, TokensPerMinuteReservesThenReconciles) {
  FakeClock clock;
  StaticLimitsSource source(Limits({{&LimitConfig::tokens_per_minute, 1000}}), {});
  Limiter limiter(source, clock);
  // 1,000 concurrent reservations of 10 tokens: exactly 100 fit.
  std::vector<Admission> held;
  std::mutex mu;
  const int admitted = RaceAdmissions(1000, [&] {
    auto r = limiter.Admit(1, 1, 10);
    if (!std::holds_alternative<Admission>(r)) return false;
    std::lock_guard lock(mu);
    held.push_back(std::get<Admission>(r));
    return true;
  });
  EXPECT_EQ(admitted, 100);
  // They actually used 4 tokens each: 600 tokens free again.
  for (auto& a : held) limiter.Finish(a, 4);
  EXPECT_EQ(limiter.KeyUsage(1).tokens_this_minute, 400);
  for (auto& a : held) limiter.Finish(a, 4);  // idempotent
  EXPECT_EQ(limiter.KeyUsage(1).tokens_this_minute, 400);
  EXPECT_TRUE(std::holds_alternative<Admission>(limiter.Admit(1, 1, 600)));
  auto rej = limiter.Admit(1, 1, 1);
  ASSERT_TRUE(std::holds_alternative<Rejection>(rej));
  EXPECT_GE(std::get<Rejection>(rej).retry_after.count(), 1);
  EXPECT_LE(std::get<Rejection>(rej).retry_after.count(), 60);
}

TEST(LimiterTest, WindowsRollWithTheClock) {
  FakeClock clock(Timestamp(std::chrono::seconds(1'800'000'020)));  // :20 into a minute
  StaticLimitsSource source(
      Limits({{&LimitConfig::requests_per_minute, 2}, {&LimitConfig::tokens_per_day, 100}}), {});
  Limiter limiter(source, clock);
  auto a1 = std::get<Admission>(limiter.Admit(1, 1, 30));
  auto a2 = std::get<Admission>(limiter.Admit(1, 1, 30));
  auto r = limiter.Admit(1, 1, 30);
  ASSERT_TRUE(std::holds_alternative<Rejection>(r));
  EXPECT_EQ(std::get<Rejection>(r).retry_after, std::chrono::seconds(40));
  limiter.Finish(a1, 30);
  limiter.Finish(a2, 30);
  clock.Advance(std::chrono::seconds(40));
  auto a3 = limiter.Admit(1, 1, 30);
  ASSERT_TRUE(std::holds_alternative<Admission>(a3));
  // The daily budget (100) now holds 90: a request reserving 30 is refused until tomorrow.
  auto day = limiter.Admit(1, 1, 30);
  ASSERT_TRUE(std::holds_alternative<Rejection>(day));
  EXPECT_NE(std::get<Rejection>(day).status.message().find("daily"), std::string::npos);
  EXPECT_GT(std::get<Rejection>(day).retry_after, std::chrono::seconds(60));
  clock.Advance(std::chrono::hours(24));
  EXPECT_TRUE(std::holds_alternative<Admission>(limiter.Admit(1, 1, 30)));
}

TEST(LimiterTest, MonthlyBudgetAndPerKeyOverrides) {
  FakeClock clock;
  StaticLimitsSource source;
  source.SetKeyLimits(5, Limits({{&LimitConfig::tokens_per_month, 50}}));
  Limiter limiter(source, clock);
  auto a = std::get<Admission>(limiter.Admit(5, 1, 50));
  limiter.Finish(a, 50);
  EXPECT_TRUE(std::holds_alternative<Rejection>(limiter.Admit(5, 1, 1)));
  EXPECT_TRUE(std::holds_alternative<Admission>(limiter.Admit(6, 1, 1000)));  // no limits
  clock.Advance(std::chrono::hours(24 * 32));
  EXPECT_TRUE(std::holds_alternative<Admission>(limiter.Admit(5, 1, 50)));
}

// A restart: the usage recorded so far today and this month is seeded into the budgets, so the
// budgets go on where they were instead of starting from zero.
TEST(LimiterTest, SeededBudgetsCountUsageRecordedBeforeARestart) {
  FakeClock clock;  // 2027-01-15 08:00 UTC
  StaticLimitsSource source;
  source.SetKeyLimits(1, Limits({{&LimitConfig::tokens_per_day, 1000}}));
  source.SetProjectLimits(7, Limits({{&LimitConfig::tokens_per_month, 5000}}));
  Limiter limiter(source, clock);
  limiter.SeedKeyBudget(1, 900, 4000);
  limiter.SeedProjectBudget(7, 900, 4940);
  EXPECT_EQ(limiter.KeyUsage(1).tokens_today, 900);
  EXPECT_EQ(limiter.KeyUsage(1).tokens_this_month, 4000);
  EXPECT_EQ(limiter.ProjectUsage(7).tokens_this_month, 4940);
  EXPECT_EQ(limiter.KeyUsage(1).requests_this_minute, 0);  // seeding is not a request

  // The key has 100 tokens left today.
  auto day = limiter.Admit(1, 7, 101);
  ASSERT_TRUE(std::holds_alternative<Rejection>(day));
  EXPECT_NE(std::get<Rejection>(day).status.message().find("this API key reached its daily"),
            std::string::npos);
  // The project has 60 left this month.
  auto month = limiter.Admit(1, 7, 61);
  ASSERT_TRUE(std::holds_alternative<Rejection>(month));
  EXPECT_NE(std::get<Rejection>(month).status.message().find("this project reached its monthly"),
            std::string::npos);
  auto a = limiter.Admit(1, 7, 60);
  ASSERT_TRUE(std::holds_alternative<Admission>(a));
  limiter.Finish(std::get<Admission>(a), 60);
  EXPECT_TRUE(
      std::holds_alternative<Rejection>(limiter.Admit(2, 7, 1)));  // another key, same project
  EXPECT_EQ(limiter.KeyUsage(1).tokens_today, 960);

  // Tomorrow the key's daily budget starts again; the project's month does not.
  clock.Advance(std::chrono::hours(24));
  EXPECT_EQ(limiter.KeyUsage(1).tokens_today, 0);
  EXPECT_TRUE(std::holds_alternative<Admission>(limiter.Admit(1, 8, 1000)));
  EXPECT_TRUE(std::holds_alternative<Rejection>(limiter.Admit(4, 7, 1)));  // the project's month
  // Next month (February) both start again.
  clock.Advance(std::chrono::hours(24 * 17));
  EXPECT_TRUE(std::holds_alternative<Admission>(limiter.Admit(3, 7, 5000)));
}

}  // namespace
}  // namespace segma::gateway
