// Gateway limits against the real stack (ADR 0013): `segma start` with its embedded worker running
// a `segma engine-sim` engine. Limits are set through the REST API the way a user would; the
// gateway answers 429 in OpenAI's error format with Retry-After; a raised limit admits again
// within a second; a project's tokens per minute bind all its keys; and a daily budget spent
// before a restart of segma is still spent after it.

#include <signal.h>

#include <chrono>
#include <ctime>
#include <thread>

#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

using boost::beast::http::verb;

class GatewayLimitsTest : public ::testing::Test {
 protected:
  void StartServer() {
    ASSERT_EQ(
        StartSegma(dir_.path() + "/data", port_, "limits-admin-pw",
                   dir_.path() + "/server-" + std::to_string(++starts_) + ".log", server_, api_),
        "");
  }

  void SetUp() override {
    port_ = FreePort();
    StartServer();
  }

  // Engines run in their own process groups and outlive segma by design: kill what is left.
  void TearDown() override {
    if (server_) server_->Signal(SIGKILL);
    KillEngines(dir_.path() + "/data/worker/engines");
  }

  int64_t Project(const std::string& name) {
    auto p = api_.Post("/v2/projects", json::object{{"name", name}});
    EXPECT_EQ(p.status, 201u) << p.body;
    return Api::Obj(p).at("id").as_int64();
  }

  int64_t Model(int64_t project) {
    auto m = api_.Post(
        "/v2/models", json::object{{"name", "chat"},
                                   {"project_id", project},
                                   {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                                   {"replicas", 1}});
    EXPECT_EQ(m.status, 201u) << m.body;
    return Api::Obj(m).at("id").as_int64();
  }

  bool Running(int64_t model_id) { return InstanceState(api_, model_id) == "RUNNING"; }

  // Creates an inference key; returns (id, secret).
  std::pair<int64_t, std::string> Key(int64_t project, const std::string& name,
                                      json::object limits = {}) {
    json::object body{{"name", name}, {"project_id", project}, {"scope", "inference"}};
    if (!limits.empty()) body["limits"] = std::move(limits);
    auto k = api_.Post("/v2/api-keys", body);
    EXPECT_EQ(k.status, 201u) << k.body;
    const json::object o = Api::Obj(k);
    return {o.at("id").as_int64(), std::string(o.at("secret").as_string())};
  }

  http::ClientResponse Chat(const std::string& secret, int max_tokens) {
    Api gw{api_.base, secret};
    return gw.Post(
        "/v1/chat/completions",
        json::object{{"model", "chat"},
                     {"max_tokens", max_tokens},
                     {"messages", json::array{json::object{{"role", "user"}, {"content", "hi"}}}}});
  }

  static int64_t Tokens(const http::ClientResponse& r) {
    const json::object body = Api::Obj(r);
    const json::object& u = body.at("usage").as_object();
    return u.at("prompt_tokens").as_int64() + u.at("completion_tokens").as_int64();
  }

  // Until the route has its replica.
  void WarmUp(const std::string& secret) {
    ASSERT_TRUE(WaitUntil([&] { return Chat(secret, 1).status == 200; }, std::chrono::seconds(30)))
        << server_->Log();
  }

  // Limits count in windows aligned to the UTC minute: start a sequence that must stay in one
  // window at least 10 s before the minute ends.
  static void AwayFromMinuteEnd() {
    const std::time_t now = std::time(nullptr);
    const int second = static_cast<int>(now % 60);
    if (second >= 50) std::this_thread::sleep_for(std::chrono::seconds(61 - second));
  }

  // Polls `request` until it answers 200; the time that took.
  template <typename F>
  std::chrono::milliseconds TimeUntilAdmitted(F request) {
    const auto start = std::chrono::steady_clock::now();
    EXPECT_TRUE(WaitUntil([&] { return request().status == 200; }, std::chrono::seconds(5)));
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
  }

  // The error object of an OpenAI-format error answer.
  static void ExpectRateLimited(const http::ClientResponse& r, const std::string& reason) {
    EXPECT_EQ(r.status, 429u) << r.body;
    const json::object body = Api::Obj(r);
    ASSERT_TRUE(body.contains("error")) << r.body;
    const json::object& e = body.at("error").as_object();
    EXPECT_EQ(e.at("type").as_string(), "rate_limit_error") << r.body;
    EXPECT_TRUE(e.contains("param") && e.contains("code")) << r.body;
    EXPECT_NE(std::string(e.at("message").as_string()).find(reason), std::string::npos) << r.body;
    const std::string retry_after = r.Header("retry-after");
    ASSERT_FALSE(retry_after.empty()) << "no Retry-After";
    EXPECT_GE(std::stoi(retry_after), 1);
  }

  TempDir dir_;
  uint16_t port_ = 0;
  int starts_ = 0;
  std::unique_ptr<Process> server_;
  Api api_;
};

TEST_F(GatewayLimitsTest, KeyAndProjectLimitsAnswer429AndChangesApplyWithinASecond) {
  const int64_t project = Project("limited");
  const int64_t model = Model(project);
  const std::string free_key = Key(project, "free").second;
  const auto limited = Key(project, "rpm2", {{"requests_per_minute", 2}});
  const int64_t limited_id = limited.first;
  const std::string limited_key = limited.second;
  ASSERT_TRUE(WaitUntil([&] { return Running(model); }, std::chrono::seconds(60)))
      << server_->Log();
  WarmUp(free_key);

  // requests_per_minute 2: the third request in the minute is refused, with Retry-After.
  AwayFromMinuteEnd();
  EXPECT_EQ(Chat(limited_key, 2).status, 200u);
  EXPECT_EQ(Chat(limited_key, 2).status, 200u);
  auto third = Chat(limited_key, 2);
  ExpectRateLimited(third, "this API key reached its limit of 2 requests per minute");
  EXPECT_LE(std::stoi(third.Header("retry-after")), 60);

  // Raising the limit through the API admits again within a second.
  auto raised = api_.Call(verb::patch, "/v2/api-keys/" + std::to_string(limited_id),
                          json::object{{"limits", json::object{{"requests_per_minute", 100}}}});
  ASSERT_EQ(raised.status, 200u) << raised.body;
  const auto key_delay = TimeUntilAdmitted([&] { return Chat(limited_key, 2); });
  EXPECT_LT(key_delay, std::chrono::seconds(1));

  // A project's tokens per minute bind all its keys. Three requests spend `spent` tokens in this
  // minute; a limit of spent + 4 then refuses any reservation of 5, for every key of the project
  // (the one allowed 100 requests a minute too).
  AwayFromMinuteEnd();
  int64_t spent = 0;
  for (int i = 0; i < 3; ++i) {
    auto r = Chat(free_key, 1);
    ASSERT_EQ(r.status, 200u) << r.body;
    spent += Tokens(r);
  }
  const int64_t tpm = spent + 4;
  auto capped = api_.Call(verb::patch, "/v2/projects/" + std::to_string(project),
                          json::object{{"limits", json::object{{"tokens_per_minute", tpm}}}});
  ASSERT_EQ(capped.status, 200u) << capped.body;
  EXPECT_EQ(Api::Obj(capped).at("limits").at("tokens_per_minute").as_int64(), tpm);
  ASSERT_TRUE(WaitUntil([&] { return Chat(free_key, 5).status == 429; }, std::chrono::seconds(1)));
  const std::string reason = "this project reached its limit of " + std::to_string(tpm) + " tokens";
  ExpectRateLimited(Chat(free_key, 5), reason);
  ExpectRateLimited(Chat(limited_key, 5), reason);

  // Lifting the project's limit admits again within a second.
  auto lifted = api_.Call(verb::patch, "/v2/projects/" + std::to_string(project),
                          json::object{{"limits", json::object{{"tokens_per_minute", nullptr}}}});
  ASSERT_EQ(lifted.status, 200u) << lifted.body;
  const auto project_delay = TimeUntilAdmitted([&] { return Chat(free_key, 5); });
  EXPECT_LT(project_delay, std::chrono::seconds(1));
  std::printf("limit changes applied after %lld ms (key) and %lld ms (project)\n",
              static_cast<long long>(key_delay.count()),
              static_cast<long long>(project_delay.count()));
}

// A key whose daily budget its first request spent: the next one is refused.
struct SpentBudget {
  int64_t model = 0;
  int64_t daily_id = 0;
  std::string free_key;
  std::string daily_key;
  int64_t used = 0;
};

class GatewayBudgetTest : public GatewayLimitsTest {
 protected:
  SpentBudget SpendADailyBudget(const std::string& project_name) {
    SpentBudget b;
    const int64_t project = Project(project_name);
    b.model = Model(project);
    b.free_key = Key(project, "free").second;
    EXPECT_TRUE(WaitUntil([&] { return Running(b.model); }, std::chrono::seconds(60)))
        << server_->Log();
    WarmUp(b.free_key);
    // engine-sim answers the same request with the same usage: learn it with the free key, then
    // give a new key a daily budget just above it (a reservation of 1 still fits, 5 does not).
    auto probe = Chat(b.free_key, 3);
    EXPECT_EQ(probe.status, 200u) << probe.body;
    const int64_t cost = Tokens(probe);
    const auto daily = Key(project, "daily", {{"tokens_per_day", cost + 2}});
    b.daily_id = daily.first;
    b.daily_key = daily.second;
    http::ClientResponse first;
    EXPECT_TRUE(WaitUntil(
        [&] {
          first = Chat(b.daily_key, 3);
          return first.status != 401;  // until the gateway has the new key
        },
        std::chrono::seconds(1)));
    EXPECT_EQ(first.status, 200u) << first.body;
    b.used = Tokens(first);
    EXPECT_EQ(b.used, cost);
    ExpectRateLimited(Chat(b.daily_key, 5), "this API key reached its daily budget");
    return b;
  }

  // Starts segma again on the same data dir: the budget goes on from what was spent.
  void ExpectTheBudgetStillSpent(const SpentBudget& b) {
    StartServer();
    ASSERT_TRUE(WaitUntil([&] { return Running(b.model); }, std::chrono::seconds(60)))
        << server_->Log();
    WarmUp(b.free_key);
    ExpectRateLimited(Chat(b.daily_key, 5), "this API key reached its daily budget");
    // Exactly what was spent is counted: a reservation of 1 still fits.
    EXPECT_EQ(Chat(b.daily_key, 1).status, 200u);
  }
};

TEST_F(GatewayBudgetTest, DailyBudgetSpentBeforeARestartStaysSpent) {
  const SpentBudget b = SpendADailyBudget("budget");
  ASSERT_FALSE(HasFailure());
  // The usage is recorded before segma stops.
  auto metered = [&] {
    auto u = Api::Obj(api_.Get("/v2/usage?group_by=key"));
    for (const auto& row : u.at("items").as_array()) {
      if (row.at("key").as_string() == std::to_string(b.daily_id)) {
        return row.at("prompt_tokens").as_int64() + row.at("completion_tokens").as_int64();
      }
    }
    return int64_t{0};
  };
  ASSERT_TRUE(WaitUntil([&] { return metered() == b.used; }, std::chrono::seconds(10)));
  server_->Signal(SIGTERM);
  ASSERT_TRUE(server_->Wait(std::chrono::seconds(30)).has_value());
  ExpectTheBudgetStillSpent(b);
}

// kill -9 right after the answer, before the usage writer's interval: the record is only in the
// usage journal, which the next start replays before it seeds the budgets (issue 18).
TEST_F(GatewayBudgetTest, DailyBudgetSpentBeforeACrashStaysSpent) {
  const SpentBudget b = SpendADailyBudget("crash-budget");
  ASSERT_FALSE(HasFailure());
  server_->Signal(SIGKILL);
  ASSERT_TRUE(server_->Wait(std::chrono::seconds(30)).has_value());
  KillEngines(dir_.path() + "/data/worker/engines");
  ExpectTheBudgetStillSpent(b);
}

}  // namespace
}  // namespace segma::testing
