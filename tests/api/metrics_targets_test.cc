#include "api/metrics_targets.h"

#include <fstream>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "common/clock.h"
#include "common/event_bus.h"
#include "integration/harness.h"
#include "store/sqlite/sqlite_store.h"

namespace segma::api {
namespace {

// The store's scrape targets (SQLite, in memory) rendered as the http_sd document: the server,
// workers with a port, and only the engines of RUNNING instances on known workers.
TEST(MetricsTargetsTest, ListsServerWorkersAndRunningEnginesWithTheirLabels) {
  EventBus bus;
  auto store = store::OpenSqliteStore(":memory:", bus, SystemClock::Get()).value();
  types::Cluster c;
  c.name = "default";
  c.is_default = true;
  c.registration_token = "t";
  const int64_t cluster = store->CreateCluster(c).value().id;
  types::Project p;
  p.name = "p";
  const int64_t project = store->CreateProject(p).value().id;
  types::Model chat;
  chat.name = "chat";
  chat.project_id = project;
  chat.backend = "vllm";
  chat.source.type = types::SourceType::kSimulated;
  chat.source.params_b = 8;
  const int64_t model = store->CreateModel(chat).value().id;
  const types::Worker gpu1 =
      store->UpsertWorkerByName(cluster, "gpu-1", "10.0.0.1", 10150, "h1", {}).value();
  const types::Worker registering =
      store->UpsertWorkerByName(cluster, "registering", "10.0.0.2", 0, "h2", {}).value();
  auto instance = [&](const std::string& name, int64_t worker, types::InstanceState s, int port) {
    types::ModelInstance i;
    i.model_id = model;
    i.project_id = project;
    i.name = name;
    i.state = s;
    i.worker_id = worker;
    i.port = port;
    return store->CreateModelInstance(i).value().id;
  };
  instance("chat-running", gpu1.id, types::InstanceState::kRunning, 40001);
  instance("chat-starting", gpu1.id, types::InstanceState::kStarting, 40002);
  instance("chat-no-port", gpu1.id, types::InstanceState::kRunning, 0);
  instance("chat-worker-gone", 999, types::InstanceState::kRunning, 40004);
  (void)registering;

  const json::array targets =
      MetricsTargets("segma.internal:8080", store->ListScrapeTargets().value());
  EXPECT_EQ(json::serialize(targets),
            R"([{"targets":["segma.internal:8080"],"labels":{"segma_role":"server"}},)"
            R"({"targets":["10.0.0.1:10150"],"labels":{"segma_role":"worker","worker":"gpu-1",)"
            R"("worker_id":")" +
                std::to_string(gpu1.id) +
                R"("}},{"targets":["10.0.0.1:40001"],"labels":{"segma_role":"engine",)"
                R"("worker":"gpu-1","deployment":"chat","instance":"chat-running","project":")" +
                std::to_string(project) + R"(","backend":"vllm"}}])");
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
