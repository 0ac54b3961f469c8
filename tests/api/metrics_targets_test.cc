#include "api/metrics_targets.h"

#include <fstream>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "integration/harness.h"

namespace segma::api {
namespace {

types::Worker Worker(int64_t id, std::string name, std::string address, int port) {
  types::Worker w;
  w.id = id;
  w.name = std::move(name);
  w.address = std::move(address);
  w.port = port;
  return w;
}

types::ModelInstance Instance(int64_t id, int64_t model, int64_t worker, types::InstanceState s,
                              int port) {
  types::ModelInstance i;
  i.id = id;
  i.model_id = model;
  i.project_id = 3;
  i.worker_id = worker;
  i.name = "chat-" + std::to_string(id);
  i.state = s;
  i.port = port;
  return i;
}

TEST(MetricsTargetsTest, ListsServerWorkersAndRunningEnginesWithTheirLabels) {
  types::Model chat;
  chat.id = 7;
  chat.name = "chat";
  chat.backend = "vllm";
  const json::array targets = MetricsTargets(
      "segma.internal:8080",
      {Worker(1, "gpu-1", "10.0.0.1", 10150), Worker(2, "registering", "10.0.0.2", 0)},
      {Instance(11, 7, 1, types::InstanceState::kRunning, 40001),
       Instance(12, 7, 1, types::InstanceState::kStarting, 40002),
       Instance(13, 99, 1, types::InstanceState::kRunning, 40003),  // model gone
       Instance(14, 7, 5, types::InstanceState::kRunning, 40004)},  // worker gone
      {{7, chat}});
  EXPECT_EQ(json::serialize(targets),
            R"([{"targets":["segma.internal:8080"],"labels":{"segma_role":"server"}},)"
            R"({"targets":["10.0.0.1:10150"],"labels":{"segma_role":"worker","worker":"gpu-1",)"
            R"("worker_id":"1"}},{"targets":["10.0.0.1:40001"],"labels":{"segma_role":"engine",)"
            R"("worker":"gpu-1","deployment":"chat","instance":"chat-11","project":"3",)"
            R"("backend":"vllm"}}])");
}

TEST(MetricsTargetsTest, TheTokenIsCreatedOncePrivateAndReadFromAChosenFile) {
  testing::TempDir dir;
  Result<std::string> token = LoadMetricsToken(dir.path(), "");
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_TRUE(token->starts_with("segma_mt_"));
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() + "/metrics_token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  EXPECT_EQ(LoadMetricsToken(dir.path(), "").value(), *token);  // the same on the next start

  const std::string chosen = dir.path() + "/prometheus-token";
  std::ofstream(chosen) << "a-token-chosen-by-the-admin\n";
  ::chmod(chosen.c_str(), 0600);
  EXPECT_EQ(LoadMetricsToken(dir.path(), chosen).value(), "a-token-chosen-by-the-admin");
  ::chmod(chosen.c_str(), 0644);
  EXPECT_EQ(LoadMetricsToken(dir.path(), chosen).status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace segma::api
