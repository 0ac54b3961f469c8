// The gateway's route table follows what it routes on (issue 17): an instance's state and port,
// its worker's state and address, models and model routes. A heartbeat that changes none of them
// (the GPUs' readings only) neither rebuilds the table nor bumps the version gateway replicas
// poll; a worker going NOT_READY and back, or an instance leaving RUNNING, does.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "api/api_server_test_base.h"

namespace segma::api {
namespace {

using boost::beast::http::verb;
using segma::testing::Api;

constexpr int64_t kGiB = int64_t{1} << 30;

// An 8-GPU status whose readings (utilisation, memory in use, temperature, power) depend on
// `beat`; the inventory (GPUs, their memory and links) is the same for every beat.
json::object StatusBody(int beat) {
  json::array gpus;
  for (int g = 0; g < 8; ++g) {
    json::object links;
    for (int p = 0; p < 8; ++p) {
      if (p != g) links[std::to_string(p)] = "nvlink";
    }
    gpus.push_back(json::object{{"index", g},
                                {"uuid", fmt::format("GPU-route-test-{}", g)},
                                {"name", "NVIDIA H200"},
                                {"memory_total", 141 * kGiB},
                                {"memory_used", (beat % 100 + 1) * kGiB},
                                {"utilization", beat % 100},
                                {"temperature", 30 + beat % 50},
                                {"power", 100 + beat % 500},
                                {"power_limit", 700},
                                {"links", std::move(links)}});
  }
  return json::object{{"status", json::object{{"cpu_count", 64},
                                              {"cpu_utilization", beat % 100},
                                              {"memory_total", 512 * kGiB},
                                              {"memory_used", (beat % 100 + 10) * kGiB},
                                              {"gpu_source", "nvml"},
                                              {"gpus", std::move(gpus)}}}};
}

class RouteUpdatesTest : public ApiServerTest {
 protected:
  void SetUp() override {
    ApiServerTest::SetUp();
    if (HasFatalFailure()) return;
    auto clusters = Api::Obj(admin_.Get("/v2/clusters"));
    const std::string reg(clusters.at("items").as_array()[0].at("registration_token").as_string());
    auto w = Api{base_, reg}.Post(
        "/v2/workers", json::object{{"name", "gpu-1"}, {"port", 10150}, {"address", "10.0.0.7"}});
    ASSERT_EQ(w.status, 201u) << w.body;
    worker_ = Api{base_, std::string(Api::Obj(w).at("token").as_string())};
    worker_id_ = Api::Obj(w).at("worker").at("id").as_int64();
    ASSERT_EQ(Heartbeat(0), "READY");

    auto m = admin_.Post(
        "/v2/models", json::object{{"name", "chat"},
                                   {"project_id", project_},
                                   {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                                   {"replicas", 1}});
    ASSERT_EQ(m.status, 201u) << m.body;
    ASSERT_TRUE(app_->RunControllersOnce().ok());  // creates the instance
    auto list = app_->store().ListModelInstances({});
    ASSERT_TRUE(list.ok());
    ASSERT_EQ(list->items.size(), 1u);
    instance_id_ = list->items[0].id;
    // Running on gpu-1, as its worker would report it.
    store::ModelInstancePatch run;
    run.state = types::InstanceState::kRunning;
    run.state_message = "";
    run.worker_id = worker_id_;
    run.worker_name = "gpu-1";
    run.gpu_indexes = std::vector<int>{0};
    run.port = 40001;
    ASSERT_TRUE(app_->store().UpdateModelInstance(instance_id_, run).ok());
    ASSERT_TRUE(app_->WaitForRouteUpdates());
  }

  // Sends heartbeat `beat`; returns the worker's state as answered ("" on an error).
  std::string Heartbeat(int beat) {
    auto r = worker_.Post("/v2/worker-heartbeat", StatusBody(beat));
    EXPECT_EQ(r.status, 200u) << r.body;
    if (r.status != 200u) return "";
    return std::string(Api::Obj(r).at("state").as_string());
  }

  // The replicas of public model "chat" in the gateway's table now.
  std::vector<gateway::Replica> Replicas() {
    std::vector<gateway::Replica> out;
    auto table = app_->gateway().routes();
    const gateway::ModelRoute* route = table ? table->Find("chat") : nullptr;
    if (route == nullptr) return out;
    for (const gateway::Deployment& d : route->deployments) {
      for (const gateway::Replica& r : d.replicas) out.push_back(r);
    }
    return out;
  }

  Api worker_;
  int64_t worker_id_ = 0;
  int64_t instance_id_ = 0;
};

TEST_F(RouteUpdatesTest, HeartbeatsWithNewReadingsOnlyLeaveTheTableAndItsVersionAlone) {
  std::vector<gateway::Replica> before = Replicas();
  ASSERT_EQ(before.size(), 1u);
  EXPECT_EQ(before[0].base_url, "http://10.0.0.7:40001");
  EXPECT_TRUE(before[0].healthy);
  const uint64_t version = app_->gateway().routes_version();
  const uint64_t rebuilds = app_->route_rebuilds();
  const std::shared_ptr<const gateway::RouteTable> table = app_->gateway().routes();

  for (int beat = 1; beat <= 5; ++beat) ASSERT_EQ(Heartbeat(beat), "READY");
  ASSERT_TRUE(app_->WaitForRouteUpdates());

  EXPECT_EQ(app_->route_rebuilds(), rebuilds);
  EXPECT_EQ(app_->gateway().routes_version(), version);
  // The readings themselves were stored, and the table is the same one.
  auto got = Api::Obj(admin_.Get(fmt::format("/v2/workers/{}", worker_id_)));
  EXPECT_EQ(got.at("status").at("gpus").as_array()[0].at("utilization").to_number<double>(), 5);
  EXPECT_EQ(app_->gateway().routes(), table);
}

TEST_F(RouteUpdatesTest, AWorkerGoingNotReadyAndBackIsFollowed) {
  const uint64_t version = app_->gateway().routes_version();
  // What the liveness controller does once the heartbeats stop.
  auto stale = app_->store().MarkStaleWorkersNotReady(
      SystemClock::Get().Now() + std::chrono::minutes(1), "no heartbeat for more than 60 s");
  ASSERT_TRUE(stale.ok());
  ASSERT_EQ(stale->size(), 1u);
  ASSERT_TRUE(app_->WaitForRouteUpdates());
  ASSERT_EQ(Replicas().size(), 1u);
  EXPECT_FALSE(Replicas()[0].healthy);
  const uint64_t not_ready = app_->gateway().routes_version();
  EXPECT_GT(not_ready, version);

  // The next heartbeat makes it READY again: a change, unlike the heartbeats after it.
  ASSERT_EQ(Heartbeat(1), "READY");
  ASSERT_TRUE(app_->WaitForRouteUpdates());
  ASSERT_EQ(Replicas().size(), 1u);
  EXPECT_TRUE(Replicas()[0].healthy);
  const uint64_t ready = app_->gateway().routes_version();
  EXPECT_GT(ready, not_ready);
  ASSERT_EQ(Heartbeat(2), "READY");
  ASSERT_TRUE(app_->WaitForRouteUpdates());
  EXPECT_EQ(app_->gateway().routes_version(), ready);
}

TEST_F(RouteUpdatesTest, MaintenanceIsFollowed) {
  const uint64_t version = app_->gateway().routes_version();
  auto r = admin_.Call(verb::patch, fmt::format("/v2/workers/{}", worker_id_),
                       json::object{{"maintenance", true}});
  ASSERT_EQ(r.status, 200u) << r.body;
  ASSERT_TRUE(app_->WaitForRouteUpdates());
  ASSERT_EQ(Replicas().size(), 1u);
  EXPECT_FALSE(Replicas()[0].healthy);
  EXPECT_GT(app_->gateway().routes_version(), version);
}

TEST_F(RouteUpdatesTest, AnInstanceChangingPortOrLeavingRunningIsFollowed) {
  const uint64_t version = app_->gateway().routes_version();
  const std::string path = fmt::format("/v2/worker/instances/{}", instance_id_);
  // The engine restarted on another port.
  auto moved = worker_.Call(verb::patch, path, json::object{{"port", 40002}});
  ASSERT_EQ(moved.status, 200u) << moved.body;
  ASSERT_TRUE(app_->WaitForRouteUpdates());
  ASSERT_EQ(Replicas().size(), 1u);
  EXPECT_EQ(Replicas()[0].base_url, "http://10.0.0.7:40002");
  const uint64_t moved_version = app_->gateway().routes_version();
  EXPECT_GT(moved_version, version);

  // Then it failed: no replica to route to.
  auto failed = worker_.Call(verb::patch, path,
                             json::object{{"state", "ERROR"}, {"state_message", "engine exited"}});
  ASSERT_EQ(failed.status, 200u) << failed.body;
  ASSERT_TRUE(app_->WaitForRouteUpdates());
  EXPECT_TRUE(Replicas().empty());
  EXPECT_GT(app_->gateway().routes_version(), moved_version);
}

}  // namespace
}  // namespace segma::api
