// Loopback tests: the Gateway behind our HttpServer, in front of fake engines.

#include "gateway/gateway.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/crypto.h"
#include "fakes/fake_model_server.h"
#include "gateway/replica.h"
#include "http/client.h"
#include "http/server.h"
#include "store/sqlite/sqlite_store.h"

namespace segma::gateway {
namespace {

namespace bhttp = boost::beast::http;
using segma::testing::FakeModelOptions;
using segma::testing::FakeModelServer;

FakeModelOptions Named(const std::string& name) {
  FakeModelOptions o;
  o.name = name;
  return o;
}

bool WaitFor(const std::function<bool()>& pred,
             std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

class GatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitCrypto();
    auto s = store::OpenSqliteStore(":memory:", bus_, clock_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    types::User u;
    u.username = "alice";
    user_ = *store_->CreateUser(u);
    types::Project p;
    p.name = "p1";
    project_ = *store_->CreateProject(p);
    types::Project p2;
    p2.name = "p2";
    other_project_ = *store_->CreateProject(p2);
    ASSERT_TRUE(store_->AddProjectMember(project_.id, user_.id, types::ProjectRole::kMember).ok());
    ASSERT_TRUE(
        store_->AddProjectMember(other_project_.id, user_.id, types::ProjectRole::kMember).ok());
    key_ = NewKey("main");
  }

  void TearDown() override {
    if (server_) {
      server_->Stop();
      server_->CloseAll();
    }
    work_.reset();
    for (auto& t : threads_) t.join();
    if (gateway_) gateway_->Stop();
  }

  // Creates a key and returns its secret.
  std::string NewKey(const std::string& name,
                     types::ApiKeyScope scope = types::ApiKeyScope::kInference,
                     std::optional<std::vector<std::string>> models = std::nullopt,
                     std::optional<Timestamp> expires = std::nullopt, int64_t project = 0) {
    const std::string secret = "sk-segma-" + name + "-" + RandomToken(16);
    types::ApiKey k;
    k.name = name;
    k.project_id = project != 0 ? project : project_.id;
    k.user_id = user_.id;
    k.scope = scope;
    k.allowed_models = std::move(models);
    k.prefix = secret.substr(0, 12);
    k.secret_hash = Sha256Hex(secret);
    k.expires_at = expires;
    auto created = store_->CreateApiKey(k);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    key_ids_[secret] = created.ok() ? created->id : 0;
    return secret;
  }

  // `stored_limits`: the limits stored with keys and projects (as the server runs it) instead of
  // limits_.
  void StartGateway(GatewayOptions options = {}, bool stored_limits = false) {
    options.keys.full_reload_every = std::chrono::seconds(30);
    gateway_ = std::make_unique<Gateway>(ioc_.get_executor(), *store_, bus_, clock_, registry_,
                                         stored_limits ? nullptr : &limits_, nullptr, options);
    gateway_->Install(router_);
    ASSERT_TRUE(gateway_->Start().ok());
    http::ServerOptions so;
    so.name = "gateway";
    so.access_log = false;
    server_ = std::make_unique<http::HttpServer>(ioc_, router_, registry_, so);
    auto port = server_->Listen("127.0.0.1", 0);
    ASSERT_TRUE(port.ok());
    base_ = fmt::format("http://127.0.0.1:{}", *port);
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { ioc_.run(); });
  }

  // One route "m" with one deployment over `upstreams` (base URLs).
  void Route(const std::vector<std::string>& upstreams, std::string name = "m",
             int64_t project = 0) {
    DeploymentSpec d;
    d.deployment_id = 42;
    d.project_id = project;
    int64_t id = 1000;
    for (const auto& u : upstreams) d.replicas.push_back({id++, u, true});
    RouteTable::Builder b;
    b.Add({name, {d}, 1700000000});
    ASSERT_TRUE(gateway_->SetRoutes(b).ok());
  }

  http::ClientRequest Post(const std::string& path, const std::string& body,
                           const std::string& secret) {
    http::ClientRequest r;
    r.method = bhttp::verb::post;
    r.url = base_ + path;
    r.body = body;
    r.headers.emplace_back("Content-Type", "application/json");
    if (!secret.empty()) r.Bearer(secret);
    return r;
  }

  http::ClientResponse Call(const std::string& path, const std::string& body,
                            const std::string& secret) {
    auto r = http::FetchSync(Post(path, body, secret));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : http::ClientResponse{};
  }

  // The OpenAI error object of a response ("" when it is not one).
  static std::string ErrorType(const http::ClientResponse& r) {
    auto j = r.Json();
    if (!j.ok() || !j->is_object()) return "";
    const auto* e = j->get_object().if_contains("error");
    if (e == nullptr || !e->is_object()) return "";
    const auto& eo = e->get_object();
    if (!eo.contains("message") || !eo.contains("type") || !eo.contains("param") ||
        !eo.contains("code")) {
      return "";
    }
    return std::string(eo.at("type").as_string());
  }

  std::vector<store::UsageSummary> Usage(store::UsageGroupBy g) {
    store::UsageQuery q;
    q.group_by = g;
    q.from = Timestamp();
    q.to = clock_.Now() + std::chrono::hours(1);
    auto r = store_->QueryUsage(q);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::vector<store::UsageSummary>{};
  }

  static constexpr const char* kChat =
      R"({"model":"m","messages":[{"role":"user","content":"hello"}]})";
  static constexpr const char* kStreamChat =
      R"({"model":"m","stream":true,"messages":[{"role":"user","content":"hello"}]})";
  static constexpr const char* kStreamChatUsage =
      R"({"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello"}]})";

  FakeClock clock_;
  EventBus bus_;
  std::unique_ptr<store::Store> store_;
  types::User user_;
  types::Project project_, other_project_;
  std::string key_;
  std::map<std::string, int64_t> key_ids_;
  StaticLimitsSource limits_;
  metrics::Registry registry_;
  boost::asio::io_context ioc_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_{
      ioc_.get_executor()};
  std::vector<std::thread> threads_;
  http::Router router_;
  std::unique_ptr<Gateway> gateway_;
  std::unique_ptr<http::HttpServer> server_;
  std::string base_;
};

TEST_F(GatewayTest, ErrorsUseOpenAiFormatAndStatus) {
  FakeModelServer up;
  const std::string mgmt = NewKey("mgmt", types::ApiKeyScope::kManagement);
  const std::string scoped =
      NewKey("scoped", types::ApiKeyScope::kInference, std::vector<std::string>{"other"});
  const std::string expiring = NewKey("exp", types::ApiKeyScope::kInference, std::nullopt,
                                      clock_.Now() + std::chrono::hours(1));
  StartGateway();
  Route({up.base_url()});
  DeploymentSpec down{7, 0, 1, "", {{77, up.base_url(), /*healthy=*/false}}};
  RouteTable::Builder b;
  b.Add({"m", {{42, 0, 1, "", {{1000, up.base_url(), true}}}}}).Add({"down", {down}});
  ASSERT_TRUE(gateway_->SetRoutes(b).ok());

  auto expect = [&](const http::ClientResponse& r, unsigned status, const std::string& type) {
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_EQ(ErrorType(r), type) << r.body;
  };
  expect(Call("/v1/chat/completions", kChat, ""), 401, "authentication_error");
  expect(Call("/v1/chat/completions", kChat, "sk-segma-nope"), 401, "authentication_error");
  expect(Call("/v1/chat/completions", kChat, mgmt), 403, "permission_error");
  expect(Call("/v1/chat/completions", kChat, scoped), 403, "permission_error");
  expect(Call("/v1/chat/completions", R"({"model":"nope","messages":[]})", key_), 404,
         "not_found_error");
  expect(Call("/v1/chat/completions", "{not json", key_), 400, "invalid_request_error");
  expect(Call("/v1/chat/completions", R"({"messages":[]})", key_), 400, "invalid_request_error");
  expect(Call("/v1/chat/completions", R"({"model":"down","messages":[]})", key_), 503,
         "service_unavailable_error");
  EXPECT_EQ(Call("/v1/chat/completions", kChat, expiring).status, 200u);
  clock_.Advance(std::chrono::hours(2));
  auto expired = Call("/v1/chat/completions", kChat, expiring);
  expect(expired, 401, "authentication_error");
  EXPECT_NE(expired.body.find("expired"), std::string::npos);
  EXPECT_EQ(up.requests(), 1);  // no refused request reached the engine
}

// The value of the sample `series` (name and labels exactly as written) in `text`, -1 if absent.
double SampleValue(const std::string& text, const std::string& series) {
  const size_t at = text.find(series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 1));
}

TEST_F(GatewayTest, RateLimitAnswers429WithRetryAfter) {
  FakeModelServer up;
  StartGateway();
  Route({up.base_url()});
  limits_.SetKeyLimits(key_ids_[key_], [] {
    LimitConfig c;
    c.requests_per_minute = 2;
    return c;
  }());
  EXPECT_EQ(Call("/v1/chat/completions", kChat, key_).status, 200u);
  EXPECT_EQ(Call("/v1/chat/completions", kChat, key_).status, 200u);
  auto r = Call("/v1/chat/completions", kChat, key_);
  EXPECT_EQ(r.status, 429u);
  EXPECT_EQ(ErrorType(r), "rate_limit_error");
  EXPECT_FALSE(r.Header("retry-after").empty());
  EXPECT_GE(std::stoi(r.Header("retry-after")), 1);
  clock_.Advance(std::chrono::minutes(1));
  EXPECT_EQ(Call("/v1/chat/completions", kChat, key_).status, 200u);
  // Per project: what was refused by the limits, and every finished request by status.
  const std::string project = std::to_string(project_.id);
  EXPECT_TRUE(WaitFor([&] {
    return SampleValue(registry_.Serialize(),
                       "segma_gateway_project_requests_total{code=\"200\","
                       "model=\"m\",project=\"" +
                           project + "\"}") == 3;
  })) << registry_.Serialize();
  const std::string text = registry_.Serialize();
  EXPECT_EQ(SampleValue(
                text, "segma_gateway_rate_limited_total{model=\"m\",project=\"" + project + "\"}"),
            1);
  EXPECT_EQ(SampleValue(text,
                        "segma_gateway_project_requests_total{code=\"429\",model=\"m\","
                        "project=\"" +
                            project + "\"}"),
            1);
  EXPECT_GT(SampleValue(text, "segma_gateway_project_tokens_total{model=\"m\",project=\"" +
                                  project + "\",type=\"completion\"}"),
            0);
}

// Limits stored with keys and projects (ADR 0013), applied from the key table's memory.
TEST_F(GatewayTest, StoredLimitsAnswer429AndChangesApplyWithinASecond) {
  FakeModelServer up;  // reports 11 + 7 = 18 tokens per request
  auto patch = [](const json::object& limits) {
    auto p = types::ParseLimitsPatch(json::value(limits));
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return *p;
  };
  store::ApiKeyPatch rpm2;
  rpm2.limits = patch({{"requests_per_minute", 2}});
  ASSERT_TRUE(store_->UpdateApiKey(key_ids_[key_], rpm2).ok());
  StartGateway({}, /*stored_limits=*/true);
  Route({up.base_url()});
  EXPECT_EQ(Call("/v1/chat/completions", kChat, key_).status, 200u);
  EXPECT_EQ(Call("/v1/chat/completions", kChat, key_).status, 200u);
  auto refused = Call("/v1/chat/completions", kChat, key_);
  EXPECT_EQ(refused.status, 429u) << refused.body;
  EXPECT_EQ(ErrorType(refused), "rate_limit_error");
  EXPECT_NE(refused.body.find("2 requests per minute"), std::string::npos) << refused.body;
  EXPECT_GE(std::stoi(refused.Header("retry-after")), 1);
  EXPECT_EQ(up.requests(), 2);  // the refused request never reached the engine

  // Raising the limit admits again within a second, without a restart.
  store::ApiKeyPatch rpm10;
  rpm10.limits = patch({{"requests_per_minute", 10}});
  ASSERT_TRUE(store_->UpdateApiKey(key_ids_[key_], rpm10).ok());
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return Call("/v1/chat/completions", kChat, key_).status == 200; },
                      std::chrono::seconds(1)));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));

  // A project's tokens per minute bind all its keys together: reservations of 10 against 50,
  // settled at the 18 the engine reports: 0+10, 18+10, 36+10 admitted, 54+10 refused.
  clock_.Advance(std::chrono::minutes(1));
  const std::string other = NewKey("other");
  store::ProjectPatch tpm;
  tpm.limits = patch({{"tokens_per_minute", 50}});
  ASSERT_TRUE(store_->UpdateProject(project_.id, tpm).ok());
  const std::string small =
      R"({"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hello"}]})";
  ASSERT_TRUE(WaitFor(
      [&] { return gateway_->keys().ProjectLimits(project_.id) == tpm.limits->ApplyTo({}); },
      std::chrono::seconds(1)));
  EXPECT_EQ(Call("/v1/chat/completions", small, key_).status, 200u);
  EXPECT_EQ(Call("/v1/chat/completions", small, other).status, 200u);
  EXPECT_EQ(Call("/v1/chat/completions", small, key_).status, 200u);
  auto spent = Call("/v1/chat/completions", small, other);
  EXPECT_EQ(spent.status, 429u) << spent.body;
  EXPECT_NE(spent.body.find("this project reached its limit of 50 tokens per minute"),
            std::string::npos)
      << spent.body;
  EXPECT_EQ(gateway_->limiter().ProjectUsage(project_.id).tokens_this_minute, 54);
  // Lifting it (null) applies within a second too.
  store::ProjectPatch lift;
  lift.limits = *types::ParseLimitsPatch(json::value(nullptr));
  ASSERT_TRUE(store_->UpdateProject(project_.id, lift).ok());
  start = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return Call("/v1/chat/completions", small, other).status == 200; },
                      std::chrono::seconds(1)));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

// The gateway's start seeds daily and monthly budgets from the usage already recorded, so a
// restart does not reset them.
TEST_F(GatewayTest, BudgetsAreSeededFromRecordedUsageAtStart) {
  FakeModelServer up;
  // The clock is 2027-01-15 08:00 UTC.
  const Timestamp now = clock_.Now();
  auto record = [&](const std::string& id, Timestamp t, const std::string& secret, int64_t tokens,
                    int64_t project) {
    store::UsageRecord r;
    r.request_id = id;
    r.time = t;
    r.api_key_id = key_ids_[secret];
    r.user_id = user_.id;
    r.project_id = project;
    r.model = "m";
    r.prompt_tokens = tokens / 2;
    r.completion_tokens = tokens - tokens / 2;
    r.status = 200;
    return r;
  };
  const std::string daily = NewKey("daily");
  const std::string monthly = NewKey("monthly", types::ApiKeyScope::kInference, std::nullopt,
                                     std::nullopt, other_project_.id);
  ASSERT_TRUE(
      store_
          ->InsertUsageRecords({
              record("r1", now - std::chrono::hours(2), daily, 500, project_.id),
              // Yesterday: this month, not today.
              record("r2", now - std::chrono::hours(20), daily, 400, project_.id),
              record("r3", now - std::chrono::hours(24 * 10), monthly, 1000, other_project_.id),
              // Last month: counts for nothing.
              record("r4", now - std::chrono::hours(24 * 20), monthly, 7000, other_project_.id),
          })
          .ok());
  auto set = [&](const std::string& secret, const json::object& limits) {
    store::ApiKeyPatch p;
    p.limits = *types::ParseLimitsPatch(json::value(limits));
    ASSERT_TRUE(store_->UpdateApiKey(key_ids_[secret], p).ok());
  };
  set(daily, {{"tokens_per_day", 510}});
  set(monthly, {{"tokens_per_month", 1010}});
  store::ProjectPatch pp;
  pp.limits = *types::ParseLimitsPatch(json::value(json::object{{"tokens_per_month", 915}}));
  ASSERT_TRUE(store_->UpdateProject(project_.id, pp).ok());
  StartGateway({}, /*stored_limits=*/true);
  Route({up.base_url()});
  EXPECT_EQ(gateway_->limiter().KeyUsage(key_ids_[daily]).tokens_today, 500);
  EXPECT_EQ(gateway_->limiter().KeyUsage(key_ids_[daily]).tokens_this_month, 900);
  EXPECT_EQ(gateway_->limiter().KeyUsage(key_ids_[monthly]).tokens_this_month, 1000);
  EXPECT_EQ(gateway_->limiter().ProjectUsage(project_.id).tokens_this_month, 900);

  const std::string twenty =
      R"({"model":"m","max_tokens":20,"messages":[{"role":"user","content":"hello"}]})";
  auto day = Call("/v1/chat/completions", twenty, daily);
  EXPECT_EQ(day.status, 429u) << day.body;
  EXPECT_NE(day.body.find("daily budget of 510"), std::string::npos) << day.body;
  auto month = Call("/v1/chat/completions", twenty, monthly);
  EXPECT_EQ(month.status, 429u) << month.body;
  EXPECT_NE(month.body.find("monthly budget of 1010"), std::string::npos) << month.body;
  // The project (900 of 915 spent) refuses its other keys too.
  auto project = Call("/v1/chat/completions", twenty, key_);
  EXPECT_EQ(project.status, 429u) << project.body;
  EXPECT_NE(project.body.find("this project reached its monthly budget"), std::string::npos);
  EXPECT_EQ(up.requests(), 0);
}

TEST_F(GatewayTest, RevocationTakesEffectWithinASecond) {
  FakeModelServer up;
  StartGateway();
  Route({up.base_url()});
  EXPECT_EQ(Call("/v1/chat/completions", kChat, key_).status, 200u);
  ASSERT_TRUE(store_->RevokeApiKey(key_ids_[key_], clock_.Now()).ok());
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return Call("/v1/chat/completions", kChat, key_).status == 401; },
                      std::chrono::seconds(1)));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  // A key created after start is usable as soon as its event is applied.
  const std::string fresh = NewKey("fresh");
  EXPECT_TRUE(WaitFor([&] { return Call("/v1/chat/completions", kChat, fresh).status == 200; },
                      std::chrono::seconds(1)));
}

TEST_F(GatewayTest, ModelsListOnlyWhatTheKeyMayUse) {
  FakeModelServer up;
  const std::string scoped =
      NewKey("scoped", types::ApiKeyScope::kInference, std::vector<std::string>{"a"});
  StartGateway();
  RouteTable::Builder b;
  b.Add({"a", {{1, 0, 1, "", {{1, up.base_url(), true}}}}})
      .Add({"b", {{2, 0, 1, "", {{2, up.base_url(), true}}}}})
      .Add({"private", {{3, other_project_.id, 1, "", {{3, up.base_url(), true}}}}});
  ASSERT_TRUE(gateway_->SetRoutes(b).ok());
  auto list = [&](const std::string& secret) {
    http::ClientRequest r;
    r.url = base_ + "/v1/models";
    r.Bearer(secret);
    auto res = http::FetchSync(r);
    EXPECT_TRUE(res.ok());
    std::set<std::string> ids;
    if (res->status != 200) return ids;  // e.g. a key whose event is not applied yet
    auto j = res->Json();
    EXPECT_TRUE(j.ok()) << res->body;
    for (const auto& m : j->at("data").as_array()) ids.insert(std::string(m.at("id").as_string()));
    return ids;
  };
  EXPECT_EQ(list(key_), (std::set<std::string>{"a", "b"}));
  EXPECT_EQ(list(scoped), (std::set<std::string>{"a"}));
  const std::string other = NewKey("other", types::ApiKeyScope::kInference, std::nullopt,
                                   std::nullopt, other_project_.id);
  EXPECT_TRUE(WaitFor([&] { return list(other).size() == 3; }));
  // A project's private model is 404 to other projects.
  EXPECT_EQ(Call("/v1/chat/completions", R"({"model":"private","messages":[]})", key_).status,
            404u);
}

TEST_F(GatewayTest, NonStreamingPassesBodyThroughAndMetersUsage) {
  FakeModelServer up;
  StartGateway();
  Route({up.base_url()});
  http::ClientRequest direct;
  direct.method = bhttp::verb::post;
  direct.url = up.base_url() + "/v1/chat/completions";
  direct.body = kChat;
  auto want = http::FetchSync(direct);
  ASSERT_TRUE(want.ok());
  auto got = Call("/v1/chat/completions", kChat, key_);
  EXPECT_EQ(got.status, 200u);
  EXPECT_EQ(got.body, want->body);
  EXPECT_EQ(up.last_body(), kChat);  // the client's bytes, unchanged
  EXPECT_FALSE(got.Header("x-segma-overhead-us").empty());
  auto emb = Call("/v1/embeddings", R"({"model":"m","input":"x"})", key_);
  EXPECT_EQ(emb.status, 200u) << emb.body;

  gateway_->Stop();  // flushes the usage meter
  auto rows = Usage(store::UsageGroupBy::kKey);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].key, std::to_string(key_ids_[key_]));
  EXPECT_EQ(rows[0].requests, 2);
  EXPECT_EQ(rows[0].prompt_tokens, 11 + 11);
  EXPECT_EQ(rows[0].completion_tokens, 7);
  EXPECT_EQ(rows[0].cached_tokens, 3);
  // The TPM reservation was replaced by the real count.
  EXPECT_EQ(gateway_->limiter().KeyUsage(key_ids_[key_]).tokens_this_minute, 11 + 7 + 11);
}

TEST_F(GatewayTest, StreamingIsByteIdenticalToDirect) {
  FakeModelOptions fo;
  fo.chunks = 6;
  fo.chunk_delay = std::chrono::milliseconds(2);
  FakeModelServer up(fo);
  StartGateway();
  Route({up.base_url()});
  auto collect = [](http::ClientRequest req, std::vector<std::string>* pieces) {
    std::string all;
    auto r = http::StreamSync(std::move(req), [&](std::string_view d) {
      all.append(d);
      if (pieces) pieces->emplace_back(d);
      return true;
    });
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r->status, 200u);
    EXPECT_EQ(r->Header("content-type"), "text/event-stream");
    return all;
  };
  for (const char* body : {kStreamChat, kStreamChatUsage}) {
    http::ClientRequest direct;
    direct.method = bhttp::verb::post;
    direct.url = up.base_url() + "/v1/chat/completions";
    direct.body = body;
    const std::string want = collect(direct, nullptr);
    const bool asked = std::string_view(body).find("include_usage") != std::string_view::npos;
    EXPECT_EQ(want, up.ExpectedStream(asked));
    const std::string got = collect(Post("/v1/chat/completions", body, key_), nullptr);
    EXPECT_EQ(got, want) << "client asked for usage: " << asked;
    // The engine was always asked for usage.
    EXPECT_NE(up.last_body().find("\"include_usage\":true"), std::string::npos);
  }
  gateway_->Stop();
  auto rows = Usage(store::UsageGroupBy::kModel);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].key, "m");
  EXPECT_EQ(rows[0].requests, 2);
  EXPECT_EQ(rows[0].prompt_tokens, 22);
  EXPECT_EQ(rows[0].completion_tokens, 14);
  EXPECT_EQ(rows[0].errors, 0);
}

TEST_F(GatewayTest, LargeStreamedRequestReachesTheEngineWhole) {
  // 200 messages of 1 KiB: the body's DOM outgrows the gateway's in-frame buffer, and the
  // gateway adds stream_options to it before it goes upstream.
  FakeModelServer up;
  StartGateway();
  Route({up.base_url()});
  json::array messages;
  for (int i = 0; i < 200; ++i) {
    messages.push_back(
        json::object{{"role", i % 2 == 0 ? "user" : "assistant"},
                     {"content", fmt::format("{:04} {}", i, std::string(1019, 'x'))}});
  }
  const json::object request{{"model", "m"}, {"stream", true}, {"messages", messages}};
  auto r = http::StreamSync(Post("/v1/chat/completions", json::serialize(request), key_),
                            [](std::string_view) { return true; });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200u);
  json::value sent = json::parse(up.last_body());
  ASSERT_TRUE(sent.is_object());
  EXPECT_EQ(sent.at("messages"), request.at("messages"));
  EXPECT_EQ(sent.at("stream_options").at("include_usage"), true);
}

TEST_F(GatewayTest, ClientDisconnectCancelsUpstream) {
  FakeModelOptions fo;
  fo.chunks = 200;
  fo.chunk_delay = std::chrono::milliseconds(10);
  FakeModelServer up(fo);
  StartGateway();
  Route({up.base_url()});
  int pieces = 0;
  auto r = http::StreamSync(Post("/v1/chat/completions", kStreamChat, key_),
                            [&](std::string_view) { return ++pieces < 2; });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // The client closed after two pieces; the engine must see its connection closed long before
  // its 2 s stream would end.
  EXPECT_TRUE(
      WaitFor([&] { return up.cancelled_streams() == 1; }, std::chrono::milliseconds(1500)));
  EXPECT_EQ(up.completed_streams(), 0);
  // The request is settled: nothing in flight, usage recorded as 499.
  EXPECT_TRUE(
      WaitFor([&] { return gateway_->limiter().KeyUsage(key_ids_[key_]).concurrent == 0; }));
  gateway_->Stop();
  auto rows = Usage(store::UsageGroupBy::kKey);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].errors, 1);
  // Billed for the tokens that went out before the client left (at least the ones it read, far
  // fewer than the 200 the engine would have made), marked as cut short.
  auto finish = Usage(store::UsageGroupBy::kFinish);
  ASSERT_EQ(finish.size(), 1u);
  EXPECT_EQ(finish[0].key, "client_disconnected");
  EXPECT_EQ(finish[0].cut_short, 1);
  EXPECT_GE(finish[0].completion_tokens, 1);
  EXPECT_LT(finish[0].completion_tokens, 200);
}

TEST_F(GatewayTest, AStreamWhoseEngineDiesIsBilledForWhatWasDelivered) {
  FakeModelOptions fo;
  fo.chunks = 10;
  fo.die_after_chunks = 6;
  FakeModelServer up(fo);
  StartGateway();
  Route({up.base_url()});
  std::string body;
  auto r = http::StreamSync(Post("/v1/chat/completions", kStreamChatUsage, key_),
                            [&](std::string_view d) {
                              body.append(d);
                              return true;
                            });
  // The client got a 200 head and six tokens, then a cut body.
  int tokens = 0;
  for (size_t at = body.find("\"content\":\"tok"); at != std::string::npos;
       at = body.find("\"content\":\"tok", at + 1)) {
    ++tokens;
  }
  EXPECT_EQ(tokens, 6) << body;
  gateway_->Stop();
  auto rows = Usage(store::UsageGroupBy::kFinish);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].key, "upstream_failed");
  EXPECT_EQ(rows[0].completion_tokens, 6);
  EXPECT_EQ(rows[0].prompt_tokens, 0);  // the engine never reported its usage
  EXPECT_EQ(rows[0].cut_short, 1);
}

TEST_F(GatewayTest, JournaledUsageIsReplayedBeforeBudgetsAreSeeded) {
  const std::string dir = ::testing::TempDir() + "gateway-journal-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  {
    // A gateway that answered two requests and died before its writer ran: the records are in
    // its journal only.
    class Down : public UsageSink {
      Status Write(const std::vector<store::UsageRecord>&) override {
        return UnavailableError("killed before the commit");
      }
    } down;
    UsageMeterOptions o;
    o.journal.dir = dir;
    o.stop_timeout = std::chrono::milliseconds(0);
    UsageMeter dead(down, o);
    ASSERT_TRUE(dead.Start().ok());
    for (int i = 0; i < 2; ++i) {
      store::UsageRecord r;
      r.request_id = "before-crash-" + std::to_string(i);
      r.time = clock_.Now() - std::chrono::minutes(5);
      r.api_key_id = key_ids_[key_];
      r.user_id = user_.id;
      r.project_id = project_.id;
      r.model = "m";
      r.prompt_tokens = 100;
      r.completion_tokens = 150;
      r.status = 200;
      ASSERT_TRUE(dead.Record(r));
    }
  }
  store::ApiKeyPatch p;
  p.limits = *types::ParseLimitsPatch(json::value(json::object{{"tokens_per_day", 520}}));
  ASSERT_TRUE(store_->UpdateApiKey(key_ids_[key_], p).ok());
  GatewayOptions options;
  options.usage.journal.dir = dir;
  StartGateway(options, /*stored_limits=*/true);
  // Both records reached the store before the budget was read from it.
  EXPECT_EQ(gateway_->limiter().KeyUsage(key_ids_[key_]).tokens_today, 500);
  auto rows = Usage(store::UsageGroupBy::kKey);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].requests, 2);
  FakeModelServer up;
  Route({up.base_url()});
  auto refused =
      Call("/v1/chat/completions",
           R"({"model":"m","max_tokens":30,"messages":[{"role":"user","content":"hello"}]})", key_);
  EXPECT_EQ(refused.status, 429u) << refused.body;
  gateway_->Stop();
  std::filesystem::remove_all(dir);
}

TEST_F(GatewayTest, FailsOverBeforeTheFirstByte) {
  FakeModelServer broken(Named("broken"));
  broken.set_fail_status(500);
  FakeModelServer good(Named("good"));
  // A port nobody listens on: connect refused.
  uint16_t dead_port = 0;
  {
    FakeModelServer gone;
    dead_port = gone.port();
  }
  GatewayOptions o;
  o.balancer.eject_after_failures = 2;
  StartGateway(o);
  Route({broken.base_url(), fmt::format("http://127.0.0.1:{}", dead_port), good.base_url()});
  for (int i = 0; i < 10; ++i) {
    auto r = Call("/v1/chat/completions", kChat, key_);
    EXPECT_EQ(r.status, 200u) << r.body;
    auto s = http::StreamSync(Post("/v1/chat/completions", kStreamChat, key_),
                              [](std::string_view) { return true; });
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->status, 200u);
  }
  EXPECT_EQ(good.requests(), 20);
  // Passive health: the broken replica was ejected after two failures, not tried 20 times.
  EXPECT_EQ(broken.requests(), 2);
  // Requests answered after a failed attempt count as failed over; every extra attempt as a retry.
  const std::string text = registry_.Serialize();
  const double failovers = SampleValue(text, "segma_gateway_failovers_total{model=\"m\"}");
  EXPECT_GE(failovers, 2) << text;
  EXPECT_GE(SampleValue(text, "segma_gateway_retries_total{model=\"m\"}"), failovers) << text;

  // Every replica failing: the engine's 5xx is passed on.
  good.set_fail_status(503);
  RouteTable::Builder b;
  b.Add({"m", {{42, 0, 1, "", {{1, good.base_url(), true}}}}});
  ASSERT_TRUE(gateway_->SetRoutes(b).ok());
  EXPECT_EQ(Call("/v1/chat/completions", kChat, key_).status, 503u);
}

// docs/adr/0035-engine-secrets.md: the engine gets its own secret, never the client's key; an
// engine that refuses the gateway's credential is a failed replica, not a 401 for the client.
TEST_F(GatewayTest, SendsEachEngineItsSecretInsteadOfTheClientsKey) {
  FakeModelServer guarded(Named("guarded"));
  FakeModelServer open(Named("open"));
  StartGateway();
  DeploymentSpec d;
  d.deployment_id = 42;
  d.replicas.push_back({1, guarded.base_url(), true, "segma_eng_guarded-0123456789"});
  RouteTable::Builder b;
  b.Add({"m", {d}, 1700000000});
  DeploymentSpec o;
  o.deployment_id = 43;
  o.replicas.push_back({2, open.base_url(), true, ""});
  b.Add({"o", {o}, 1700000000});
  ASSERT_TRUE(gateway_->SetRoutes(b).ok());

  EXPECT_EQ(Call("/v1/chat/completions", kChat, key_).status, 200u);
  EXPECT_EQ(guarded.last_authorization(), "Bearer segma_eng_guarded-0123456789");
  auto streamed = http::StreamSync(Post("/v1/chat/completions", kStreamChat, key_),
                                   [](std::string_view) { return true; });
  ASSERT_TRUE(streamed.ok());
  EXPECT_EQ(streamed->status, 200u);
  EXPECT_EQ(guarded.last_authorization(), "Bearer segma_eng_guarded-0123456789");
  // An engine without a secret gets no credential at all: the client's key never leaves.
  EXPECT_EQ(Call("/v1/chat/completions",
                 R"({"model":"o","messages":[{"role":"user","content":"hi"}]})", key_)
                .status,
            200u);
  EXPECT_EQ(open.requests(), 1);
  EXPECT_EQ(open.last_authorization(), "");

  // The engine refuses the gateway's credential (its secret changed since the table was built):
  // another replica is tried, and with none left the client gets a 503, not the engine's 401.
  FakeModelServer fresh(Named("fresh"));
  guarded.set_fail_status(401);
  RouteTable::Builder two;
  DeploymentSpec both = d;
  both.replicas.push_back({3, fresh.base_url(), true, "segma_eng_fresh-0123456789"});
  two.Add({"m", {both}, 1700000000});
  ASSERT_TRUE(gateway_->SetRoutes(two).ok());
  for (int i = 0; i < 4; ++i) {
    auto r = Call("/v1/chat/completions", kChat, key_);
    EXPECT_EQ(r.status, 200u) << r.body;
  }
  EXPECT_EQ(fresh.last_authorization(), "Bearer segma_eng_fresh-0123456789");
  // (A new instance on the refusing engine: instance 1 is ejected by now.)
  RouteTable::Builder one;
  DeploymentSpec only;
  only.deployment_id = 42;
  only.replicas.push_back({4, guarded.base_url(), true, "segma_eng_stale-0123456789"});
  one.Add({"m", {only}, 1700000000});
  ASSERT_TRUE(gateway_->SetRoutes(one).ok());
  auto refused = Call("/v1/chat/completions", kChat, key_);
  EXPECT_EQ(refused.status, 503u) << refused.body;
  EXPECT_EQ(ErrorType(refused), "service_unavailable_error") << refused.body;
  EXPECT_NE(refused.body.find("refused the gateway's engine credential"), std::string::npos)
      << refused.body;
  EXPECT_EQ(refused.body.find("segma_eng_"), std::string::npos) << refused.body;
}

TEST_F(GatewayTest, FallsBackToAnotherDeployment) {
  FakeModelServer primary(Named("primary"));
  primary.set_fail_status(502);
  FakeModelServer fallback(Named("fallback"));
  StartGateway();
  RouteTable::Builder b;
  b.Add({"m",
         {{1, 0, 10, "", {{1, primary.base_url(), true}}},
          {2, 0, 0, "engine-name", {{2, fallback.base_url(), true}}}}});
  ASSERT_TRUE(gateway_->SetRoutes(b).ok());
  auto r = Call("/v1/chat/completions", kChat, key_);
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(primary.requests(), 1);
  EXPECT_EQ(fallback.requests(), 1);
  // The fallback deployment serves the model under another name.
  EXPECT_NE(fallback.last_body().find("\"model\":\"engine-name\""), std::string::npos);
}

TEST_F(GatewayTest, MultipartTranscriptionsPassThrough) {
  FakeModelServer up;
  StartGateway();
  Route({up.base_url()}, "whisper");
  const std::string boundary = "XyZ";
  const std::string body =
      "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n"
      "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
      "Content-Type: audio/wav\r\n\r\nRIFF....\r\n--XyZ--\r\n";
  http::ClientRequest r = Post("/v1/audio/transcriptions", body, key_);
  r.headers.clear();
  r.headers.emplace_back("Content-Type", "multipart/form-data; boundary=" + boundary);
  r.Bearer(key_);
  auto res = http::FetchSync(r);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->status, 200u) << res->body;
  EXPECT_EQ(up.last_body(), body);
  EXPECT_EQ(up.last_content_type(), "multipart/form-data; boundary=XyZ");
}

TEST_F(GatewayTest, ExportsPerModelMetrics) {
  FakeModelServer up;
  StartGateway();
  Route({up.base_url()});
  EXPECT_EQ(Call("/v1/chat/completions", kChat, key_).status, 200u);
  auto s = http::StreamSync(Post("/v1/chat/completions", kStreamChat, key_),
                            [](std::string_view) { return true; });
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(WaitFor([&] {
    return registry_.Serialize().find(
               "segma_gateway_inter_token_latency_seconds_count{model=\"m\"}") != std::string::npos;
  }));
  const std::string text = registry_.Serialize();
  for (const char* name :
       {"segma_gateway_requests_total{model=\"m\"} 2", "segma_gateway_prompt_tokens_total",
        "segma_gateway_time_to_first_token_seconds_bucket", "segma_gateway_in_flight_requests",
        "segma_gateway_request_duration_seconds_count", "segma_gateway_overhead_seconds"}) {
    EXPECT_NE(text.find(name), std::string::npos) << name;
  }
}

// A key's client ranges reach a replica with the key (/internal/gateway/state) and mean the same
// there: canonical, and "no list" stays "any address".
TEST(KeyRecordJsonTest, AllowedCidrsTravelToReplicas) {
  KeyRecord k;
  k.id = 7;
  k.name = "office";
  k.project_id = 1;
  k.user_id = 2;
  k.allowed_cidrs = AllowedCidrSet(std::vector<std::string>{"10.0.0.0/8", "2001:db8::/32"});
  const std::string hash(64, 'a');
  auto back = KeyRecordFromJson(json::value(KeyRecordToJson(hash, k)));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_TRUE(back->second.allowed_cidrs.has_value());
  EXPECT_EQ(back->second.allowed_cidrs->ranges(), k.allowed_cidrs->ranges());
  EXPECT_TRUE(back->second.AllowsAddress("10.1.2.3"));
  EXPECT_TRUE(back->second.AllowsAddress("2001:db8::9"));
  EXPECT_FALSE(back->second.AllowsAddress("192.0.2.1"));
  EXPECT_FALSE(back->second.AllowsAddress("not an address"));

  k.allowed_cidrs.reset();
  back = KeyRecordFromJson(json::value(KeyRecordToJson(hash, k)));
  ASSERT_TRUE(back.ok());
  EXPECT_FALSE(back->second.allowed_cidrs.has_value());
  EXPECT_TRUE(back->second.AllowsAddress("192.0.2.1"));

  json::object bad = KeyRecordToJson(hash, k);
  bad["allowed_cidrs"] = json::array{"10.1.2.3/8"};
  EXPECT_EQ(KeyRecordFromJson(json::value(bad)).status().code(), StatusCode::kInvalidArgument);
}

// Stand-alone gateways learn each engine's secret from the state document the gateway token
// opens (ADR 0009, ADR 0035); a replica without one has no "engine_secret" at all.
TEST(GatewayStateTest, RoutesCarryEachEnginesSecretToReplicas) {
  DeploymentSpec d;
  d.deployment_id = 7;
  d.replicas.push_back({1, "http://10.0.0.5:40001", true, "segma_eng_one-0123456789"});
  d.replicas.push_back({2, "http://10.0.0.6:40002", true, ""});
  RouteTable::Builder b;
  b.Add({"m", {d}, 1700000000});
  auto table = b.Build();
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  const json::array routes = RoutesToJson(**table);
  const json::array& replicas = routes[0].at("deployments").as_array()[0].at("replicas").as_array();
  EXPECT_EQ(replicas[0].at("engine_secret").as_string(), "segma_eng_one-0123456789");
  EXPECT_FALSE(replicas[1].as_object().contains("engine_secret"));

  auto parsed = RoutesFromJson(json::value(routes));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  auto rebuilt = parsed->Build();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().ToString();
  const Deployment& got = (*rebuilt)->Find("m")->deployments[0];
  EXPECT_EQ(got.replicas[0].api_key, "segma_eng_one-0123456789");
  EXPECT_EQ(got.replicas[1].api_key, "");

  // One instance under two names must carry one secret.
  RouteTable::Builder twice;
  twice.Add({"m", {d}, 1700000000});
  DeploymentSpec other = d;
  other.replicas[0].api_key = "segma_eng_other-0123456789";
  twice.Add({"alias", {other}, 1700000000});
  EXPECT_EQ(twice.Build().status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace segma::gateway
