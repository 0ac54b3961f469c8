// Deployments end to end through REST /v2 against an in-process ServerApp with a FakeClock.
// Workers are registered over HTTP and "heartbeat" fake GPUs; no worker processes run. Controller
// passes run in the background too (events, sweep), but each test calls RunControllersOnce()
// after a change, which serialises with them, so what it then reads is settled.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "api/server_app.h"
#include "integration/harness.h"

namespace segma::api {
namespace {

using boost::beast::http::verb;
using segma::testing::Api;

constexpr int64_t kGiB = int64_t{1} << 30;

struct FakeGpu {
  std::string name = "NVIDIA H100 80GB HBM3";
  int64_t memory_gib = 80;
  std::string compute_capability = "9.0";
  std::string vendor = "nvidia";
};

class ModelsApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerConfig config;
    config.data_dir = dir_.path();
    config.address = "127.0.0.1";
    config.port = 0;
    config.bootstrap_password = "models-admin-password";
    config.http.access_log = false;
    config.reschedule_grace = std::chrono::minutes(5);
    auto app = ServerApp::Create(config, clock_);
    ASSERT_TRUE(app.ok()) << app.status().ToString();
    app_ = std::move(app).value();
    auto port = app_->Start();
    ASSERT_TRUE(port.ok());
    io_thread_ = std::thread([this] { app_->Run(); });
    const std::string base = "http://127.0.0.1:" + std::to_string(*port);
    Api anon{base, ""};
    auto login = anon.Post("/v2/auth/login", json::object{{"username", "admin"},
                                                          {"password", "models-admin-password"}});
    ASSERT_EQ(login.status, 200u) << login.body;
    admin_ = Api{base, std::string(Api::Obj(login).at("token").as_string())};
    auto p = admin_.Post("/v2/projects", json::object{{"name", "team"}});
    ASSERT_EQ(p.status, 201u) << p.body;
    project_ = Api::Obj(p).at("id").as_int64();
    auto clusters = Api::Obj(admin_.Get("/v2/clusters"));
    registration_ =
        std::string(clusters.at("items").as_array()[0].at("registration_token").as_string());
  }

  void TearDown() override {
    if (app_) app_->Shutdown();
    if (io_thread_.joinable()) io_thread_.join();
  }

  // Registers a worker and, unless `heartbeat` is false, reports `gpus` for it (READY).
  int64_t AddWorker(const std::string& name, std::vector<FakeGpu> gpus,
                    std::map<std::string, std::string> labels = {}, bool heartbeat = true) {
    Api reg{admin_.base, registration_};
    json::object l;
    for (const auto& [k, v] : labels) l[k] = v;
    auto w = reg.Post("/v2/workers", json::object{{"name", name}, {"port", 10150}, {"labels", l}});
    EXPECT_EQ(w.status, 201u) << w.body;
    const int64_t id = Api::Obj(w).at("worker").at("id").as_int64();
    worker_tokens_[name] = std::string(Api::Obj(w).at("token").as_string());
    worker_gpus_[name] = std::move(gpus);
    if (heartbeat) Heartbeat(name);
    return id;
  }

  void Heartbeat(const std::string& name) {
    json::array gpus;
    int index = 0;
    for (const FakeGpu& g : worker_gpus_[name]) {
      gpus.emplace_back(json::object{{"index", index},
                                     {"uuid", fmt::format("GPU-fake-{}-{}", name, index)},
                                     {"name", g.name},
                                     {"vendor", g.vendor},
                                     {"compute_capability", g.compute_capability},
                                     {"memory_total", g.memory_gib * kGiB},
                                     {"memory_used", 0},
                                     {"simulated", true}});
      ++index;
    }
    json::object status{{"cpu_count", 32},         {"memory_total", 512 * kGiB},
                        {"memory_used", 8 * kGiB}, {"arch", "x86_64"},
                        {"os", "linux"},           {"gpu_source", "fake"},
                        {"gpus", std::move(gpus)}};
    Api worker{admin_.base, worker_tokens_[name]};
    auto r = worker.Post("/v2/worker-heartbeat", json::object{{"status", std::move(status)}});
    EXPECT_EQ(r.status, 200u) << r.body;
  }

  void Settle() {
    Status s = app_->RunControllersOnce();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  json::object ModelBody(const std::string& name, double params_b, int replicas = 1) {
    return json::object{{"name", name},
                        {"project_id", project_},
                        {"backend", "simulator"},
                        {"source", json::object{{"type", "simulated"}, {"params_b", params_b}}},
                        {"replicas", replicas}};
  }

  // Creates the model and runs the controllers; returns the model id.
  int64_t Deploy(const json::object& body) {
    auto r = admin_.Post("/v2/models", body);
    EXPECT_EQ(r.status, 201u) << r.body;
    Settle();
    return Api::Obj(r).contains("id") ? Api::Obj(r).at("id").as_int64() : 0;
  }

  std::vector<json::object> Instances(int64_t model_id) {
    auto r = admin_.Get(fmt::format("/v2/model-instances?model_id={}", model_id));
    EXPECT_EQ(r.status, 200u) << r.body;
    std::vector<json::object> out;
    const json::object body = Api::Obj(r);
    for (const auto& v : body.at("items").as_array()) out.push_back(v.as_object());
    return out;
  }

  json::object OnlyInstance(int64_t model_id) {
    auto all = Instances(model_id);
    EXPECT_EQ(all.size(), 1u);
    return all.empty() ? json::object{} : all[0];
  }

  static std::string State(const json::object& i) { return std::string(i.at("state").as_string()); }
  static int64_t WorkerId(const json::object& i) {
    return i.at("worker_id").is_null() ? 0 : i.at("worker_id").as_int64();
  }
  static std::vector<int64_t> Gpus(const json::object& i) {
    std::vector<int64_t> out;
    for (const auto& g : i.at("gpu_indexes").as_array()) out.push_back(g.as_int64());
    return out;
  }
  static std::string Reason(const json::object& i, const std::string& worker) {
    const auto& r = i.at("unschedulable_reasons").as_object();
    return r.contains(worker) ? std::string(r.at(worker).as_string()) : "";
  }

  json::object Evaluate(const json::object& body) {
    auto r = admin_.Post("/v2/model-evaluations", body);
    EXPECT_EQ(r.status, 200u) << r.body;
    return Api::Obj(r);
  }

  FakeClock clock_;
  segma::testing::TempDir dir_;
  std::unique_ptr<ServerApp> app_;
  std::thread io_thread_;
  Api admin_;
  int64_t project_ = 0;
  std::string registration_;
  std::map<std::string, std::string> worker_tokens_;
  std::map<std::string, std::vector<FakeGpu>> worker_gpus_;
};

TEST_F(ModelsApiTest, EachFilterRejectsWithItsReason) {
  auto c = admin_.Post("/v2/clusters", json::object{{"name", "other"}});
  ASSERT_EQ(c.status, 201u);
  const int64_t other_cluster = Api::Obj(c).at("id").as_int64();
  AddWorker("h100", {FakeGpu{}}, {{"zone", "a"}});
  AddWorker("pascal", {FakeGpu{"Tesla P100", 16, "6.0"}}, {{"zone", "a"}});
  AddWorker("silent", {FakeGpu{}}, {{"zone", "a"}}, /*heartbeat=*/false);
  AddWorker("zone-b", {FakeGpu{}}, {{"zone", "b"}});

  // Cluster filter.
  json::object body = ModelBody("in-other-cluster", 1);
  body["cluster_id"] = other_cluster;
  json::object inst = OnlyInstance(Deploy(body));
  EXPECT_EQ(State(inst), "UNSCHEDULABLE");
  EXPECT_NE(Reason(inst, "h100").find("cluster"), std::string::npos) << Reason(inst, "h100");

  // GPU matching.
  body = ModelBody("wants-h200", 1);
  body["gpu_type"] = "H200";
  inst = OnlyInstance(Deploy(body));
  EXPECT_EQ(State(inst), "UNSCHEDULABLE");
  EXPECT_NE(Reason(inst, "h100").find("gpu_type \"H200\""), std::string::npos)
      << Reason(inst, "h100");

  // Labels.
  body = ModelBody("wants-zone-c", 1);
  body["worker_selector"] = json::object{{"zone", "c"}};
  inst = OnlyInstance(Deploy(body));
  EXPECT_EQ(State(inst), "UNSCHEDULABLE");
  EXPECT_NE(Reason(inst, "zone-b").find("worker_selector"), std::string::npos)
      << Reason(inst, "zone-b");

  // Status (the worker never sent a heartbeat) and backend framework (vLLM on a Pascal GPU), with
  // resource fit rejecting the rest: a model bigger than any GPU.
  body = ModelBody("huge-vllm", 400);
  body["backend"] = "vllm";
  inst = OnlyInstance(Deploy(body));
  EXPECT_EQ(State(inst), "UNSCHEDULABLE");
  EXPECT_NE(Reason(inst, "silent").find("worker is REGISTERING"), std::string::npos)
      << Reason(inst, "silent");
  EXPECT_NE(Reason(inst, "pascal").find("cannot run vllm"), std::string::npos)
      << Reason(inst, "pascal");
  EXPECT_NE(Reason(inst, "h100").find("VRAM"), std::string::npos) << Reason(inst, "h100");
  EXPECT_FALSE(std::string(inst.at("state_message").as_string()).empty());
}

TEST_F(ModelsApiTest, PlacementOrderOneGpuThenSeveralThenOffload) {
  AddWorker("w", {FakeGpu{}, FakeGpu{}});
  auto one = Evaluate(ModelBody("small", 8));
  ASSERT_TRUE(one.at("fits").as_bool()) << json::serialize(one);
  EXPECT_EQ(one.at("placement").at("kind").as_string(), "single_gpu");
  EXPECT_EQ(one.at("placement").at("gpu_indexes").as_array().size(), 1u);
  // What the claim serves: the default target of 32 sequences at a typical 8192 tokens.
  EXPECT_EQ(one.at("serves").at("sequences").as_int64(), 32) << json::serialize(one);
  EXPECT_EQ(one.at("serves").at("context_length").as_int64(), 8192);
  EXPECT_EQ(one.at("claim").at("sequences").as_int64(), 32);
  EXPECT_EQ(one.at("replica_spread").as_string(), "worker");
  EXPECT_EQ(one.at("placement_strategy").as_string(), "spread");
  EXPECT_TRUE(one.at("warnings").as_array().empty()) << json::serialize(one);

  auto two = Evaluate(ModelBody("big", 44));  // ~88 GB of weights: two GPUs
  ASSERT_TRUE(two.at("fits").as_bool()) << json::serialize(two);
  EXPECT_EQ(two.at("placement").at("kind").as_string(), "multi_gpu");
  EXPECT_EQ(two.at("placement").at("gpu_indexes").as_array().size(), 2u);

  // A 70B holds its weights on two H100s but not the KV cache of 32 users: placed with fewer
  // sequences, and the evaluation says so.
  auto seventy = Evaluate(ModelBody("seventy", 70));
  ASSERT_TRUE(seventy.at("fits").as_bool()) << json::serialize(seventy);
  EXPECT_LT(seventy.at("serves").at("sequences").as_int64(), 32);
  ASSERT_FALSE(seventy.at("warnings").as_array().empty()) << json::serialize(seventy);
  EXPECT_NE(std::string(seventy.at("warnings").as_array()[0].as_string())
                .find("of the 32 sequences asked for"),
            std::string::npos)
      << json::serialize(seventy);

  json::object body = ModelBody("too-big", 120);  // ~240 GB: only with CPU offload
  body["backend"] = "llama.cpp";
  EXPECT_FALSE(Evaluate(body).at("fits").as_bool());
  body["cpu_offloading"] = true;
  auto off = Evaluate(body);
  ASSERT_TRUE(off.at("fits").as_bool()) << json::serialize(off);
  EXPECT_EQ(off.at("placement").at("kind").as_string(), "partial_offload");
}

// The evaluation predicts what one replica serves from segma's own H200 measurements
// (scheduler/serving_prediction.h) and warns when the contract's targets would not hold.
TEST_F(ModelsApiTest, EvaluationPredictsServingAndWarnsBelowTheTargets) {
  AddWorker("h200", {FakeGpu{"NVIDIA H200", 141, "9.0"}});
  json::object body = ModelBody("chat-8b", 8.03);
  body["backend"] = "llama.cpp";
  body["max_concurrent_sequences"] = 32;
  auto at32 = Evaluate(body);
  ASSERT_TRUE(at32.at("fits").as_bool()) << json::serialize(at32);
  const json::object& p32 = at32.at("performance").as_object();
  ASSERT_TRUE(p32.at("available").as_bool()) << json::serialize(at32);
  EXPECT_EQ(p32.at("gpu").as_string(), "NVIDIA H200");
  EXPECT_EQ(p32.at("sequences").as_int64(), 32);
  // docs/benchmarks.md, 8B q8_0 at 32 users through the gateway: 32.6 tok/s per user, 530 ms.
  EXPECT_NEAR(p32.at("tokens_per_second_per_user").to_number<double>(), 32.6, 0.5);
  EXPECT_NEAR(p32.at("ttft_ms").to_number<double>(), 530, 10);
  EXPECT_TRUE(p32.at("meets_targets").as_bool());
  EXPECT_TRUE(at32.at("warnings").as_array().empty()) << json::serialize(at32);

  body["max_concurrent_sequences"] = 64;
  auto at64 = Evaluate(body);
  const json::object& p64 = at64.at("performance").as_object();
  EXPECT_NEAR(p64.at("tokens_per_second_per_user").to_number<double>(), 16.0, 0.5);
  EXPECT_FALSE(p64.at("meets_targets").as_bool());
  ASSERT_EQ(at64.at("warnings").as_array().size(), 1u) << json::serialize(at64);
  EXPECT_NE(
      std::string(at64.at("warnings").as_array()[0].as_string()).find("below the target of 20"),
      std::string::npos);

  // No measurements: said, not guessed.
  body["backend"] = "simulator";
  auto sim = Evaluate(body);
  EXPECT_FALSE(sim.at("performance").at("available").as_bool());
  EXPECT_EQ(sim.at("performance").at("reason").as_string(), "no measurements of simulator yet");
}

TEST_F(ModelsApiTest, BinpackAndSpreadDiffer) {
  AddWorker("w1", {FakeGpu{}});
  AddWorker("w2", {FakeGpu{}});
  const auto first = OnlyInstance(Deploy(ModelBody("first", 1)));
  ASSERT_EQ(State(first), "SCHEDULED");

  json::object spread = ModelBody("spread", 1, 2);
  spread["placement_strategy"] = "spread";
  std::set<int64_t> spread_workers;
  for (const auto& i : Instances(Deploy(spread))) {
    EXPECT_EQ(State(i), "SCHEDULED");
    spread_workers.insert(WorkerId(i));
  }
  EXPECT_EQ(spread_workers.size(), 2u) << "spread puts the replicas on different workers";

  json::object binpack = ModelBody("binpack", 1, 2);
  binpack["placement_strategy"] = "binpack";
  auto packed = Instances(Deploy(binpack));
  ASSERT_EQ(packed.size(), 2u);
  // Replicas of one deployment go to distinct workers under binpack too (replica_spread
  // "worker", the default); the first takes the fullest GPU, the one that held `first`.
  EXPECT_NE(WorkerId(packed[0]), WorkerId(packed[1])) << "binpack stacked a deployment's replicas";
  EXPECT_EQ(WorkerId(packed[0]), WorkerId(first));

  json::object stacked = ModelBody("stacked", 1, 2);
  stacked["placement_strategy"] = "binpack";
  stacked["replica_spread"] = "none";
  stacked["max_concurrent_sequences"] = 1;
  auto together = Instances(Deploy(stacked));
  ASSERT_EQ(together.size(), 2u);
  EXPECT_EQ(WorkerId(together[0]), WorkerId(together[1]))
      << "replica_spread none stacks on purpose";
  EXPECT_EQ(Gpus(together[0]), Gpus(together[1]));
}

TEST_F(ModelsApiTest, TwoSmallModelsShareOneGpu) {
  const int64_t w = AddWorker("w", {FakeGpu{}});
  const auto a = OnlyInstance(Deploy(ModelBody("a", 1)));
  const auto b = OnlyInstance(Deploy(ModelBody("b", 1)));
  ASSERT_EQ(State(a), "SCHEDULED");
  ASSERT_EQ(State(b), "SCHEDULED");
  EXPECT_EQ(WorkerId(a), w);
  EXPECT_EQ(WorkerId(b), w);
  EXPECT_EQ(Gpus(a), std::vector<int64_t>{0});
  EXPECT_EQ(Gpus(b), std::vector<int64_t>{0});
  const int64_t claimed =
      a.at("claim").at("vram").at("0").as_int64() + b.at("claim").at("vram").at("0").as_int64();
  auto gpus = Api::Obj(admin_.Get("/v2/gpus")).at("items").as_array();
  ASSERT_EQ(gpus.size(), 1u);
  EXPECT_EQ(gpus[0].at("memory_allocated").as_int64(), claimed);
}

TEST_F(ModelsApiTest, TensorParallelSizeMustDivideHeads) {
  // A 40B model has 64 attention heads and needs ~80 GB: 2 x 32 GiB is too little, 3 GPUs would
  // fit but 3 does not divide 64.
  AddWorker("three", {FakeGpu{"NVIDIA L40", 32, "8.9"}, FakeGpu{"NVIDIA L40", 32, "8.9"},
                      FakeGpu{"NVIDIA L40", 32, "8.9"}});
  const int64_t id = Deploy(ModelBody("forty", 40));
  auto inst = OnlyInstance(id);
  EXPECT_EQ(State(inst), "UNSCHEDULABLE") << json::serialize(inst);

  const int64_t four =
      AddWorker("four", {FakeGpu{"NVIDIA L40", 32, "8.9"}, FakeGpu{"NVIDIA L40", 32, "8.9"},
                         FakeGpu{"NVIDIA L40", 32, "8.9"}, FakeGpu{"NVIDIA L40", 32, "8.9"}});
  Settle();  // the new worker's capacity lets the UNSCHEDULABLE instance be retried
  inst = OnlyInstance(id);
  ASSERT_EQ(State(inst), "SCHEDULED") << json::serialize(inst);
  EXPECT_EQ(WorkerId(inst), four);
  EXPECT_EQ(Gpus(inst).size(), 4u);
}

TEST_F(ModelsApiTest, QuotaRejection) {
  AddWorker("w", {FakeGpu{}});
  auto r = admin_.Call(verb::patch, fmt::format("/v2/projects/{}", project_),
                       json::object{{"max_instances", 1}});
  ASSERT_EQ(r.status, 200u) << r.body;
  auto instances = Instances(Deploy(ModelBody("two", 1, 2)));
  ASSERT_EQ(instances.size(), 2u);
  EXPECT_EQ(State(instances[0]), "SCHEDULED");
  EXPECT_EQ(State(instances[1]), "UNSCHEDULABLE");
  EXPECT_NE(std::string(instances[1].at("state_message").as_string()).find("max_instances"),
            std::string::npos)
      << instances[1].at("state_message");

  r = admin_.Call(verb::patch, fmt::format("/v2/projects/{}", project_),
                  json::object{{"max_instances", nullptr}, {"max_vram_gib", 1}});
  ASSERT_EQ(r.status, 200u) << r.body;
  auto over = Evaluate(ModelBody("vram", 1));
  EXPECT_FALSE(over.at("fits").as_bool());
  EXPECT_NE(std::string(over.at("summary").as_string()).find("quota"), std::string::npos)
      << over.at("summary");
  EXPECT_NE(std::string(over.at("reasons").at("w").as_string()).find("max_vram_gib"),
            std::string::npos)
      << over.at("reasons");
}

TEST_F(ModelsApiTest, LostWorkerIsRescheduledAfterGraceNotBefore) {
  const int64_t w1 = AddWorker("w1", {FakeGpu{}});
  const int64_t model = Deploy(ModelBody("m", 1));
  const auto placed = OnlyInstance(model);
  ASSERT_EQ(WorkerId(placed), w1);
  const int64_t w2 = AddWorker("w2", {FakeGpu{}});

  // w1 stops heartbeating; w2 keeps going. After the heartbeat grace (60 s) w1 is NOT_READY.
  clock_.Advance(std::chrono::seconds(61));
  Heartbeat("w2");
  Settle();
  auto w = Api::Obj(admin_.Get(fmt::format("/v2/workers/{}", w1)));
  ASSERT_EQ(w.at("state").as_string(), "NOT_READY");
  auto inst = OnlyInstance(model);
  EXPECT_EQ(WorkerId(inst), w1) << "not before the grace";

  clock_.Advance(std::chrono::minutes(4));
  Heartbeat("w2");
  Settle();
  inst = OnlyInstance(model);
  EXPECT_EQ(WorkerId(inst), w1) << "4 minutes into a 5 minute grace";

  clock_.Advance(std::chrono::seconds(61));
  Heartbeat("w2");
  Settle();
  inst = OnlyInstance(model);
  EXPECT_EQ(inst.at("id").as_int64(), placed.at("id").as_int64()) << "same instance, moved";
  EXPECT_EQ(State(inst), "SCHEDULED");
  EXPECT_EQ(WorkerId(inst), w2);
}

TEST_F(ModelsApiTest, DryRunAgreesWithRealPlacement) {
  AddWorker("w1", {FakeGpu{}, FakeGpu{}});
  AddWorker("w2", {FakeGpu{"NVIDIA L40S", 48, "8.9"}});
  Deploy(ModelBody("already-there", 8));
  json::object body = ModelBody("next", 30);
  body["placement_strategy"] = "binpack";
  auto eval = Evaluate(body);
  ASSERT_TRUE(eval.at("fits").as_bool()) << json::serialize(eval);
  auto inst = OnlyInstance(Deploy(body));
  ASSERT_EQ(State(inst), "SCHEDULED");
  EXPECT_EQ(WorkerId(inst), eval.at("placement").at("worker_id").as_int64());
  EXPECT_EQ(inst.at("gpu_indexes"), eval.at("placement").at("gpu_indexes"));
  EXPECT_EQ(inst.at("claim"), eval.at("claim"));
  EXPECT_EQ(inst.at("state_message"), eval.at("summary"));
}

TEST_F(ModelsApiTest, ScalingKeepsExistingInstances) {
  AddWorker("w", {FakeGpu{}});
  const int64_t model = Deploy(ModelBody("m", 1, 2));
  std::set<int64_t> before;
  for (const auto& i : Instances(model)) before.insert(i.at("id").as_int64());
  ASSERT_EQ(before.size(), 2u);

  auto r =
      admin_.Call(verb::patch, fmt::format("/v2/models/{}", model), json::object{{"replicas", 3}});
  ASSERT_EQ(r.status, 200u) << r.body;
  Settle();
  std::set<int64_t> up;
  for (const auto& i : Instances(model)) {
    up.insert(i.at("id").as_int64());
    EXPECT_EQ(State(i), "SCHEDULED");
  }
  ASSERT_EQ(up.size(), 3u);
  EXPECT_TRUE(std::includes(up.begin(), up.end(), before.begin(), before.end()));

  r = admin_.Call(verb::patch, fmt::format("/v2/models/{}", model), json::object{{"replicas", 1}});
  ASSERT_EQ(r.status, 200u) << r.body;
  Settle();
  auto down = Instances(model);
  ASSERT_EQ(down.size(), 1u);
  EXPECT_TRUE(before.count(down[0].at("id").as_int64())) << "the newest go first";

  r = admin_.Call(verb::patch, fmt::format("/v2/models/{}", model), json::object{{"replicas", 0}});
  ASSERT_EQ(r.status, 200u) << r.body;
  Settle();
  EXPECT_TRUE(Instances(model).empty());
}

TEST_F(ModelsApiTest, DeletingAnInstanceReplacesItAndDeletingTheModelRemovesAll) {
  AddWorker("w", {FakeGpu{}});
  const int64_t model = Deploy(ModelBody("m", 1, 2));
  auto instances = Instances(model);
  ASSERT_EQ(instances.size(), 2u);
  const int64_t gone = instances[0].at("id").as_int64();
  auto r = admin_.Call(verb::delete_, fmt::format("/v2/model-instances/{}", gone));
  ASSERT_EQ(r.status, 204u) << r.body;
  Settle();
  instances = Instances(model);
  ASSERT_EQ(instances.size(), 2u);
  for (const auto& i : instances) EXPECT_NE(i.at("id").as_int64(), gone);

  r = admin_.Call(verb::delete_, fmt::format("/v2/models/{}", model));
  ASSERT_EQ(r.status, 204u) << r.body;
  Settle();
  EXPECT_EQ(admin_.Get(fmt::format("/v2/models/{}", model)).status, 404u);
  auto all = Api::Obj(admin_.Get("/v2/model-instances"));
  EXPECT_EQ(all.at("pagination").at("total").as_int64(), 0);
}

// One decision names the engine, and the dry run shows it with the reason.
TEST_F(ModelsApiTest, EvaluationShowsTheEngineChoiceAndWhy) {
  AddWorker("w", {FakeGpu{}});
  json::object body = ModelBody("sim", 8);
  body.erase("backend");
  auto eval = Evaluate(body);
  ASSERT_TRUE(eval.at("fits").as_bool()) << json::serialize(eval);
  EXPECT_EQ(eval.at("engine"), (json::object{{"backend", "simulator"},
                                             {"backend_version", "builtin"},
                                             {"format", "unknown"},
                                             {"automatic", true},
                                             {"reason",
                                              "automatic: a simulated model runs on segma's "
                                              "simulated engine"}}));

  // A checkpoint directory the server can read goes to vLLM, and is estimated as vLLM (its
  // fraction of the GPU).
  const std::string dir =
      std::filesystem::weakly_canonical(std::filesystem::absolute(dir_.path())).string() +
      "/Llama-3.1-8B";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << R"({"architectures": ["LlamaForCausalLM"],
      "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
      "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
      "max_position_embeddings": 8192, "torch_dtype": "bfloat16"})";
  body = ModelBody("ckpt", 0);
  body.erase("backend");
  body["source"] = json::object{{"type", "local_path"}, {"path", dir}};
  eval = Evaluate(body);
  ASSERT_TRUE(eval.at("fits").as_bool()) << json::serialize(eval);
  EXPECT_EQ(eval.at("engine").at("backend"), "vllm");
  EXPECT_EQ(eval.at("engine").at("format"), "safetensors");
  EXPECT_NE(std::string(eval.at("engine").at("reason").as_string()).find("safetensors checkpoint"),
            std::string::npos)
      << eval.at("engine");
  EXPECT_EQ(eval.at("claim").at("vram").at("0").as_int64(),
            static_cast<int64_t>(0.9 * 80 * kGiB));  // vLLM's default share
}

// A GGUF goes only to backends that read GGUF; a model that asks otherwise is refused with why.
TEST_F(ModelsApiTest, BackendMustReadTheModelsFormat) {
  json::object body = ModelBody("gguf-on-sglang", 0);
  body["backend"] = "sglang";
  body["source"] = json::object{{"type", "local_path"}, {"path", "/models/llama-8b.Q8_0.gguf"}};
  for (const char* route : {"/v2/models", "/v2/model-evaluations"}) {
    auto r = admin_.Post(route, body);
    EXPECT_EQ(r.status, 400u) << route << " " << r.body;
    EXPECT_NE(r.body.find("source: backend sglang cannot serve a GGUF file (sglang reads "
                          "safetensors, not gguf)"),
              std::string::npos)
        << r.body;
  }
  body["backend"] = "llama.cpp";
  auto created = admin_.Post("/v2/models", body);
  ASSERT_EQ(created.status, 201u) << created.body;
  // Switching the backend later is checked the same way.
  auto patched =
      admin_.Call(verb::patch, fmt::format("/v2/models/{}", Api::Obj(created).at("id").as_int64()),
                  json::object{{"backend", "tensorrt-llm"}});
  EXPECT_EQ(patched.status, 400u) << patched.body;
  EXPECT_NE(patched.body.find("tensorrt-llm reads safetensors, not gguf"), std::string::npos)
      << patched.body;
}

// Only a backend version with a distributed command may span workers.
TEST_F(ModelsApiTest, AcrossWorkersOnlyForBackendsThatDefineHow) {
  json::object body = ModelBody("vllm-split", 8);
  body["backend"] = "vllm";
  body["distributed_inference_across_workers"] = true;
  auto r = admin_.Post("/v2/models", body);
  EXPECT_EQ(r.status, 400u) << r.body;
  EXPECT_NE(r.body.find("distributed_inference_across_workers: backend vllm (version 0.11.0) "
                        "cannot run across workers: it has no distributed_server_command"),
            std::string::npos)
      << r.body;
  body["distributed_inference_across_workers"] = false;
  auto created = admin_.Post("/v2/models", body);
  ASSERT_EQ(created.status, 201u) << created.body;
  auto patched =
      admin_.Call(verb::patch, fmt::format("/v2/models/{}", Api::Obj(created).at("id").as_int64()),
                  json::object{{"distributed_inference_across_workers", true}});
  EXPECT_EQ(patched.status, 400u) << patched.body;
  EXPECT_NE(patched.body.find("distributed_inference_across_workers"), std::string::npos);

  body = ModelBody("llama-split", 0);
  body["backend"] = "llama.cpp";
  body["source"] = json::object{{"type", "local_path"}, {"path", "/models/llama-70b.gguf"}};
  body["distributed_inference_across_workers"] = true;
  EXPECT_EQ(admin_.Post("/v2/models", body).status, 201u);
}

// The placement carries what the engine's command is sized from, to the worker.
TEST_F(ModelsApiTest, ClaimCarriesTheLaunchInputs) {
  AddWorker("w", {FakeGpu{}});
  auto inst = OnlyInstance(Deploy(ModelBody("sized", 8)));
  ASSERT_EQ(State(inst), "SCHEDULED") << json::serialize(inst);
  const json::object& claim = inst.at("claim").as_object();
  // 8 B parameters of bf16 on one GPU, and a KV cache.
  EXPECT_GT(claim.at("weight_bytes_per_gpu").as_int64(), 14 * kGiB) << json::serialize(claim);
  EXPECT_LT(claim.at("weight_bytes_per_gpu").as_int64(), 17 * kGiB) << json::serialize(claim);
  EXPECT_GT(claim.at("kv_cache_bytes").as_int64(), 0) << json::serialize(claim);
}

TEST_F(ModelsApiTest, BadInputAndDuplicates) {
  json::object body = ModelBody("m", 1);
  body["source"] = json::object{{"type", "local_path"}, {"path", "relative/x.gguf"}};
  auto r = admin_.Post("/v2/models", body);
  EXPECT_EQ(r.status, 400u) << r.body;
  EXPECT_NE(r.body.find("source.path"), std::string::npos) << r.body;
  body = ModelBody("m", 1);
  body["bogus"] = 1;
  EXPECT_EQ(admin_.Post("/v2/models", body).status, 400u);
  body = ModelBody("m", 1);
  body.erase("project_id");
  EXPECT_EQ(admin_.Post("/v2/models", body).status, 400u);
  EXPECT_EQ(admin_.Post("/v2/models", ModelBody("m", 1)).status, 201u);
  EXPECT_EQ(admin_.Post("/v2/models", ModelBody("m", 1)).status, 409u);
  EXPECT_EQ(admin_.Get("/v2/model-instances?state=NOPE").status, 400u);
  // A hub model cannot be estimated before its files exist: UNSCHEDULABLE with that reason.
  AddWorker("w", {FakeGpu{}});
  body = ModelBody("hub", 1);
  body["source"] = json::object{{"type", "huggingface"}, {"repo", "org/name"}};
  body["backend"] = "llama.cpp";
  auto inst = OnlyInstance(Deploy(body));
  EXPECT_EQ(State(inst), "UNSCHEDULABLE");
  EXPECT_NE(std::string(inst.at("state_message").as_string()).find("cannot estimate"),
            std::string::npos)
      << inst.at("state_message");
}

}  // namespace
}  // namespace segma::api
