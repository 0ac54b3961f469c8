// A stand-alone `segma gateway` replica (ADR 0009) against the real stack: `segma start` with an
// engine-sim model. The replica follows the server's keys and routes through the watch endpoint:
// a key created on the server works through the replica within a second, a revoked key is
// refused within a second, limits set on the server apply within a second, and usage made
// through the replica shows in the server's /v2/usage
// (flushed when the replica gets SIGTERM). The internal endpoints refuse anything but the
// gateway token, and a malformed usage batch writes nothing.

#include <signal.h>

#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

using boost::beast::http::verb;

class GatewayReplicaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    ASSERT_EQ(
        StartSegma(data(), port_, "replica-admin-pw", dir_.path() + "/server.log", server_, api_),
        "");
    token_ = ReadFile(data() + "/gateway_token");
    token_ = token_.substr(0, token_.find('\n'));
    ASSERT_FALSE(token_.empty());
  }

  void TearDown() override {
    if (replica_) replica_->Signal(SIGKILL);
    if (server_) server_->Signal(SIGKILL);
    KillEngines(data() + "/worker/engines");
  }

  std::unique_ptr<Process> StartReplica(const std::string& token, uint16_t port) {
    return std::make_unique<Process>(
        std::vector<std::string>{SegmaBinary(), "gateway", "--server", api_.base, "--token", token,
                                 "--address", "127.0.0.1", "--port", std::to_string(port),
                                 // Its usage journal (ADR 0024), one per replica.
                                 "--data-dir", dir_.path() + "/replica-" + std::to_string(port)},
        std::map<std::string, std::string>{},
        dir_.path() + "/replica-" + std::to_string(port) + ".log");
  }

  std::string Key(int64_t project, const std::string& name, int64_t* id = nullptr) {
    auto k =
        api_.Post("/v2/api-keys",
                  json::object{{"name", name}, {"project_id", project}, {"scope", "inference"}});
    EXPECT_EQ(k.status, 201u) << k.body;
    if (id != nullptr) *id = Api::Obj(k).at("id").as_int64();
    return std::string(Api::Obj(k).at("secret").as_string());
  }

  static json::value Chat(bool stream, int max_tokens) {
    json::object body{
        {"model", "chat"},
        {"max_tokens", max_tokens},
        {"messages", json::array{json::object{{"role", "user"}, {"content", "Hi replica"}}}}};
    if (stream) {
      body["stream"] = true;
      body["stream_options"] = json::object{{"include_usage", true}};
    }
    return body;
  }

  std::string data() const { return dir_.path() + "/data"; }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> server_;
  std::unique_ptr<Process> replica_;
  Api api_;
  std::string token_;
};

TEST_F(GatewayReplicaTest, FollowsKeysWithinASecondAndSendsUsageBack) {
  auto p = api_.Post("/v2/projects", json::object{{"name", "replica"}});
  ASSERT_EQ(p.status, 201u) << p.body;
  const int64_t project = Api::Obj(p).at("id").as_int64();
  auto m = api_.Post("/v2/models",
                     json::object{{"name", "chat"},
                                  {"project_id", project},
                                  {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                                  {"replicas", 1}});
  ASSERT_EQ(m.status, 201u) << m.body;
  const std::string warm_key = Key(project, "warm");

  const uint16_t gw_port = FreePort();
  replica_ = StartReplica(token_, gw_port);
  Api gw{"http://127.0.0.1:" + std::to_string(gw_port), warm_key};
  // The model becomes RUNNING and the replica learns its route.
  ASSERT_TRUE(
      WaitUntil([&] { return gw.Post("/v1/chat/completions", Chat(false, 1)).status == 200; },
                std::chrono::seconds(60)))
      << replica_->Log() << server_->Log();

  // A key created on the server works through the replica within a second.
  int64_t key_id = 0;
  const std::string secret = Key(project, "app", &key_id);
  gw.token = secret;
  const auto created = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitUntil([&] { return gw.Get("/v1/models").status == 200; },
                        std::chrono::milliseconds(1000)))
      << gw.Get("/v1/models").body;
  const auto follow_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - created)
                             .count();
  std::printf("key followed by the replica after %lld ms\n", static_cast<long long>(follow_ms));

  // Usage through the replica: what the engine reported, to the token.
  int64_t tokens = 0;
  auto r = gw.Post("/v1/chat/completions", Chat(false, 4));
  ASSERT_EQ(r.status, 200u) << r.body;
  {
    json::object body = Api::Obj(r);
    tokens += body.at("usage").at("prompt_tokens").as_int64() +
              body.at("usage").at("completion_tokens").as_int64();
  }
  http::ClientRequest sreq;
  sreq.method = verb::post;
  sreq.url = gw.base + "/v1/chat/completions";
  sreq.Bearer(secret);
  sreq.JsonBody(Chat(true, 6));
  std::string streamed;
  auto sr = http::StreamSync(std::move(sreq), [&](std::string_view d) {
    streamed.append(d);
    return true;
  });
  ASSERT_TRUE(sr.ok());
  ASSERT_EQ(sr->status, 200u) << streamed;
  const size_t u = streamed.find("\"usage\":{");
  ASSERT_NE(u, std::string::npos) << streamed;
  const size_t line_end = streamed.find("\n", u);
  const size_t line_start = streamed.rfind("data: ", u) + 6;
  auto usage_chunk = ParseJson(streamed.substr(line_start, line_end - line_start));
  ASSERT_TRUE(usage_chunk.ok()) << streamed;
  tokens += usage_chunk->at("usage").at("prompt_tokens").as_int64() +
            usage_chunk->at("usage").at("completion_tokens").as_int64();

  // A revoked key is refused by the replica within a second.
  auto revoked = api_.Call(verb::delete_, "/v2/api-keys/" + std::to_string(key_id));
  ASSERT_EQ(revoked.status, 200u) << revoked.body;
  ASSERT_TRUE(WaitUntil([&] { return gw.Get("/v1/models").status == 401; },
                        std::chrono::milliseconds(1000)));
  auto refused = gw.Post("/v1/chat/completions", Chat(false, 1));
  EXPECT_EQ(refused.status, 401u);
  EXPECT_NE(refused.body.find("revoked"), std::string::npos) << refused.body;

  // Limits set on the server (ADR 0013) are enforced by the replica within a second: the
  // project's, then the key's (0 admits nothing, so no minute window is involved).
  gw.token = warm_key;
  const std::string project_path = "/v2/projects/" + std::to_string(project);
  ASSERT_EQ(api_.Call(verb::patch, project_path,
                      json::object{{"limits", json::object{{"max_concurrent", 0}}}})
                .status,
            200u);
  ASSERT_TRUE(
      WaitUntil([&] { return gw.Post("/v1/chat/completions", Chat(false, 1)).status == 429; },
                std::chrono::milliseconds(1000)));
  auto limited = gw.Post("/v1/chat/completions", Chat(false, 1));
  EXPECT_NE(limited.body.find("this project reached its limit of 0 concurrent"), std::string::npos)
      << limited.body;
  EXPECT_FALSE(limited.Header("retry-after").empty());
  ASSERT_EQ(api_.Call(verb::patch, project_path, json::object{{"limits", nullptr}}).status, 200u);
  ASSERT_TRUE(
      WaitUntil([&] { return gw.Post("/v1/chat/completions", Chat(false, 1)).status == 200; },
                std::chrono::milliseconds(1000)));
  auto warm = Api::Obj(api_.Get("/v2/api-keys?project_id=" + std::to_string(project)));
  int64_t warm_id = 0;
  for (const json::value& k : warm.at("items").as_array()) {
    if (k.at("name").as_string() == "warm") warm_id = k.at("id").as_int64();
  }
  ASSERT_EQ(api_.Call(verb::patch, "/v2/api-keys/" + std::to_string(warm_id),
                      json::object{{"limits", json::object{{"requests_per_minute", 0}}}})
                .status,
            200u);
  ASSERT_TRUE(
      WaitUntil([&] { return gw.Post("/v1/chat/completions", Chat(false, 1)).status == 429; },
                std::chrono::milliseconds(1000)));
  EXPECT_NE(gw.Post("/v1/chat/completions", Chat(false, 1))
                .body.find("this API key reached its limit of 0 requests per minute"),
            std::string::npos);

  // SIGTERM: the replica writes its usage records to the server before it exits.
  replica_->Signal(SIGTERM);
  std::optional<int> rc = replica_->Wait(std::chrono::seconds(30));
  ASSERT_TRUE(rc.has_value()) << replica_->Log();
  EXPECT_EQ(*rc, 0) << replica_->Log();
  auto usage = Api::Obj(api_.Get("/v2/usage?group_by=key&project_id=" + std::to_string(project)));
  int64_t metered = -1;
  for (const json::value& row : usage.at("items").as_array()) {
    if (row.at("key").as_string() == std::to_string(key_id)) {
      metered = row.at("prompt_tokens").as_int64() + row.at("completion_tokens").as_int64();
    }
  }
  EXPECT_EQ(metered, tokens) << json::serialize(usage) << replica_->Log();
  // The key's last_used_at comes from the same usage batches (never written per request).
  auto key = Api::Obj(api_.Get("/v2/api-keys/" + std::to_string(key_id)));
  ASSERT_TRUE(key.contains("last_used_at")) << json::serialize(key);
  EXPECT_TRUE(key.at("last_used_at").is_string()) << json::serialize(key);
}

TEST_F(GatewayReplicaTest, InternalEndpointsNeedTheGatewayToken) {
  Api none{api_.base, ""};
  EXPECT_EQ(none.Get("/internal/gateway/state").status, 401u);
  EXPECT_EQ(Api({api_.base, "segma_gw_wrong"}).Get("/internal/gateway/state").status, 401u);
  // An admin's session is not a gateway token.
  EXPECT_EQ(api_.Get("/internal/gateway/state").status, 401u);
  EXPECT_EQ(api_.Post("/internal/gateway/usage", json::object{{"records", json::array{}}}).status,
            401u);

  Api gw{api_.base, token_};
  auto state = gw.Get("/internal/gateway/state");
  ASSERT_EQ(state.status, 200u) << state.body;
  EXPECT_EQ(state.body.find("sk-segma-"), std::string::npos) << "never a secret";
  const std::string version(Api::Obj(state).at("version").as_string());
  auto unchanged = gw.Get("/internal/gateway/state?timeout_s=1&version=" + version);
  EXPECT_EQ(unchanged.status, 304u);
  EXPECT_EQ(gw.Get("/internal/gateway/state?timeout_s=99").status, 400u);

  // A batch with one bad record is refused whole: nothing is written.
  json::object good{{"request_id", "r-1"}, {"time_ms", 1'800'000'000'000},
                    {"api_key_id", 1},     {"user_id", 1},
                    {"project_id", 1},     {"model", "chat"},
                    {"deployment_id", 1},  {"instance_id", 1},
                    {"prompt_tokens", 10}, {"completion_tokens", 5},
                    {"cached_tokens", 0},  {"ttft_ms", nullptr},
                    {"duration_ms", 12.5}, {"status", 200}};
  json::object bad = good;
  bad["request_id"] = "r-2";
  bad["prompt_tokens"] = -3;
  auto refused =
      gw.Post("/internal/gateway/usage", json::object{{"records", json::array{good, bad}}});
  EXPECT_EQ(refused.status, 400u) << refused.body;
  EXPECT_NE(refused.body.find("records[1]"), std::string::npos) << refused.body;
  EXPECT_EQ(gw.Post("/internal/gateway/usage", json::object{{"nope", 1}}).status, 400u);
  auto q = "/v2/usage?from=2026-01-01T00:00:00Z&to=2027-12-01T00:00:00Z";
  EXPECT_TRUE(Api::Obj(api_.Get(q)).at("items").as_array().empty()) << api_.Get(q).body;
  // Accepted, and a retried batch is not counted twice.
  for (int i = 0; i < 2; ++i) {
    auto ok = gw.Post("/internal/gateway/usage", json::object{{"records", json::array{good}}});
    EXPECT_EQ(ok.status, 200u) << ok.body;
  }
  auto items = Api::Obj(api_.Get(q)).at("items").as_array();
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].at("requests").as_int64(), 1);
  EXPECT_EQ(items[0].at("prompt_tokens").as_int64(), 10);

  // A replica with a wrong token stops with an error instead of serving stale nothing.
  auto bad_replica = StartReplica("segma_gw_wrong", FreePort());
  std::optional<int> rc = bad_replica->Wait(std::chrono::seconds(20));
  ASSERT_TRUE(rc.has_value());
  EXPECT_NE(*rc, 0);
  EXPECT_NE(bad_replica->Log().find("401"), std::string::npos) << bad_replica->Log();
}

}  // namespace
}  // namespace segma::testing
