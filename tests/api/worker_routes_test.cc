// The worker routes for an instance split across workers (ADR 0014): a subordinate lists the
// instances it serves a distributed server for, and its reports change only its own
// distributed_servers entry, never the main worker's fields.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "api/api_server_test_base.h"

namespace segma::api {
namespace {

using boost::beast::http::verb;
using segma::testing::Api;

class WorkerRoutesTest : public ApiServerTest {
 protected:
  void SetUp() override {
    ApiServerTest::SetUp();
    if (HasFatalFailure()) return;
    auto clusters = Api::Obj(admin_.Get("/v2/clusters"));
    const std::string reg(clusters.at("items").as_array()[0].at("registration_token").as_string());
    Api reg_api{base_, reg};
    for (const char* name : {"worker-a", "worker-b", "worker-c"}) {
      auto w =
          reg_api.Post("/v2/workers", json::object{{"name", name},
                                                   {"port", 10150},
                                                   {"address", std::string("10.0.0.") + name[7]}});
      ASSERT_EQ(w.status, 201u) << w.body;
      workers_.push_back(Api{base_, std::string(Api::Obj(w).at("token").as_string())});
      worker_ids_.push_back(Api::Obj(w).at("worker").at("id").as_int64());
    }
    auto m = admin_.Post(
        "/v2/models", json::object{{"name", "split"},
                                   {"project_id", project_},
                                   {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                                   {"replicas", 1}});
    ASSERT_EQ(m.status, 201u) << m.body;
    ASSERT_TRUE(app_->RunControllersOnce().ok());  // creates the instance
    auto list = app_->store().ListModelInstances({});
    ASSERT_TRUE(list.ok());
    ASSERT_EQ(list->items.size(), 1u);
    instance_id_ = list->items[0].id;
    // Placed by hand: main worker a, a distributed server on b.
    store::ModelInstancePatch place;
    place.state = types::InstanceState::kScheduled;
    place.state_message = "";
    place.worker_id = worker_ids_[0];
    place.worker_name = "worker-a";
    place.gpu_indexes = std::vector<int>{0};
    types::DistributedServer d;
    d.worker_id = worker_ids_[1];
    d.worker_name = "worker-b";
    d.gpu_indexes = {0};
    place.distributed_servers = std::vector<types::DistributedServer>{d};
    ASSERT_TRUE(app_->store().UpdateModelInstance(instance_id_, place).ok());
  }

  std::string InstancePath() const { return fmt::format("/v2/worker/instances/{}", instance_id_); }
  int64_t FirstModelId() { return app_->store().GetModelInstance(instance_id_)->model_id; }

  std::vector<Api> workers_;
  std::vector<int64_t> worker_ids_;
  int64_t instance_id_ = 0;
};

TEST_F(WorkerRoutesTest, SubordinateListsAndReportsOnlyItsOwnEntry) {
  const Api& a = workers_[0];
  const Api& b = workers_[1];
  const Api& c = workers_[2];
  auto listed = b.Get(fmt::format("/v2/worker/instances?distributed_worker_id={}", worker_ids_[1]));
  ASSERT_EQ(listed.status, 200u) << listed.body;
  ASSERT_EQ(Api::Obj(listed).at("items").as_array().size(), 1u);
  // The main worker is not a distributed server of it.
  auto not_server =
      a.Get(fmt::format("/v2/worker/instances?distributed_worker_id={}", worker_ids_[0]));
  ASSERT_EQ(not_server.status, 200u);
  EXPECT_TRUE(Api::Obj(not_server).at("items").as_array().empty());
  // Exactly one filter, and only one's own id.
  EXPECT_EQ(b.Get(fmt::format("/v2/worker/instances?worker_id={0}&distributed_worker_id={0}",
                              worker_ids_[1]))
                .status,
            400u);
  EXPECT_EQ(b.Get("/v2/worker/instances").status, 400u);
  EXPECT_EQ(
      b.Get(fmt::format("/v2/worker/instances?distributed_worker_id={}", worker_ids_[0])).status,
      403u);

  // The main worker reports its own state and port.
  auto own = a.Call(verb::patch, InstancePath(),
                    json::object{{"state", "STARTING"},
                                 {"state_message", "waiting for rpc server on worker-b"},
                                 {"port", 40001}});
  ASSERT_EQ(own.status, 200u) << own.body;

  // The subordinate's report lands in its entry only, with its registered address.
  auto report = b.Call(
      verb::patch, InstancePath(),
      json::object{
          {"state", "RUNNING"}, {"state_message", ""}, {"port", 40123}, {"restart_count", 2}});
  ASSERT_EQ(report.status, 200u) << report.body;
  Result<types::ModelInstance> inst = app_->store().GetModelInstance(instance_id_);
  ASSERT_TRUE(inst.ok());
  EXPECT_EQ(inst->state, types::InstanceState::kStarting);
  EXPECT_EQ(inst->state_message, "waiting for rpc server on worker-b");
  EXPECT_EQ(inst->port, 40001);
  EXPECT_EQ(inst->restart_count, 0);
  ASSERT_EQ(inst->distributed_servers.size(), 1u);
  const types::DistributedServer& d = inst->distributed_servers[0];
  EXPECT_EQ(d.worker_name, "worker-b");
  EXPECT_EQ(d.address, "10.0.0.b");
  EXPECT_EQ(d.port, 40123);
  EXPECT_EQ(d.state, "RUNNING");
  EXPECT_EQ(d.restart_count, 2);
  EXPECT_EQ(d.gpu_indexes, std::vector<int>{0});
  // The same in the public view.
  auto view = Api::Obj(admin_.Get(fmt::format("/v2/model-instances/{}", instance_id_)));
  const json::object& entry = view.at("distributed_servers").as_array()[0].as_object();
  EXPECT_EQ(entry.at("port").as_int64(), 40123);
  EXPECT_EQ(entry.at("address").as_string(), "10.0.0.b");
  EXPECT_EQ(entry.at("state").as_string(), "RUNNING");

  // Bad reports change nothing.
  EXPECT_EQ(b.Call(verb::patch, InstancePath(), json::object{{"state", "DOWNLOADING"}}).status,
            400u);
  EXPECT_EQ(b.Call(verb::patch, InstancePath(), json::object{{"port", 70000}}).status, 400u);
  EXPECT_EQ(b.Call(verb::patch, InstancePath(), json::object{{"address", "1.2.3.4"}}).status, 400u);
  EXPECT_EQ(c.Call(verb::patch, InstancePath(), json::object{{"state", "RUNNING"}}).status, 404u);
  EXPECT_EQ(*app_->store().GetModelInstance(instance_id_), *inst);

  // Once the instance has moved on (rescheduled), a late report is refused.
  store::ModelInstancePatch back;
  back.ClearPlacement();
  back.state = types::InstanceState::kPending;
  ASSERT_TRUE(app_->store().UpdateModelInstance(instance_id_, back).ok());
  auto late = b.Call(verb::patch, InstancePath(), json::object{{"state", "ERROR"}});
  EXPECT_EQ(late.status, 404u) << late.body;
}

// docs/adr/0035-engine-secrets.md: the main worker reports its engine's secret; the server keeps it
// for the gateways (its own, and replicas through the gateway-token state) and no /v2 answer
// carries it.
TEST_F(WorkerRoutesTest, TheEngineSecretReachesTheGatewaysAndNoV2Answer) {
  const std::string secret = "segma_eng_routes-test-0123456789abcdef";
  const Api& a = workers_[0];
  const Api& b = workers_[1];
  auto starting =
      a.Call(verb::patch, InstancePath(),
             json::object{{"state", "STARTING"}, {"port", 40001}, {"engine_secret", secret}});
  ASSERT_EQ(starting.status, 200u) << starting.body;
  EXPECT_EQ(starting.body.find(secret), std::string::npos) << starting.body;
  EXPECT_EQ(app_->store().GetModelInstance(instance_id_)->engine_secret, secret);
  auto running = a.Call(verb::patch, InstancePath(), json::object{{"state", "RUNNING"}});
  ASSERT_EQ(running.status, 200u) << running.body;
  EXPECT_EQ(app_->store().GetModelInstance(instance_id_)->engine_secret, secret)
      << "a report without it keeps it";

  // Not in any view: the admin's lists and the worker's own.
  for (const std::string& path :
       {std::string("/v2/model-instances"), fmt::format("/v2/model-instances/{}", instance_id_),
        fmt::format("/v2/model-instances?model_id={}", FirstModelId())}) {
    auto r = admin_.Get(path);
    ASSERT_EQ(r.status, 200u) << path << ": " << r.body;
    EXPECT_EQ(r.body.find(secret), std::string::npos) << path;
    EXPECT_EQ(r.body.find("engine_secret"), std::string::npos) << path;
  }
  auto own = a.Get(fmt::format("/v2/worker/instances?worker_id={}", worker_ids_[0]));
  ASSERT_EQ(own.status, 200u) << own.body;
  EXPECT_EQ(own.body.find(secret), std::string::npos);

  // The gateways have it: the embedded one's table, and the state replicas follow.
  ASSERT_TRUE(app_->WaitForRouteUpdates());
  std::string replica_secret;
  for (const auto& r : app_->gateway().routes()->routes()) {
    for (const auto& d : r.deployments) {
      for (const auto& x : d.replicas) {
        if (x.instance_id == instance_id_) replica_secret = x.api_key;
      }
    }
  }
  EXPECT_EQ(replica_secret, secret);
  const std::string gateway_token = segma::testing::ReadFile(dir_.path() + "/gateway_token");
  Api gw{base_, gateway_token.substr(0, gateway_token.find('\n'))};
  auto state = gw.Get("/internal/gateway/state");
  ASSERT_EQ(state.status, 200u) << state.body;
  EXPECT_NE(state.body.find(secret), std::string::npos);
  // No /v2 credential opens it, not even an admin's session.
  EXPECT_EQ(admin_.Get("/internal/gateway/state").status, 401u);

  // Only the main worker reports it, and a malformed one is refused without being quoted.
  auto from_subordinate = b.Call(verb::patch, InstancePath(),
                                 json::object{{"state", "RUNNING"}, {"engine_secret", secret}});
  EXPECT_EQ(from_subordinate.status, 400u) << from_subordinate.body;
  auto malformed = a.Call(verb::patch, InstancePath(),
                          json::object{{"engine_secret", "has spaces in it 0123456789"}});
  EXPECT_EQ(malformed.status, 400u) << malformed.body;
  EXPECT_EQ(malformed.body.find("has spaces"), std::string::npos) << malformed.body;
  EXPECT_EQ(app_->store().GetModelInstance(instance_id_)->engine_secret, secret);
}

// gpu_sharing left to the cluster: the worker's copy of the model carries its cluster's default,
// which admins set (and only to a known value).
TEST_F(WorkerRoutesTest, AModelWithoutGpuSharingGetsItsWorkersClusterDefault) {
  const std::string path = fmt::format("/v2/worker/models/{}", FirstModelId());
  auto clusters = Api::Obj(admin_.Get("/v2/clusters"));
  const json::object& cluster = clusters.at("items").as_array()[0].as_object();
  EXPECT_EQ(cluster.at("gpu_sharing").as_string(), "enforced");
  const std::string cluster_path = fmt::format("/v2/clusters/{}", cluster.at("id").as_int64());

  auto model = Api::Obj(admin_.Get(fmt::format("/v2/models/{}", FirstModelId())));
  EXPECT_TRUE(model.at("gpu_sharing").is_null()) << json::serialize(model);
  auto own = workers_[0].Get(path);
  ASSERT_EQ(own.status, 200u) << own.body;
  EXPECT_EQ(Api::Obj(own).at("gpu_sharing").as_string(), "enforced");

  auto patched = admin_.Call(verb::patch, cluster_path, json::object{{"gpu_sharing", "claims"}});
  ASSERT_EQ(patched.status, 200u) << patched.body;
  EXPECT_EQ(Api::Obj(patched).at("gpu_sharing").as_string(), "claims");
  EXPECT_EQ(Api::Obj(workers_[0].Get(path)).at("gpu_sharing").as_string(), "claims");

  // The model's own choice wins over the cluster's.
  auto chosen = admin_.Call(verb::patch, fmt::format("/v2/models/{}", FirstModelId()),
                            json::object{{"gpu_sharing", "enforced"}});
  ASSERT_EQ(chosen.status, 200u) << chosen.body;
  EXPECT_EQ(Api::Obj(workers_[0].Get(path)).at("gpu_sharing").as_string(), "enforced");

  auto bad = admin_.Call(verb::patch, cluster_path, json::object{{"gpu_sharing", "strict"}});
  EXPECT_EQ(bad.status, 400u);
  EXPECT_NE(bad.body.find("gpu_sharing must be claims or enforced"), std::string::npos) << bad.body;
  EXPECT_EQ(Api::Obj(admin_.Get(cluster_path)).at("gpu_sharing").as_string(), "claims");
  auto created =
      admin_.Post("/v2/clusters", json::object{{"name", "trusted-lab"}, {"gpu_sharing", "claims"}});
  ASSERT_EQ(created.status, 201u) << created.body;
  EXPECT_EQ(Api::Obj(created).at("gpu_sharing").as_string(), "claims");
}

}  // namespace
}  // namespace segma::api
