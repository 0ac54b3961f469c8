// The issue-2 flow with the real binaries on loopback: bootstrap → login → project → API key →
// separate `segma worker` processes with fake GPUs register → READY with their GPUs → a worker is
// killed → NOT_READY after the grace period. Plus: secrets never stored in plain text, bad input
// answered with JSON errors while the server keeps serving, /metrics accepted by promtool.

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

using boost::beast::http::verb;

constexpr char kAdminPassword[] = "integration-admin-pw";

class FoundationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    server_ = std::make_unique<Process>(
        std::vector<std::string>{SegmaBinary(), "server", "--data-dir", dir_.path() + "/server",
                                 "--address", "127.0.0.1", "--port", std::to_string(port_),
                                 "--heartbeat-grace", "2"},
        std::map<std::string, std::string>{{"SEGMA_BOOTSTRAP_PASSWORD", kAdminPassword}},
        dir_.path() + "/server.log");
    api_.base = "http://127.0.0.1:" + std::to_string(port_);
    ASSERT_TRUE(WaitUntil([&] { return api_.Get("/healthz").status == 200; },
                          std::chrono::seconds(30)))
        << server_->Log();
    auto login = api_.Post("/v2/auth/login",
                           json::object{{"username", "admin"}, {"password", kAdminPassword}});
    ASSERT_EQ(login.status, 200u) << login.body;
    api_.token = std::string(Api::Obj(login).at("token").as_string());
    const std::string cookies = login.Header("set-cookie");
    EXPECT_TRUE(cookies.starts_with("segma_session=" + api_.token + "; Path=/; HttpOnly"))
        << cookies;
    EXPECT_NE(cookies.find("segma_csrf="), std::string::npos) << cookies;
  }

  std::unique_ptr<Process> StartWorker(const std::string& name, const std::string& gpus) {
    auto clusters = Api::Obj(api_.Get("/v2/clusters"));
    std::string token(clusters.at("items").as_array()[0].at("registration_token").as_string());
    return std::make_unique<Process>(
        std::vector<std::string>{SegmaBinary(), "worker", "--server", api_.base, "--token", token,
                                 "--name", name, "--data-dir", dir_.path() + "/" + name,
                                 "--address", "127.0.0.1", "--port", "0", "--fake-gpus", gpus,
                                 "--heartbeat-interval", "0.2"},
        std::map<std::string, std::string>{}, dir_.path() + "/" + name + ".log");
  }

  std::string WorkerState(const std::string& name) {
    auto list = Api::Obj(api_.Get("/v2/workers"));
    if (!list.contains("items")) return "";
    for (const auto& w : list.at("items").as_array()) {
      if (w.at("name").as_string() == name) return std::string(w.at("state").as_string());
    }
    return "";
  }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> server_;
  Api api_;
};

TEST_F(FoundationTest, ProjectKeyWorkersGpusAndLiveness) {
  // A project and an API key whose secret is shown once.
  auto project = api_.Post("/v2/projects", json::object{{"name", "finance-ai"}});
  ASSERT_EQ(project.status, 201u) << project.body;
  const int64_t project_id = Api::Obj(project).at("id").as_int64();
  auto key = api_.Post("/v2/api-keys", json::object{{"name", "ci"},
                                                    {"project_id", project_id},
                                                    {"scope", "all"},
                                                    {"allowed_models", json::array{"chat"}},
                                                    {"expires_at", "2099-01-01T00:00:00Z"}});
  ASSERT_EQ(key.status, 201u) << key.body;
  const std::string secret(Api::Obj(key).at("secret").as_string());
  EXPECT_EQ(secret.rfind("sk-segma-", 0), 0u);
  auto keys = api_.Get("/v2/api-keys?project_id=" + std::to_string(project_id));
  EXPECT_EQ(keys.body.find(secret), std::string::npos) << "listing must not reveal the secret";
  EXPECT_NE(keys.body.find(secret.substr(0, 12)), std::string::npos) << "listing shows the prefix";

  // The key itself authenticates management calls.
  Api as_key{api_.base, secret};
  EXPECT_EQ(as_key.Get("/v2/projects").status, 200u);

  // Two workers with fake GPUs register and report every GPU.
  auto w1 = StartWorker("w1", "2xH200-NVL:141");
  auto w2 = StartWorker("w2", "1xRTX-PRO-6000:96");
  ASSERT_TRUE(WaitUntil([&] { return WorkerState("w1") == "READY" && WorkerState("w2") == "READY"; },
                        std::chrono::seconds(30)))
      << w1->Log() << w2->Log() << server_->Log();
  auto gpus = Api::Obj(api_.Get("/v2/gpus"));
  ASSERT_EQ(gpus.at("pagination").at("total").as_int64(), 3) << json::serialize(gpus);
  int h200 = 0, rtx = 0;
  for (const auto& g : gpus.at("items").as_array()) {
    const std::string name(g.at("name").as_string());
    if (name == "NVIDIA H200 NVL") {
      ++h200;
      EXPECT_EQ(g.at("worker_name").as_string(), "w1");
      EXPECT_EQ(g.at("memory_total").as_int64(), 141LL << 30);
    }
    if (name == "NVIDIA RTX PRO 6000") ++rtx;
  }
  EXPECT_EQ(h200, 2);
  EXPECT_EQ(rtx, 1);

  // The worker dies: NOT_READY only after the grace period; the other stays READY.
  const auto killed_at = std::chrono::steady_clock::now();
  w1->Signal(SIGKILL);
  w1->Wait(std::chrono::seconds(5));
  ASSERT_TRUE(WaitUntil([&] { return WorkerState("w1") == "NOT_READY"; }, std::chrono::seconds(20)));
  EXPECT_GE(std::chrono::steady_clock::now() - killed_at, std::chrono::milliseconds(1500));
  EXPECT_EQ(WorkerState("w2"), "READY");

  // Secrets are not stored in plain text anywhere in the data directory.
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(dir_.path() + "/server")) {
    if (!entry.is_regular_file()) continue;
    const std::string content = ReadFile(entry.path());
    EXPECT_EQ(content.find(secret), std::string::npos) << entry.path();
    EXPECT_EQ(content.find(kAdminPassword), std::string::npos) << entry.path();
  }
}

TEST_F(FoundationTest, WatchStreamsWorkerEvents) {
  std::vector<std::string> events;
  std::thread watcher([&] {
    http::ClientRequest req;
    req.url = api_.base + "/v2/workers?watch=true";
    req.Bearer(api_.token);
    req.timeout = std::chrono::seconds(15);
    std::string buffer;
    (void)http::StreamSync(std::move(req), [&](std::string_view data) {
      buffer.append(data);
      // Stop once a READY update for our worker arrived.
      return buffer.find("\"state\":\"READY\"") == std::string::npos;
    });
    events.push_back(buffer);
  });
  auto w = StartWorker("watched", "1xH100:80");
  watcher.join();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_NE(events[0].find("data: {\"type\":\"CREATED\""), std::string::npos) << events[0];
  EXPECT_NE(events[0].find("\"name\":\"watched\""), std::string::npos) << events[0];
}

TEST_F(FoundationTest, BadInputGetsJsonErrorsAndNothingIsHalfWritten) {
  struct Case {
    verb method;
    std::string path;
    std::string body;
    unsigned want;
    std::vector<std::pair<std::string, std::string>> headers;
  };
  std::string huge(20 * 1024 * 1024, 'x');
  const std::vector<Case> cases = {
      {verb::post, "/v2/projects", "{not json", 400, {}},
      {verb::post, "/v2/projects", "[1,2]", 400, {}},
      {verb::post, "/v2/projects", R"({"name":42})", 400, {}},
      {verb::post, "/v2/projects", R"({"name":"ok","colour":"red"})", 400, {}},
      {verb::post, "/v2/projects", R"({"name":"../../etc/passwd"})", 400, {}},
      {verb::post, "/v2/projects", R"({"name":"x'; DROP TABLE projects;--"})", 400, {}},
      {verb::post, "/v2/projects", R"({"name":"p","max_gpus":-1})", 400, {}},
      {verb::post, "/v2/api-keys", R"({"name":"k","project_id":999})", 404, {}},
      {verb::post, "/v2/api-keys", R"({"name":"k","project_id":"1"})", 400, {}},
      {verb::get, "/v2/projects/abc", "", 400, {}},
      {verb::get, "/v2/projects/..%2f..%2fetc", "", 400, {}},
      {verb::get, "/v2/users?sort=name;DROP%20TABLE%20users", "", 400, {}},
      {verb::get, "/v2/nothing-here", "", 404, {}},
      {verb::put, "/v2/projects", "", 405, {}},
      {verb::post, "/v2/projects", huge, 413, {}},
      {verb::get, "/v2/projects", "", 431, {{"X-Big", std::string(40 * 1024, 'a')}}},
      {verb::get, "/v2/projects", "", 401, {{"Authorization", "Bearer segma_st.1.99999999999999.forged"}}},
      {verb::get, "/v2/projects", "", 401, {{"Authorization", "Bearer sk-segma-unknownkey"}}},
  };
  for (const Case& c : cases) {
    http::ClientRequest req;
    req.method = c.method;
    req.url = api_.base + c.path;
    bool has_auth = false;
    for (const auto& h : c.headers) has_auth |= h.first == "Authorization";
    if (!has_auth) req.Bearer(api_.token);
    for (const auto& h : c.headers) req.headers.push_back(h);
    req.body = c.body;
    if (!c.body.empty()) req.headers.emplace_back("Content-Type", "application/json");
    Result<http::ClientResponse> r = http::FetchSync(std::move(req));
    ASSERT_TRUE(r.ok()) << c.path << ": " << r.status().ToString();
    EXPECT_EQ(r->status, c.want) << c.path << " " << c.body.substr(0, 80) << " → " << r->body;
    auto body = Api::Obj(*r);
    ASSERT_TRUE(body.contains("error")) << c.path << ": " << r->body.substr(0, 200);
    EXPECT_TRUE(body.at("error").as_object().contains("code"));
    EXPECT_TRUE(body.at("error").as_object().contains("message"));
  }
  // Still serving, and none of the bad requests created anything.
  EXPECT_EQ(api_.Get("/healthz").status, 200u);
  auto projects = Api::Obj(api_.Get("/v2/projects"));
  EXPECT_EQ(projects.at("pagination").at("total").as_int64(), 0) << json::serialize(projects);
  auto keys = Api::Obj(api_.Get("/v2/api-keys"));
  EXPECT_EQ(keys.at("pagination").at("total").as_int64(), 0);
}

TEST_F(FoundationTest, ExpiredAndRevokedKeysAreRefused) {
  auto project = api_.Post("/v2/projects", json::object{{"name", "p"}});
  const int64_t pid = Api::Obj(project).at("id").as_int64();
  auto past = api_.Post("/v2/api-keys", json::object{{"name", "old"},
                                                     {"project_id", pid},
                                                     {"expires_at", "2001-01-01T00:00:00Z"}});
  EXPECT_EQ(past.status, 400u) << "a key cannot be created already expired";

  auto key = api_.Post("/v2/api-keys",
                       json::object{{"name", "k"}, {"project_id", pid}, {"scope", "management"}});
  ASSERT_EQ(key.status, 201u);
  const std::string secret(Api::Obj(key).at("secret").as_string());
  Api as_key{api_.base, secret};
  EXPECT_EQ(as_key.Get("/v2/projects").status, 200u);
  auto revoke = api_.Call(verb::delete_, "/v2/api-keys/" +
                                             std::to_string(Api::Obj(key).at("id").as_int64()));
  EXPECT_EQ(revoke.status, 200u) << revoke.body;
  auto refused = as_key.Get("/v2/projects");
  EXPECT_EQ(refused.status, 401u);
  EXPECT_NE(refused.body.find("revoked"), std::string::npos) << refused.body;

  // Logout revokes the session token.
  EXPECT_EQ(api_.Post("/v2/auth/logout", json::object{}).status, 204u);
  EXPECT_EQ(api_.Get("/v2/projects").status, 401u);
}

TEST_F(FoundationTest, MetricsPassPromtool) {
  ASSERT_EQ(api_.Get("/v2/projects").status, 200u);
  auto metrics = api_.Get("/metrics");
  ASSERT_EQ(metrics.status, 200u);
  EXPECT_NE(metrics.body.find("segma_http_requests_total"), std::string::npos);
  if (!std::filesystem::exists("/usr/bin/promtool")) GTEST_SKIP() << "promtool not installed";
  const std::string file = dir_.path() + "/metrics.txt";
  { std::ofstream(file) << metrics.body; }
  const std::string cmd = "promtool check metrics < " + file + " > " + dir_.path() +
                          "/promtool.out 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << ReadFile(dir_.path() + "/promtool.out");
}

}  // namespace
}  // namespace segma::testing
