// OpenAI's own Node SDK (npm `openai`, scripts/install-openai-sdk) and curl against the real
// stack: `segma start` with its embedded worker running two `segma engine-sim` engines (one
// deployment of the public model "chat" in each of two projects), and a key limited to one request
// a minute through the API for the SDK's RateLimitError. The checks live in
// openai_sdk/client.cjs; this test starts the stack, hands the script its keys, and afterwards
// compares the usage rows of each project with the tokens the engine reported to the client.
// Skipped when node or the SDK is missing (scripts/test-deps installs it).

#include <signal.h>

#include <cstdio>
#include <filesystem>

#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

using boost::beast::http::verb;

std::string SourceDir() {
  const char* dir = std::getenv("SEGMA_SOURCE_DIR");
  return dir != nullptr ? dir : SEGMA_DEFAULT_SOURCE_DIR;
}

// The SDK's node_modules directory, or "" when it is not installed (never downloads here: the
// script only installs when missing, and we ask it to fail rather than reach the network).
std::string SdkModules() {
  const std::string cmd =
      "npm_config_offline=true " + SourceDir() + "/scripts/install-openai-sdk 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return "";
  char buf[4096];
  std::string out;
  while (size_t n = std::fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  if (::pclose(p) != 0) return "";
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

class OpenAiSdkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::system("command -v node >/dev/null 2>&1") != 0) GTEST_SKIP() << "node not found";
    modules_ = SdkModules();
    if (modules_.empty()) GTEST_SKIP() << "npm openai not installed: run scripts/test-deps";
    port_ = FreePort();
    server_ = std::make_unique<Process>(
        std::vector<std::string>{SegmaBinary(), "start", "--no-demo", "--data-dir",
                                 dir_.path() + "/data", "--address", "127.0.0.1", "--port",
                                 std::to_string(port_), "--fake-gpus", "1xH100:80",
                                 "--heartbeat-interval", "0.2"},
        std::map<std::string, std::string>{{"SEGMA_BOOTSTRAP_PASSWORD", "sdk-admin-pw"}},
        dir_.path() + "/server.log");
    api_.base = "http://127.0.0.1:" + std::to_string(port_);
    ASSERT_TRUE(
        WaitUntil([&] { return api_.Get("/healthz").status == 200; }, std::chrono::seconds(30)));
    auto login = api_.Post("/v2/auth/login",
                           json::object{{"username", "admin"}, {"password", "sdk-admin-pw"}});
    ASSERT_EQ(login.status, 200u) << login.body;
    api_.token = std::string(Api::Obj(login).at("token").as_string());
  }

  void TearDown() override {
    if (!server_) return;
    // Stop the engines (their own process groups) before the server goes.
    for (int64_t id : models_) {
      api_.Call(verb::patch, "/v2/models/" + std::to_string(id), json::object{{"replicas", 0}});
    }
    for (int64_t id : models_) {
      WaitUntil([&] { return Instance(id).empty(); }, std::chrono::seconds(20));
    }
    server_->Signal(SIGKILL);
  }

  int64_t Project(const std::string& name) {
    auto p = api_.Post("/v2/projects", json::object{{"name", name}});
    EXPECT_EQ(p.status, 201u) << p.body;
    return Api::Obj(p).at("id").as_int64();
  }

  int64_t Model(const std::string& name, int64_t project, int replicas) {
    auto m = api_.Post(
        "/v2/models", json::object{{"name", name},
                                   {"project_id", project},
                                   {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                                   {"replicas", replicas}});
    EXPECT_EQ(m.status, 201u) << m.body;
    const int64_t id = Api::Obj(m).at("id").as_int64();
    models_.push_back(id);
    return id;
  }

  std::string Key(int64_t project, const std::string& name, json::object extra = {}) {
    extra["name"] = name;
    extra["project_id"] = project;
    extra["scope"] = "inference";
    auto k = api_.Post("/v2/api-keys", extra);
    EXPECT_EQ(k.status, 201u) << k.body;
    return std::string(Api::Obj(k).at("secret").as_string());
  }

  json::object Instance(int64_t model_id) { return FirstInstance(api_, model_id); }

  bool Running(int64_t model_id) {
    json::object i = Instance(model_id);
    return i.contains("state") && i.at("state").as_string() == "RUNNING";
  }

  // prompt + completion tokens metered for the project so far (0 before its first row).
  int64_t MeteredTokens(int64_t project) {
    auto u = Api::Obj(api_.Get("/v2/usage?project_id=" + std::to_string(project)));
    if (!u.contains("items") || u.at("items").as_array().empty()) return 0;
    const json::object& row = u.at("items").as_array()[0].as_object();
    return row.at("prompt_tokens").as_int64() + row.at("completion_tokens").as_int64();
  }

  // Sends a chat through the gateway until the route has its replica; returns the tokens the
  // engine reported for the successful request.
  int64_t WarmUp(const std::string& key) {
    Api gw{api_.base, key};
    int64_t tokens = -1;
    EXPECT_TRUE(WaitUntil(
        [&] {
          auto r = gw.Post(
              "/v1/chat/completions",
              json::object{{"model", "chat"},
                           {"max_tokens", 1},
                           {"messages",
                            json::array{json::object{{"role", "user"}, {"content", "warm up"}}}}});
          if (r.status != 200) return false;
          const json::object body = Api::Obj(r);
          const json::object& u = body.at("usage").as_object();
          tokens = u.at("prompt_tokens").as_int64() + u.at("completion_tokens").as_int64();
          return true;
        },
        std::chrono::seconds(20)));
    return tokens;
  }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> server_;
  Api api_;
  std::string modules_;
  std::vector<int64_t> models_;
};

TEST_F(OpenAiSdkTest, OfficialNodeClientAndCurlWorkUnchanged) {
  const int64_t a = Project("sdk-a");
  const int64_t b = Project("sdk-b");
  const int64_t chat_a = Model("chat", a, 1);
  const int64_t chat_b = Model("chat", b, 1);
  Model("b-only", b, 0);  // listed for project B's keys, never for A's
  const std::string key_a = Key(a, "app-a");
  const std::string key_b = Key(b, "app-b");
  const std::string narrow = Key(a, "narrow", {{"allowed_models", json::array{"b-only"}}});
  // Limited through the API (ADR 0013): the SDK's RateLimitError check runs with it.
  const std::string limited =
      Key(a, "limited", {{"limits", json::object{{"requests_per_minute", 1}}}});
  ASSERT_TRUE(
      WaitUntil([&] { return Running(chat_a) && Running(chat_b); }, std::chrono::seconds(60)))
      << server_->Log();

  // Warm-up requests make sure both routes have their replica; their usage is the baseline.
  const int64_t warm_a = WarmUp(key_a);
  const int64_t warm_b = WarmUp(key_b);
  ASSERT_GT(warm_a, 0);
  ASSERT_GT(warm_b, 0);
  ASSERT_TRUE(WaitUntil([&] { return MeteredTokens(a) == warm_a && MeteredTokens(b) == warm_b; },
                        std::chrono::seconds(10)))
      << api_.Get("/v2/usage?group_by=project").body;

  const std::string result = dir_.path() + "/result.json";
  Process node({"/usr/bin/env", "node", SourceDir() + "/tests/integration/openai_sdk/client.cjs"},
               {{"NODE_PATH", modules_},
                {"SEGMA_GATEWAY", api_.base},
                {"SEGMA_ENGINE",
                 "http://127.0.0.1:" + std::to_string(Instance(chat_a).at("port").as_int64())},
                {"SEGMA_ENGINE_KEY", EngineSecret(dir_.path() + "/data/worker/engines",
                                                  Instance(chat_a).at("id").as_int64())},
                {"SEGMA_KEY_A", key_a},
                {"SEGMA_KEY_B", key_b},
                {"SEGMA_KEY_NARROW", narrow},
                {"SEGMA_KEY_LIMITED", limited},
                {"SEGMA_RESULT", result}},
               dir_.path() + "/node.log");
  std::optional<int> rc = node.Wait(std::chrono::seconds(120));
  ASSERT_TRUE(rc.has_value()) << "node timed out:\n" << node.Log();
  EXPECT_EQ(*rc, 0) << node.Log() << server_->Log();
  std::printf("%s", node.Log().c_str());

  // Usage rows match what the engine reported, per project, to the token.
  auto reported = ParseJson(ReadFile(result));
  ASSERT_TRUE(reported.ok() && reported->is_object()) << ReadFile(result);
  // The stream the client cancelled is billed for the tokens sent before it left (docs/api.md,
  // group_by=finish): at least the two chunks it read, at most its max_tokens.
  int64_t cut_a = -1;
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto u = Api::Obj(api_.Get("/v2/usage?group_by=finish&project_id=" + std::to_string(a)));
        for (const json::value& row : u.at("items").as_array()) {
          if (row.at("finish").as_string() != "client_disconnected") continue;
          if (row.at("requests").as_int64() != 1) return false;
          cut_a = row.at("completion_tokens").as_int64() + row.at("prompt_tokens").as_int64();
          return true;
        }
        return false;
      },
      std::chrono::seconds(10)))
      << api_.Get("/v2/usage?group_by=finish").body;
  EXPECT_GE(cut_a, 1);
  EXPECT_LE(cut_a, 200);
  const int64_t want_a = warm_a + reported->at("tokens").at("A").to_number<int64_t>() + cut_a;
  const int64_t want_b = warm_b + reported->at("tokens").at("B").to_number<int64_t>();
  EXPECT_TRUE(WaitUntil([&] { return MeteredTokens(a) == want_a && MeteredTokens(b) == want_b; },
                        std::chrono::seconds(10)))
      << "project A metered " << MeteredTokens(a) << " want " << want_a << "; project B metered "
      << MeteredTokens(b) << " want " << want_b << "\n"
      << api_.Get("/v2/usage?group_by=key").body;
}

}  // namespace
}  // namespace segma::testing
