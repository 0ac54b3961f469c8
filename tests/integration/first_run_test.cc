// `segma start` on a fresh data dir ends with the first-run demo: a project, a simulated chat
// model RUNNING on engine-sim and an API key, and prints a curl command that streams a chat
// completion through the gateway. The test runs that command as printed, restarts segma on the
// same data dir (same command, nothing duplicated) and checks the key file's mode. The admin's
// generated password must be changed before any other call.

#include <signal.h>

#include <filesystem>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

class FirstRunTest : public ::testing::Test {
 protected:
  void Start() {
    log_ = dir_.path() + "/start-" + std::to_string(++starts_) + ".log";
    server_ = std::make_unique<Process>(
        std::vector<std::string>{SegmaBinary(), "start", "--data-dir", data(), "--address",
                                 "127.0.0.1", "--port", std::to_string(port_), "--fake-gpus",
                                 "1xH100:80", "--heartbeat-interval", "0.2"},
        std::map<std::string, std::string>{}, log_);
  }

  // The curl command printed by the current start (empty until it appears).
  std::string PrintedCurl() {
    const std::string log = ReadFile(log_);
    const size_t at = log.find("\n  curl -N ");
    if (at == std::string::npos) return "";
    const size_t end = log.find('\n', at + 1);
    if (end == std::string::npos) return "";  // not complete yet
    return log.substr(at + 3, end - at - 3);
  }

  void TearDown() override {
    if (server_) server_->Signal(SIGKILL);
    KillEngines(data() + "/worker/engines");
  }

  static int64_t Total(const http::ClientResponse& r) {
    json::object o = Api::Obj(r);
    if (!o.contains("pagination")) return -1;
    return o.at("pagination").at("total").as_int64();
  }

  std::string data() const { return dir_.path() + "/data"; }

  TempDir dir_;
  uint16_t port_ = FreePort();
  int starts_ = 0;
  std::string log_;
  std::unique_ptr<Process> server_;
};

TEST_F(FirstRunTest, PrintedCurlStreamsThroughTheGatewayAndRestartsReuseTheDemo) {
  Start();
  std::string curl;
  ASSERT_TRUE(WaitUntil([&] { return !(curl = PrintedCurl()).empty(); }, std::chrono::seconds(90)))
      << server_->Log();
  EXPECT_NE(curl.find("sk-segma-"), std::string::npos) << curl;
  EXPECT_NE(server_->Log().find("RUNNING"), std::string::npos);

  // Run it exactly as printed, the way a user pastes it into a shell.
  const std::string out = dir_.path() + "/curl.out";
  ASSERT_EQ(std::system((curl + " -sS --fail-with-body > " + out + " 2>&1").c_str()), 0)
      << ReadFile(out);
  const std::string streamed = ReadFile(out);
  EXPECT_NE(streamed.find("data: {"), std::string::npos) << streamed;
  EXPECT_NE(streamed.find("\"delta\":{\"content\""), std::string::npos) << streamed;
  EXPECT_NE(streamed.find("data: [DONE]"), std::string::npos) << streamed;

  struct stat st {};
  ASSERT_EQ(::stat((data() + "/demo_api_key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // Restart on the same data dir: the same command, nothing created twice.
  server_->Signal(SIGTERM);
  ASSERT_TRUE(server_->Wait(std::chrono::seconds(30)).has_value());
  Start();
  std::string again;
  ASSERT_TRUE(WaitUntil([&] { return !(again = PrintedCurl()).empty(); }, std::chrono::seconds(90)))
      << server_->Log();
  EXPECT_EQ(again, curl);
  ASSERT_EQ(std::system((again + " -sS --fail-with-body > " + out + " 2>&1").c_str()), 0)
      << ReadFile(out);

  Api api{"http://127.0.0.1:" + std::to_string(port_), ""};
  std::string password = ReadFile(data() + "/initial_admin_password");
  password = password.substr(0, password.find('\n'));
  auto login =
      api.Post("/v2/auth/login", json::object{{"username", "admin"}, {"password", password}});
  ASSERT_EQ(login.status, 200u) << login.body;
  api.token = std::string(Api::Obj(login).at("token").as_string());
  // The generated password must be replaced before anything else (docs/security.md).
  auto refused = api.Get("/v2/projects");
  EXPECT_EQ(refused.status, 403u) << refused.body;
  EXPECT_NE(refused.body.find("password_change_required"), std::string::npos) << refused.body;
  auto changed = api.Post(
      "/v2/auth/change-password",
      json::object{{"old_password", password}, {"new_password", "first-run-admin-password"}});
  ASSERT_EQ(changed.status, 204u) << changed.body;
  EXPECT_FALSE(std::filesystem::exists(data() + "/initial_admin_password"));
  EXPECT_EQ(Total(api.Get("/v2/projects")), 1);
  EXPECT_EQ(Total(api.Get("/v2/models")), 1);
  EXPECT_EQ(Total(api.Get("/v2/api-keys")), 1);
  EXPECT_EQ(Total(api.Get("/v2/model-instances")), 1);

  // A lost secret is never replaced behind the user's back: the output says how to make a key.
  server_->Signal(SIGTERM);
  ASSERT_TRUE(server_->Wait(std::chrono::seconds(30)).has_value());
  std::filesystem::remove(data() + "/demo_api_key");
  Start();
  std::string placeholder;
  ASSERT_TRUE(
      WaitUntil([&] { return !(placeholder = PrintedCurl()).empty(); }, std::chrono::seconds(90)))
      << server_->Log();
  EXPECT_NE(placeholder.find("$SEGMA_API_KEY"), std::string::npos) << placeholder;
  EXPECT_NE(server_->Log().find("segma ctl api-keys create"), std::string::npos);
  EXPECT_EQ(Total(api.Get("/v2/api-keys")), 1);
}

}  // namespace
}  // namespace segma::testing
