// The seed's pool (issue 19): one `segma server` and five `segma worker` processes with simulated
// GPUs shaped like the data centre's servers (three with 4 × H200 NVL 141 GB, one with 4 × RTX PRO
// 6000 96 GB, one with 2 × RTX PRO 6000), and a realistic mix deployed through the REST API with
// simulated engines. Asserts what a data centre needs: a deployment's replicas on distinct
// workers, the large models on NVLink-connected H200 pairs sized for 32 users, no GPU claimed
// beyond its memory, and the impossible 405B explained with every arrangement that was tried.

#include <signal.h>

#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct PoolWorker {
  const char* name;
  const char* gpus;
};
constexpr PoolWorker kPool[] = {{"h200-a", "4xH200-NVL:141"},
                                {"h200-b", "4xH200-NVL:141"},
                                {"h200-c", "4xH200-NVL:141"},
                                {"rtx-a", "4xRTX-PRO-6000:96"},
                                {"rtx-b", "2xRTX-PRO-6000:96"}};

class SeedPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    ASSERT_EQ(StartServer(dir_.path() + "/server", port_, "seed-admin-pw",
                          dir_.path() + "/server.log", server_, api_),
              "");
    const std::string token = RegistrationToken(api_);
    ASSERT_FALSE(token.empty());
    for (const PoolWorker& w : kPool) {
      std::vector<std::string> args = {SegmaBinary(),
                                       "worker",
                                       "--server",
                                       api_.base,
                                       "--token",
                                       token,
                                       "--name",
                                       w.name,
                                       "--port",
                                       "0",
                                       "--address",
                                       "127.0.0.1",
                                       "--advertise-address",
                                       "127.0.0.1",
                                       "--fake-gpus",
                                       w.gpus,
                                       "--heartbeat-interval",
                                       "0.5",
                                       "--data-dir",
                                       dir_.path() + "/" + w.name};
      workers_.push_back(std::make_unique<Process>(std::move(args),
                                                   std::map<std::string, std::string>{},
                                                   dir_.path() + "/" + w.name + ".log"));
    }
    ASSERT_TRUE(WaitForReadyWorkers(api_, 5, std::chrono::seconds(60)))
        << api_.Get("/v2/workers").body;
    auto p = api_.Post("/v2/projects", json::object{{"name", "seed"}});
    ASSERT_EQ(p.status, 201u) << p.body;
    project_id_ = Api::Obj(p).at("id").as_int64();
  }

  void TearDown() override {
    for (auto& w : workers_) w->Signal(SIGKILL);
    if (server_) server_->Signal(SIGKILL);
    for (const PoolWorker& w : kPool) KillEngines(dir_.path() + "/" + w.name + "/engines");
  }

  int64_t Deploy(const std::string& name, double params_b, int replicas,
                 const std::string& strategy, json::object extra = {}) {
    json::object body{{"name", name},
                      {"project_id", project_id_},
                      {"source", json::object{{"type", "simulated"}, {"params_b", params_b}}},
                      {"replicas", replicas},
                      {"placement_strategy", strategy}};
    for (auto& [k, v] : extra) body[k] = v;
    auto r = api_.Post("/v2/models", body);
    EXPECT_EQ(r.status, 201u) << r.body;
    return r.status == 201u ? Api::Obj(r).at("id").as_int64() : 0;
  }

  json::array Instances(int64_t model_id) {
    auto list =
        Api::Obj(api_.Get("/v2/model-instances?per_page=100&model_id=" + std::to_string(model_id)));
    return list.contains("items") ? list.at("items").as_array() : json::array{};
  }

  // Whether every instance of the model has been decided: placed, or UNSCHEDULABLE.
  bool Decided(int64_t model_id, int replicas) {
    json::array items = Instances(model_id);
    if (static_cast<int>(items.size()) != replicas) return false;
    for (const json::value& i : items) {
      if (i.at("state").as_string() == "PENDING") return false;
    }
    return true;
  }

  std::string Logs() {
    std::string out = "\n--- server\n" + server_->Log();
    for (size_t i = 0; i < workers_.size(); ++i) {
      out += std::string("\n--- ") + kPool[i].name + "\n" + workers_[i]->Log();
    }
    return out;
  }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> server_;
  std::vector<std::unique_ptr<Process>> workers_;
  Api api_;
  int64_t project_id_ = 0;
};

TEST_F(SeedPoolTest, AMixIsPlacedApartSizedForItsUsersAndExplained) {
  struct Deployment {
    std::string name;
    double params_b;
    int replicas;
    std::string strategy;
    json::object extra;
    int64_t id = 0;
  };
  std::vector<Deployment> mix = {
      {"llama-70b", 70, 2, "spread", {}},
      {"qwen-72b", 72, 1, "binpack", {}},
      {"llama-8b", 8, 3, "binpack", {}},
      {"qwen-7b", 7, 2, "spread", {}},
      {"bge-m3", 0.6, 2, "binpack", json::object{{"categories", json::array{"embedding"}}}},
      {"llama-405b", 405, 1, "binpack", {}},
  };
  for (Deployment& d : mix) d.id = Deploy(d.name, d.params_b, d.replicas, d.strategy, d.extra);
  for (const Deployment& d : mix) {
    ASSERT_TRUE(WaitUntil([&] { return Decided(d.id, d.replicas); }, std::chrono::seconds(60)))
        << d.name << ": " << json::serialize(Instances(d.id)) << Logs();
  }

  // GPUs: which are linked, and nothing claimed beyond a GPU's memory.
  auto gpus = Api::Obj(api_.Get("/v2/gpus?per_page=100"));
  ASSERT_EQ(gpus.at("items").as_array().size(), 18u) << json::serialize(gpus);
  std::map<std::string, json::object> gpu_by_id;
  for (const json::value& g : gpus.at("items").as_array()) {
    const json::object& o = g.as_object();
    EXPECT_LE(o.at("memory_allocated").as_int64(), o.at("memory_total").as_int64())
        << "over-committed: " << json::serialize(o);
    gpu_by_id[std::string(o.at("id").as_string())] = o;
  }
  auto linked = [&](const std::string& worker, int a, int b) {
    const json::object& g = gpu_by_id.at(worker + ":" + std::to_string(a));
    const json::object& links = g.at("links").as_object();
    auto it = links.find(std::to_string(b));
    return it != links.end() && it->value().as_string() == "nvlink";
  };

  for (const Deployment& d : mix) {
    json::array items = Instances(d.id);
    if (d.name == "llama-405b") {
      ASSERT_EQ(items.size(), 1u);
      const json::object& i = items[0].as_object();
      EXPECT_EQ(i.at("state").as_string(), "UNSCHEDULABLE") << json::serialize(i);
      const json::object& reasons = i.at("unschedulable_reasons").as_object();
      ASSERT_EQ(reasons.size(), 5u) << json::serialize(i);
      for (const char* w : {"h200-a", "h200-b", "h200-c", "rtx-a"}) {
        const std::string why(reasons.at(w).as_string());
        EXPECT_THAT(why, HasSubstr("on one GPU")) << w;
        EXPECT_THAT(why, HasSubstr("nor 2 x ")) << w;
        EXPECT_THAT(why, HasSubstr(", 4 x ")) << w;
        EXPECT_THAT(why, HasSubstr("multi-worker not enabled")) << w;
        EXPECT_THAT(why, HasSubstr("CPU offload not enabled")) << w;
      }
      const std::string small(reasons.at("rtx-b").as_string());
      EXPECT_THAT(small, HasSubstr("nor 2 x "));
      EXPECT_THAT(small, Not(HasSubstr("4 x ")));  // two GPUs: four was not an option there
      continue;
    }
    std::set<std::string> workers;
    for (const json::value& v : items) {
      const json::object& i = v.as_object();
      EXPECT_NE(i.at("state").as_string(), "UNSCHEDULABLE") << d.name << json::serialize(i);
      const std::string worker(i.at("worker_name").as_string());
      workers.insert(worker);
      const json::object& claim = i.at("claim").as_object();
      EXPECT_EQ(claim.at("sequences").as_int64(), 32) << d.name << json::serialize(i);
      EXPECT_EQ(claim.at("context_length").as_int64(), 8192) << d.name;
      if (d.params_b >= 70) {
        // Weights fit one H200; the KV cache of 32 users does not: an NVLinked H200 pair.
        const json::array& g = i.at("gpu_indexes").as_array();
        ASSERT_EQ(g.size(), 2u) << d.name << json::serialize(i);
        EXPECT_EQ(worker.rfind("h200-", 0), 0u) << d.name << " on " << worker;
        EXPECT_TRUE(
            linked(worker, static_cast<int>(g[0].as_int64()), static_cast<int>(g[1].as_int64())))
            << d.name << json::serialize(i);
      } else {
        EXPECT_EQ(i.at("gpu_indexes").as_array().size(), 1u) << d.name << json::serialize(i);
      }
    }
    EXPECT_EQ(static_cast<int>(workers.size()), d.replicas)
        << d.name << " replicas share a worker: " << json::serialize(items);
  }

  // The dry run says the same: the next 70B replica, its spread and what its claim serves.
  auto eval =
      api_.Post("/v2/model-evaluations",
                json::object{{"name", "llama-70b-next"},
                             {"project_id", project_id_},
                             {"source", json::object{{"type", "simulated"}, {"params_b", 70}}}});
  ASSERT_EQ(eval.status, 200u) << eval.body;
  json::object e = Api::Obj(eval);
  EXPECT_EQ(e.at("replica_spread").as_string(), "worker");
  ASSERT_TRUE(e.at("fits").as_bool()) << eval.body;
  EXPECT_EQ(e.at("serves").at("sequences").as_int64(), 32) << eval.body;
  EXPECT_EQ(e.at("serves").at("context_length").as_int64(), 8192) << eval.body;
  EXPECT_TRUE(e.at("warnings").as_array().empty()) << eval.body;
}

}  // namespace
}  // namespace segma::testing
