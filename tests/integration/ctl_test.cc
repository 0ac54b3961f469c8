// `segma ctl` against a real server: login, projects, api-keys, workers, gpus; table and JSON.

#include <stdio.h>

#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

class CtlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    server_ = std::make_unique<Process>(
        std::vector<std::string>{SegmaBinary(), "start", "--no-demo", "--data-dir",
                                 dir_.path() + "/data", "--address", "127.0.0.1", "--port",
                                 std::to_string(port_), "--fake-gpus", "2xH100:80",
                                 "--heartbeat-interval", "0.2"},
        std::map<std::string, std::string>{{"SEGMA_BOOTSTRAP_PASSWORD", "ctl-admin-password"}},
        dir_.path() + "/server.log");
    Api api{"http://127.0.0.1:" + std::to_string(port_), ""};
    ASSERT_TRUE(
        WaitUntil([&] { return api.Get("/healthz").status == 200; }, std::chrono::seconds(30)));
  }

  // Runs `segma ctl ARGS` with its own HOME; returns exit status and output.
  std::pair<int, std::string> Ctl(const std::string& args) {
    const std::string cmd = "HOME=" + dir_.path() +
                            " SEGMA_SERVER=http://127.0.0.1:" + std::to_string(port_) + " " +
                            SegmaBinary() + " ctl " + args + " 2>&1";
    FILE* pipe = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
    int status = ::pclose(pipe);
    return {WEXITSTATUS(status), out};
  }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> server_;
};

TEST_F(CtlTest, LoginProjectKeyAndPool) {
  auto [rc, out] = Ctl("login --username admin --password wrong-password");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("invalid username or password"), std::string::npos) << out;

  std::tie(rc, out) = Ctl("login --username admin --password ctl-admin-password");
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) = Ctl("projects create --name finance-ai");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("finance-ai"), std::string::npos);
  std::tie(rc, out) =
      Ctl("-o json api-keys create --name ci --project 1 --scope all --models chat,embed");
  ASSERT_EQ(rc, 0) << out;
  auto key = ParseJson(out);
  ASSERT_TRUE(key.ok()) << out;
  const std::string secret(key->at("secret").as_string());
  EXPECT_EQ(secret.rfind("sk-segma-", 0), 0u);
  std::tie(rc, out) = Ctl("api-keys list");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("PREFIX"), std::string::npos) << out;
  EXPECT_EQ(out.find(secret), std::string::npos) << "the secret is shown once";

  ASSERT_TRUE(
      WaitUntil([&] { return Ctl("workers list").second.find("READY") != std::string::npos; },
                std::chrono::seconds(20)));
  std::tie(rc, out) = Ctl("-o json gpus list");
  ASSERT_EQ(rc, 0) << out;
  auto gpus = ParseJson(out);
  ASSERT_TRUE(gpus.ok()) << out;
  EXPECT_EQ(gpus->at("pagination").at("total").as_int64(), 2);

  // The key works as a bearer token for the CLI too.
  std::tie(rc, out) = Ctl("--token " + secret + " projects list");
  EXPECT_EQ(rc, 0) << out;
  std::tie(rc, out) = Ctl("--token " + secret + " users list");
  EXPECT_EQ(rc, 1) << "an API key never carries admin powers: " << out;
}

}  // namespace
}  // namespace segma::testing
