// Loads a random-weight test model into llama.cpp's llama-server and runs one chat completion.
// Skipped when the llama-server binary has not been built.

#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <sys/wait.h>

#include "scheduler/estimate/test_model.h"
#include "scheduler/estimate/test_util.h"

extern char** environ;

namespace segma::estimate {
namespace {

std::string RunCommand(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

class LlamaServerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
  }
  pid_t pid_ = -1;
};

TEST_F(LlamaServerTest, TinyModelLoadsAndAnswers) {
  const std::filesystem::path server = testing::LlamaCppDir() / "build" / "bin" / "llama-server";
  if (!std::filesystem::exists(server)) GTEST_SKIP() << server << " not built";
  if (!std::filesystem::exists(testing::VocabPath())) GTEST_SKIP() << "no vocab file";
  const std::string model = ::testing::TempDir() + "/segma_tiny_server.gguf";
  ASSERT_TRUE(WriteTestModel({.path = model, .vocab_path = testing::VocabPath().string()}).ok());

  const std::string port = "18555";
  const std::string log = ::testing::TempDir() + "/segma_llama_server.log";
  std::vector<std::string> args = {
      server.string(), "-m",        model, "--port", port,         "-c", "256",
      "--host",        "127.0.0.1", "-t",  "2",      "--log-file", log};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ASSERT_EQ(posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ), 0);

  const std::string base = "http://127.0.0.1:" + port;
  std::string health;
  for (int i = 0; i < 240; ++i) {
    health = RunCommand("curl -s -m 2 " + base + "/health");
    if (health.find("\"ok\"") != std::string::npos) break;
    int status = 0;
    ASSERT_EQ(waitpid(pid_, &status, WNOHANG), 0) << "llama-server exited; see " << log;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ASSERT_NE(health.find("\"ok\""), std::string::npos) << health << "; see " << log;

  const std::string reply =
      RunCommand("curl -s -m 60 " + base +
                 "/v1/chat/completions -H 'Content-Type: application/json' -d "
                 "'{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":8}'");
  EXPECT_NE(reply.find("\"choices\""), std::string::npos) << reply;
  EXPECT_NE(reply.find("\"completion_tokens\":8"), std::string::npos) << reply;
}

}  // namespace
}  // namespace segma::estimate
