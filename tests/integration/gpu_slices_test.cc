// GPU slices as a user sees them (issue 22).
// Enforced slices: an engine on a GPU it shares gets libsegma-vgpu with its claim as the limit,
// /v2/gpus shows the slice with what the engine holds and what the limit refused, the instance's
// state message and the worker's log say so, and the worker's metrics count it. The library's own
// refusal is tested against a fake libcuda (tests/vgpu); here the test books memory in the
// engine's accounting segment as one of the engine's processes would.
// MIG: a worker whose NVML (the fake libnvidia-ml of tests/worker/gpu) has a GPU in MIG mode
// reports its MIG devices; a model asks for a profile, is placed on that device, and its engine
// sees exactly that device by UUID.

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "integration/harness.h"
#include "vgpu/shared_accounting.h"
#include "vgpu/shared_compute.h"

namespace segma::testing {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

class GpuSlicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    ASSERT_EQ(StartSegma(dir_.path() + "/data", port_, "slices-admin-pw",
                         dir_.path() + "/server.log", server_, api_),
              "");
    auto p = api_.Post("/v2/projects", json::object{{"name", "slices"}});
    ASSERT_EQ(p.status, 201u) << p.body;
    project_id_ = Api::Obj(p).at("id").as_int64();
  }

  void TearDown() override {
    if (!shm_.empty()) {
      ::shm_unlink(shm_.c_str());
      ::shm_unlink((shm_ + "-compute").c_str());
    }
    if (server_) server_->Signal(SIGKILL);
    KillEngines(dir_.path() + "/data/worker/engines");
  }

  // The running instance of a new simulated deployment (the fake H100 is 80 GiB; its claim is
  // far less, so the GPU is shared and the engine is held to its claim).
  json::object Deploy(const std::string& name, const std::string& gpu_sharing) {
    auto created = api_.Post("/v2/models", Body(name, gpu_sharing));
    EXPECT_EQ(created.status, 201u) << created.body;
    const int64_t model_id = Api::Obj(created).at("id").as_int64();
    EXPECT_TRUE(WaitUntil([&] { return InstanceState(api_, model_id) == "RUNNING"; },
                          std::chrono::seconds(60)))
        << server_->Log();
    return FirstInstance(api_, model_id);
  }

  // A simulated deployment of one replica; gpu_sharing "" is the cluster's default.
  json::object Body(const std::string& name, const std::string& gpu_sharing) {
    json::object body{{"name", name},
                      {"project_id", project_id_},
                      {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                      {"replicas", 1}};
    if (!gpu_sharing.empty()) body["gpu_sharing"] = gpu_sharing;
    return body;
  }

  // `segma ctl <args>` as the admin: exit status and output.
  std::pair<int, std::string> Ctl(const std::string& args) {
    const std::string cmd = fmt::format("SEGMA_SERVER={} SEGMA_TOKEN={} {} ctl {} 2>&1", api_.base,
                                        api_.token, SegmaBinary(), args);
    FILE* pipe = ::popen(cmd.c_str(), "r");
    if (pipe == nullptr) return {-1, "popen failed"};
    std::string out;
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof(buf), pipe)) > 0;) out.append(buf, n);
    const int status = ::pclose(pipe);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
  }

  // The environment of instance `id`'s engine process, NUL-separated.
  std::string EngineEnviron(int64_t id) {
    return ReadFile(fmt::format(
        "/proc/{}/environ",
        StateFilePid(fmt::format("{}/data/worker/engines/instance-{}.json", dir_.path(), id))));
  }

  // The value of `name` in an environ, "" when absent.
  static std::string EnvValue(const std::string& environ, const std::string& name) {
    const std::string key = name + "=";
    for (size_t at = 0; at < environ.size();) {
      const size_t end = std::min(environ.find('\0', at), environ.size());
      if (environ.compare(at, key.size(), key) == 0) {
        return environ.substr(at + key.size(), end - at - key.size());
      }
      at = end + 1;
    }
    return "";
  }

  // The slice of instance `id` on the GPU in /v2/gpus, or an empty object.
  json::object Slice(int64_t id) {
    json::object gpus = Api::Obj(api_.Get("/v2/gpus"));
    if (!gpus.contains("items")) return {};
    for (const json::value& g : gpus.at("items").as_array()) {
      if (!g.as_object().contains("slices")) continue;
      for (const json::value& s : g.as_object().at("slices").as_array()) {
        if (s.as_object().at("instance_id").as_int64() == id) return s.as_object();
      }
    }
    return {};
  }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> server_;
  Api api_;
  int64_t project_id_ = 0;
  int64_t instance_id_ = 0;
  std::string shm_;  // the sliced engine's accounting segment
};

TEST_F(GpuSlicesTest, ASliceShowsItsUseAndTheAllocationsItsLimitRefused) {
  json::object inst = Deploy("sliced", "enforced");
  instance_id_ = inst.at("id").as_int64();
  const int64_t claim = inst.at("claim").as_object().at("vram").as_object().at("0").as_int64();
  ASSERT_GT(claim, 0);
  ASSERT_LT(claim, 80 * kGiB);

  // The engine runs with the library, its claim as the limit, its accounting in a segment of
  // this install's own.
  const std::string environ = EngineEnviron(instance_id_);
  EXPECT_NE(EnvValue(environ, "LD_PRELOAD").find("libsegma-vgpu.so"), std::string::npos);
  EXPECT_EQ(EnvValue(environ, "SEGMA_VGPU_LIMITS"), fmt::format("0={}", claim));
  shm_ = EnvValue(environ, "SEGMA_VGPU_SHM");
  EXPECT_TRUE(shm_.starts_with("/segma-vgpu-") && shm_.ends_with(fmt::format("-{}", instance_id_)))
      << shm_;

  // /v2/gpus shows the slice: named, limited to the claim, nothing refused.
  ASSERT_TRUE(WaitUntil([&] { return !Slice(instance_id_).empty(); }, std::chrono::seconds(10)))
      << api_.Get("/v2/gpus").body;
  json::object slice = Slice(instance_id_);
  EXPECT_EQ(slice.at("memory_limit").as_int64(), claim);
  EXPECT_EQ(slice.at("limit_hits").as_int64(), 0);
  EXPECT_EQ(slice.at("instance_name").as_string(), inst.at("name").as_string());

  // One of the engine's processes holds all but 1 GiB of the claim, then asks for 2 GiB more:
  // the limit refuses it.
  std::string error;
  auto accounting = vgpu::SharedAccounting::Open(shm_, &error);
  ASSERT_TRUE(accounting) << error;
  ASSERT_TRUE(accounting->Reserve(0, claim - kGiB, claim));
  ASSERT_FALSE(accounting->Reserve(0, 2 * kGiB, claim));

  ASSERT_TRUE(WaitUntil([&] { return Slice(instance_id_).at("limit_hits").as_int64() == 1; },
                        std::chrono::seconds(10)))
      << api_.Get("/v2/gpus").body;
  EXPECT_EQ(Slice(instance_id_).at("memory_used").as_int64(), claim - kGiB);

  // The instance says why, while it keeps running; so do the worker's log and its metrics.
  ASSERT_TRUE(WaitUntil(
      [&] {
        return std::string(FirstInstance(api_, inst.at("model_id").as_int64())
                               .at("state_message")
                               .as_string())
                   .find("VRAM limit reached: GPU 0: 1 allocation refused") != std::string::npos;
      },
      std::chrono::seconds(10)))
      << json::serialize(FirstInstance(api_, inst.at("model_id").as_int64()));
  EXPECT_EQ(FirstInstance(api_, inst.at("model_id").as_int64()).at("state").as_string(), "RUNNING");
  EXPECT_NE(server_->Log().find(
                fmt::format("engine of instance {} was refused device memory", instance_id_)),
            std::string::npos);
  // The worker's own /metrics (at the address it registered); the series' labels are sorted
  // (worker_metrics_test pins their order), so it is found by its instance label.
  const json::object worker =
      Api::Obj(api_.Get("/v2/workers")).at("items").as_array().at(0).as_object();
  const Api worker_api{fmt::format("http://{}:{}", worker.at("address").as_string(),
                                   worker.at("port").as_int64()),
                       ""};
  const std::string instance_label = fmt::format("instance=\"{}\"", inst.at("name").as_string());
  std::string series;
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::istringstream metrics(worker_api.Get("/metrics").body);
        for (std::string line; std::getline(metrics, line);) {
          if (line.starts_with("segma_engine_vram_limit_hits_total{") &&
              line.find(instance_label) != std::string::npos) {
            series = line;
            return line.ends_with(" 1");
          }
        }
        return false;
      },
      std::chrono::seconds(10)))
      << series;
  // segma ctl gpus list --wide: the slice, with what it holds and what was refused.
  auto [rc, out] = Ctl("gpus list --wide");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find(fmt::format(
                "{} {:.1f}/{:.1f} GiB, 1 refused", std::string(inst.at("name").as_string()),
                static_cast<double>(claim - kGiB) / kGiB, static_cast<double>(claim) / kGiB)),
            std::string::npos)
      << out;
}

TEST_F(GpuSlicesTest, ClaimsOnlySharingRunsWithoutTheLibraryAndShowsNoSlice) {
  json::object trusted = Deploy("trusted", "claims");
  const int64_t id = trusted.at("id").as_int64();
  const std::string environ = EngineEnviron(id);
  ASSERT_FALSE(environ.empty());
  EXPECT_EQ(environ.find("libsegma-vgpu.so"), std::string::npos);
  EXPECT_EQ(EnvValue(environ, "SEGMA_VGPU_LIMITS"), "");
  // A heartbeat that lists an enforced neighbour started later also saw the claims-only engine:
  // it has no slice.
  json::object sliced = Deploy("sliced", "enforced");
  instance_id_ = sliced.at("id").as_int64();
  shm_ = EnvValue(EngineEnviron(instance_id_), "SEGMA_VGPU_SHM");
  ASSERT_TRUE(WaitUntil([&] { return !Slice(instance_id_).empty(); }, std::chrono::seconds(10)))
      << api_.Get("/v2/gpus").body;
  EXPECT_TRUE(Slice(id).empty()) << api_.Get("/v2/gpus").body;
}

TEST_F(GpuSlicesTest, AClusterOfTrustedEnginesDefaultsToClaims) {
  // The admin of a cluster whose engines are trusted turns enforcement off for models that do not
  // choose; a model that chooses still gets what it chose.
  auto [rc, out] = Ctl("clusters gpu-sharing 1 claims");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("claims"), std::string::npos) << out;
  std::tie(rc, out) = Ctl("clusters gpu-sharing 1 strict");
  EXPECT_NE(rc, 0) << out;

  json::object by_default = Deploy("by-default", "");
  EXPECT_TRUE(Api::Obj(api_.Get(fmt::format("/v2/models/{}", by_default.at("model_id").as_int64())))
                  .at("gpu_sharing")
                  .is_null());
  const std::string environ = EngineEnviron(by_default.at("id").as_int64());
  ASSERT_FALSE(environ.empty());
  EXPECT_EQ(EnvValue(environ, "SEGMA_VGPU_LIMITS"), "");

  json::object chosen = Deploy("chosen", "enforced");
  instance_id_ = chosen.at("id").as_int64();
  shm_ = EnvValue(EngineEnviron(instance_id_), "SEGMA_VGPU_SHM");
  EXPECT_NE(EnvValue(EngineEnviron(instance_id_), "SEGMA_VGPU_LIMITS"), "");
}

// Compute shares (gpu_compute_percent): the engine is held to its share with SEGMA_VGPU_COMPUTE,
// the shares on the one fake GPU add up to 100 at most (a second model that would go over waits,
// with the reason, in the dry run and on its instance), and the instance's end removes its compute
// segment, which frees the share for the one that waited.
TEST_F(GpuSlicesTest, ComputeSharesOfAGpuAddUpTo100AndEndWithTheirInstance) {
  json::object first_body = Body("sixty", "enforced");
  first_body["gpu_compute_percent"] = 60;
  auto created = api_.Post("/v2/models", first_body);
  ASSERT_EQ(created.status, 201u) << created.body;
  EXPECT_EQ(Api::Obj(created).at("gpu_compute_percent").as_int64(), 60);
  const int64_t sixty = Api::Obj(created).at("id").as_int64();
  ASSERT_TRUE(
      WaitUntil([&] { return InstanceState(api_, sixty) == "RUNNING"; }, std::chrono::seconds(60)))
      << server_->Log();
  const json::object inst = FirstInstance(api_, sixty);
  instance_id_ = inst.at("id").as_int64();
  EXPECT_EQ(inst.at("claim").as_object().at("compute_percent").as_int64(), 60);
  const std::string environ = EngineEnviron(instance_id_);
  EXPECT_NE(EnvValue(environ, "LD_PRELOAD").find("libsegma-vgpu.so"), std::string::npos);
  EXPECT_EQ(EnvValue(environ, "SEGMA_VGPU_COMPUTE"), "0=60");
  shm_ = EnvValue(environ, "SEGMA_VGPU_SHM");
  ASSERT_FALSE(shm_.empty());
  // The engine's first limited launch makes its compute buckets: here, the test does.
  std::string error;
  ASSERT_TRUE(vgpu::SharedCompute::Open(shm_ + "-compute", &error)) << error;
  ASSERT_TRUE(std::filesystem::exists("/dev/shm" + shm_ + "-compute"));

  // 60 + 50 is over the GPU: the dry run says so per worker, and so does the instance.
  json::object fifty_body = Body("fifty", "enforced");
  fifty_body["gpu_compute_percent"] = 50;
  auto ev = api_.Post("/v2/model-evaluations", fifty_body);
  ASSERT_EQ(ev.status, 200u) << ev.body;
  EXPECT_FALSE(Api::Obj(ev).at("fits").as_bool()) << ev.body;
  EXPECT_NE(ev.body.find("insufficient compute: needs 50 % of a GPU's compute "
                         "(gpu_compute_percent); shares claimed: GPU 0: 60 %"),
            std::string::npos)
      << ev.body;
  EXPECT_NE(ev.body.find("lacked compute (need 50 % of a GPU)"), std::string::npos) << ev.body;
  // A share that is out of range is refused with the field's problem.
  json::object bad = Body("too-much", "enforced");
  bad["gpu_compute_percent"] = 101;
  auto refused = api_.Post("/v2/models", bad);
  EXPECT_EQ(refused.status, 400u) << refused.body;
  EXPECT_NE(refused.body.find("gpu_compute_percent must be a whole percent from 1 to 100"),
            std::string::npos)
      << refused.body;

  // The second one through the CLI (the cluster's default sharing is enforced).
  auto [rc, out] = Ctl(
      fmt::format("models create --name fifty --project {} --params-b 1 --gpu-compute-percent 50",
                  project_id_));
  ASSERT_EQ(rc, 0) << out;
  int64_t fifty = 0;
  const json::object models = Api::Obj(api_.Get("/v2/models"));
  for (const json::value& m : models.at("items").as_array()) {
    if (m.as_object().at("name").as_string() == "fifty") {
      fifty = m.as_object().at("id").as_int64();
      EXPECT_EQ(m.as_object().at("gpu_compute_percent").as_int64(), 50);
    }
  }
  ASSERT_NE(fifty, 0) << out;
  ASSERT_TRUE(WaitUntil(
      [&] {
        return json::serialize(FirstInstance(api_, fifty)).find("insufficient compute") !=
               std::string::npos;
      },
      std::chrono::seconds(20)))
      << json::serialize(FirstInstance(api_, fifty));
  EXPECT_EQ(InstanceState(api_, fifty), "UNSCHEDULABLE");

  // The first deployment goes: its engine's segments go with it, and the second one fits.
  ASSERT_EQ(
      api_.Call(boost::beast::http::verb::delete_, fmt::format("/v2/models/{}", sixty)).status,
      204u);
  EXPECT_TRUE(WaitUntil([&] { return !std::filesystem::exists("/dev/shm" + shm_ + "-compute"); },
                        std::chrono::seconds(20)));
  EXPECT_FALSE(std::filesystem::exists("/dev/shm" + shm_));
  ASSERT_TRUE(
      WaitUntil([&] { return InstanceState(api_, fifty) == "RUNNING"; }, std::chrono::seconds(60)))
      << json::serialize(FirstInstance(api_, fifty));
  const int64_t second = FirstInstance(api_, fifty).at("id").as_int64();
  EXPECT_EQ(EnvValue(EngineEnviron(second), "SEGMA_VGPU_COMPUTE"), "0=50");
  ::shm_unlink((shm_ + "-compute").c_str());
  shm_ = EnvValue(EngineEnviron(second), "SEGMA_VGPU_SHM");
}

class MigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    ASSERT_EQ(StartServer(dir_.path() + "/server", port_, "mig-admin-pw",
                          dir_.path() + "/server.log", server_, api_),
              "");
    auto p = api_.Post("/v2/projects", json::object{{"name", "mig"}});
    ASSERT_EQ(p.status, 201u) << p.body;
    project_id_ = Api::Obj(p).at("id").as_int64();
    // The worker loads "libnvidia-ml.so.1" as on a real host: here, the fake.
    const std::string lib = dir_.path() + "/lib";
    std::filesystem::create_directories(lib);
    std::filesystem::create_symlink(FAKE_NVML_PATH, lib + "/libnvidia-ml.so.1");
    std::vector<std::string> args = {SegmaBinary(), "worker",  "--server",
                                     api_.base,     "--token", RegistrationToken(api_),
                                     "--name",      "mig-host"};
    for (const char* a : {"--port", "0", "--address", "127.0.0.1", "--advertise-address",
                          "127.0.0.1", "--heartbeat-interval", "0.2"}) {
      args.push_back(a);
    }
    args.push_back("--data-dir");
    args.push_back(dir_.path() + "/worker");
    worker_ = std::make_unique<Process>(
        std::move(args),
        std::map<std::string, std::string>{{"LD_LIBRARY_PATH", lib}, {"FAKE_NVML_MIG", "1"}},
        dir_.path() + "/worker.log");
    ASSERT_TRUE(WaitForReadyWorkers(api_, 1, std::chrono::seconds(30))) << worker_->Log();
  }

  void TearDown() override {
    if (worker_) worker_->Signal(SIGKILL);
    if (server_) server_->Signal(SIGKILL);
    KillEngines(dir_.path() + "/worker/engines");
  }

  // The device of /v2/gpus with this MIG profile, or an empty object.
  json::object MigDevice(const std::string& profile) {
    json::object gpus = Api::Obj(api_.Get("/v2/gpus"));
    for (const json::value& g : gpus.at("items").as_array()) {
      const json::object& o = g.as_object();
      if (o.contains("mig_profile") && o.at("mig_profile").as_string() == profile) return o;
    }
    return {};
  }

  int64_t Create(const std::string& name, const std::string& profile) {
    auto created = api_.Post(
        "/v2/models", json::object{{"name", name},
                                   {"project_id", project_id_},
                                   {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                                   {"mig_profile", profile},
                                   {"replicas", 1}});
    EXPECT_EQ(created.status, 201u) << created.body;
    return Api::Obj(created).at("id").as_int64();
  }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> server_;
  std::unique_ptr<Process> worker_;
  Api api_;
  int64_t project_id_ = 0;
};

TEST_F(MigTest, AModelOnAMigProfileRunsOnThatDeviceByUuid) {
  // The worker reports the GPU in MIG mode and each of its devices, like a GPU.
  const json::object device = MigDevice("2g.35gb");
  ASSERT_FALSE(device.empty()) << api_.Get("/v2/gpus").body;
  const std::string uuid(device.at("uuid").as_string());
  EXPECT_TRUE(uuid.starts_with("MIG-")) << uuid;
  EXPECT_EQ(device.at("name").as_string(), "NVIDIA H200 NVL MIG 2g.35gb");
  EXPECT_EQ(device.at("parent_index").as_int64(), 1);
  ASSERT_FALSE(MigDevice("1g.18gb").empty());

  const int64_t model_id = Create("on-mig", "2g.35gb");
  ASSERT_TRUE(WaitUntil([&] { return InstanceState(api_, model_id) == "RUNNING"; },
                        std::chrono::seconds(60)))
      << json::serialize(FirstInstance(api_, model_id)) << worker_->Log();
  const json::object inst = FirstInstance(api_, model_id);
  ASSERT_EQ(inst.at("gpu_indexes").as_array().size(), 1u);
  EXPECT_EQ(inst.at("gpu_indexes").as_array()[0].as_int64(), device.at("index").as_int64());

  // The engine sees that device alone, by UUID, in NVML's order; held to its claim on it.
  const int64_t id = inst.at("id").as_int64();
  const std::string environ = ReadFile(fmt::format(
      "/proc/{}/environ",
      StateFilePid(fmt::format("{}/worker/engines/instance-{}.json", dir_.path(), id))));
  ASSERT_FALSE(environ.empty());
  EXPECT_NE(environ.find("CUDA_VISIBLE_DEVICES=" + uuid + '\0'), std::string::npos);
  EXPECT_NE(environ.find(std::string("CUDA_DEVICE_ORDER=PCI_BUS_ID") + '\0'), std::string::npos);
  const int64_t claim = inst.at("claim")
                            .as_object()
                            .at("vram")
                            .as_object()
                            .at(std::to_string(device.at("index").as_int64()))
                            .as_int64();
  EXPECT_NE(environ.find(fmt::format("SEGMA_VGPU_LIMITS=0={}", claim) + '\0'), std::string::npos);
  // /v2/gpus counts the claim on the MIG device, not on its GPU.
  ASSERT_TRUE(
      WaitUntil([&] { return MigDevice("2g.35gb").at("memory_allocated").as_int64() == claim; },
                std::chrono::seconds(10)));

  // A profile no device has: not placed, and the reason names the profile and what there is.
  const int64_t missing = Create("nowhere", "7g.141gb");
  ASSERT_TRUE(WaitUntil(
      [&] {
        const std::string body = json::serialize(FirstInstance(api_, missing));
        return body.find("no MIG device of profile 7g.141gb") != std::string::npos;
      },
      std::chrono::seconds(20)))
      << json::serialize(FirstInstance(api_, missing));
  EXPECT_NE(InstanceState(api_, missing), "RUNNING");
}

}  // namespace
}  // namespace segma::testing
