#include "worker/gpu/nvml_gpu_probe.h"

#include <dlfcn.h>
#include <stdlib.h>

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "types/worker.h"

namespace segma::gpu {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kGiB = int64_t{1} << 30;

// Sets an environment variable the fake NVML reads, for the scope of a test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    setenv(name, value, /*overwrite=*/1);
  }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

std::unique_ptr<NvmlGpuProbe> OpenFake(const char* path = FAKE_NVML_PATH) {
  Result<std::unique_ptr<NvmlGpuProbe>> probe = NvmlGpuProbe::Open(path);
  EXPECT_TRUE(probe.ok()) << probe.status().ToString();
  return probe.ok() ? std::move(probe).value() : nullptr;
}

std::vector<types::GpuDevice> ProbeOrDie(GpuProbe& probe) {
  Result<std::vector<types::GpuDevice>> gpus = probe.Probe();
  EXPECT_TRUE(gpus.ok()) << gpus.status().ToString();
  return gpus.ok() ? std::move(gpus).value() : std::vector<types::GpuDevice>{};
}

TEST(NvmlGpuProbeTest, ReportsFakeDriverInventory) {
  std::unique_ptr<NvmlGpuProbe> probe = OpenFake();
  ASSERT_NE(probe, nullptr);
  EXPECT_EQ(probe->source(), "nvml");
  EXPECT_EQ(probe->driver_version(), "570.86.15");
  probe->SetManagedPids({5151});

  std::vector<types::GpuDevice> gpus = ProbeOrDie(*probe);
  ASSERT_EQ(gpus.size(), 2u);
  const types::GpuDevice& g0 = gpus[0];
  EXPECT_EQ(g0.index, 0);
  EXPECT_EQ(g0.uuid, "GPU-00000000-1111-2222-3333-444444444444");
  EXPECT_EQ(g0.name, "NVIDIA H200 NVL");
  EXPECT_EQ(g0.vendor, "nvidia");
  EXPECT_EQ(g0.compute_capability, "9.0");
  EXPECT_EQ(g0.memory_total, 141 * kGiB);
  // Two processes (3 + 40 GiB) and the driver's 512 MiB reservation (from the v2 struct).
  EXPECT_EQ(g0.memory_used, 43 * kGiB + 512 * kMiB);
  EXPECT_EQ(g0.memory_used_external, 3 * kGiB);  // 5151 is ours, 4242 is not
  ASSERT_EQ(g0.processes.size(), 2u);
  for (const types::GpuProcess& p : g0.processes) {
    EXPECT_EQ(p.managed, p.pid == 5151) << p.pid;
    EXPECT_GT(p.memory_used, 0) << p.pid;
  }
  EXPECT_DOUBLE_EQ(g0.utilization, 57);
  EXPECT_DOUBLE_EQ(g0.temperature, 45);
  EXPECT_DOUBLE_EQ(g0.power, 250.5);  // mW → W
  EXPECT_DOUBLE_EQ(g0.power_limit, 600);
  EXPECT_DOUBLE_EQ(g0.sm_clock, 1755);
  EXPECT_DOUBLE_EQ(g0.memory_clock, 2619);
  EXPECT_FALSE(g0.simulated);
  EXPECT_FALSE(g0.mig_enabled);
  EXPECT_FALSE(g0.parent_index.has_value());
  EXPECT_EQ(g0.links, (std::map<int, std::string>{{1, "nvlink"}}));

  const types::GpuDevice& g1 = gpus[1];
  EXPECT_EQ(g1.index, 1);
  EXPECT_EQ(g1.uuid, "GPU-11111111-1111-2222-3333-444444444444");
  EXPECT_EQ(g1.memory_used, 512 * kMiB);
  EXPECT_EQ(g1.memory_used_external, 0);
  EXPECT_TRUE(g1.processes.empty());
  EXPECT_DOUBLE_EQ(g1.temperature, 38);
  EXPECT_EQ(g1.links, (std::map<int, std::string>{{0, "nvlink"}}));
}

TEST(NvmlGpuProbeTest, CountsAllProcessesAsExternalUntilPidsAreManaged) {
  std::unique_ptr<NvmlGpuProbe> probe = OpenFake();
  ASSERT_NE(probe, nullptr);
  EXPECT_EQ(ProbeOrDie(*probe)[0].memory_used_external, 43 * kGiB);
  probe->SetManagedPids({4242, 5151});
  EXPECT_EQ(ProbeOrDie(*probe)[0].memory_used_external, 0);
  probe->SetManagedPids({});
  EXPECT_EQ(ProbeOrDie(*probe)[0].memory_used_external, 43 * kGiB);
}

TEST(NvmlGpuProbeTest, SkipsDeviceWithoutPermission) {
  ScopedEnv env("FAKE_NVML_NO_PERMISSION", "1");
  std::unique_ptr<NvmlGpuProbe> probe = OpenFake();
  ASSERT_NE(probe, nullptr);
  for (int round = 0; round < 2; ++round) {  // the second round logs at debug level only
    std::vector<types::GpuDevice> gpus = ProbeOrDie(*probe);
    ASSERT_EQ(gpus.size(), 1u);
    EXPECT_EQ(gpus[0].index, 0);
    EXPECT_TRUE(gpus[0].links.empty());  // the peer was not readable
  }
}

TEST(NvmlGpuProbeTest, ReportsMigDevicesAsChildrenOfTheirGpu) {
  ScopedEnv env("FAKE_NVML_MIG", "1");
  std::unique_ptr<NvmlGpuProbe> probe = OpenFake();
  ASSERT_NE(probe, nullptr);
  std::vector<types::GpuDevice> gpus = ProbeOrDie(*probe);
  ASSERT_EQ(gpus.size(), 4u);
  EXPECT_FALSE(gpus[0].mig_enabled);

  const types::GpuDevice& parent = gpus[1];
  EXPECT_TRUE(parent.mig_enabled);
  EXPECT_DOUBLE_EQ(parent.utilization, 0);           // not supported in MIG mode
  EXPECT_EQ(parent.memory_used_external, 2 * kGiB);  // sum over its MIG devices
  EXPECT_EQ(parent.links.at(0), "nvlink");

  const types::GpuDevice& small = gpus[2];
  EXPECT_EQ(small.index, 2);
  EXPECT_EQ(small.parent_index, 1);
  EXPECT_EQ(small.uuid, "MIG-00000000-aaaa-bbbb-cccc-000000000001");
  EXPECT_EQ(small.mig_profile, "1g.18gb");
  EXPECT_EQ(small.name, "NVIDIA H200 NVL MIG 1g.18gb");
  EXPECT_EQ(small.compute_capability, "9.0");
  EXPECT_EQ(small.memory_total, 16640 * kMiB);
  EXPECT_EQ(small.memory_used, 2 * kGiB);
  EXPECT_EQ(small.memory_used_external, 2 * kGiB);
  EXPECT_TRUE(small.links.empty());

  const types::GpuDevice& big = gpus[3];
  EXPECT_EQ(big.index, 3);
  EXPECT_EQ(big.parent_index, 1);
  EXPECT_EQ(big.mig_profile, "2g.35gb");
  EXPECT_EQ(big.memory_used, 0);
}

TEST(NvmlGpuProbeTest, MeasuresProcessEntryStrideInsteadOfTrustingTheSymbol) {
  for (const char* stride : {"16", "24", "32"}) {
    ScopedEnv env("FAKE_NVML_PROC_STRIDE", stride);
    std::unique_ptr<NvmlGpuProbe> probe = OpenFake();
    ASSERT_NE(probe, nullptr);
    probe->SetManagedPids({5151});
    EXPECT_EQ(ProbeOrDie(*probe)[0].memory_used_external, 3 * kGiB) << "stride " << stride;
  }
}

TEST(NvmlGpuProbeTest, FallsBackToUnversionedSymbolsOfOldDrivers) {
  std::unique_ptr<NvmlGpuProbe> probe = OpenFake(FAKE_NVML_OLD_PATH);
  ASSERT_NE(probe, nullptr);
  probe->SetManagedPids({5151});
  std::vector<types::GpuDevice> gpus = ProbeOrDie(*probe);
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[0].memory_used, 43 * kGiB + 512 * kMiB);  // v1: used includes reserved
  EXPECT_EQ(gpus[0].memory_used_external, 3 * kGiB);       // 16-byte entries
  EXPECT_DOUBLE_EQ(gpus[0].temperature, 45);               // nvmlDeviceGetTemperature
  // No NVLink queries: the PCIe common ancestor still tells that a path exists.
  EXPECT_EQ(gpus[0].links, (std::map<int, std::string>{{1, "pcie"}}));
}

TEST(NvmlGpuProbeTest, MissingLibraryIsUnavailable) {
  Result<std::unique_ptr<NvmlGpuProbe>> probe =
      NvmlGpuProbe::Open("/nonexistent/libnvidia-ml.so.1");
  ASSERT_FALSE(probe.ok());
  EXPECT_EQ(probe.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(probe.status().message().find("cannot load /nonexistent/libnvidia-ml.so.1"),
            std::string::npos)
      << probe.status().message();
}

TEST(NvmlGpuProbeTest, LibraryWithoutNvmlIsUnavailable) {
  Result<std::unique_ptr<NvmlGpuProbe>> probe = NvmlGpuProbe::Open("libc.so.6");
  ASSERT_FALSE(probe.ok());
  EXPECT_EQ(probe.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(probe.status().message().find("does not export nvmlInit"), std::string::npos)
      << probe.status().message();
}

TEST(NvmlGpuProbeTest, DriverNotLoadedIsUnavailable) {
  ScopedEnv env("FAKE_NVML_INIT_ERROR", "9");
  Result<std::unique_ptr<NvmlGpuProbe>> probe = NvmlGpuProbe::Open(FAKE_NVML_PATH);
  ASSERT_FALSE(probe.ok());
  EXPECT_EQ(probe.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(probe.status().message().find("Driver Not Loaded (NVML error 9)"), std::string::npos)
      << probe.status().message();
}

TEST(NvmlGpuProbeTest, ShutsNvmlDownWhenDestroyed) {
  void* lib = dlopen(FAKE_NVML_PATH, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(lib, nullptr) << dlerror();
  auto sessions = reinterpret_cast<int (*)()>(dlsym(lib, "fake_nvml_sessions"));
  ASSERT_NE(sessions, nullptr);
  const int before = sessions();
  {
    std::unique_ptr<NvmlGpuProbe> probe = OpenFake();
    ASSERT_NE(probe, nullptr);
    EXPECT_EQ(sessions(), before + 1);
  }
  EXPECT_EQ(sessions(), before);
  dlclose(lib);
}

TEST(NvmlGpuProbeTest, InventoryPassesTheHeartbeatCodec) {
  ScopedEnv env("FAKE_NVML_MIG", "1");
  std::unique_ptr<NvmlGpuProbe> probe = OpenFake();
  ASSERT_NE(probe, nullptr);
  types::WorkerStatus status;
  status.gpu_source = std::string(probe->source());
  status.driver_version = probe->driver_version();
  status.gpus = ProbeOrDie(*probe);
  Result<types::WorkerStatus> back = types::WorkerStatusFromJson(types::ToJson(status));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->gpus.size(), 4u);
  EXPECT_EQ(back->driver_version, "570.86.15");
}

TEST(NvmlGpuProbeTest, ConcurrentProbesAreSafe) {
  std::unique_ptr<NvmlGpuProbe> probe = OpenFake();
  ASSERT_NE(probe, nullptr);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&probe, t] {
      for (int i = 0; i < 50; ++i) {
        probe->SetManagedPids({5151 + t});
        Result<std::vector<types::GpuDevice>> gpus = probe->Probe();
        EXPECT_TRUE(gpus.ok());
      }
    });
  }
  for (std::thread& t : threads) t.join();
}

// Runs against the machine's real driver; skipped where there is none (CI, laptops). With
// SEGMA_NVML_EXPECT_EXTERNAL_BYTES set (e.g. while another process holds GPU memory), GPU 0 must
// report at least that much external memory.
TEST(NvmlGpuProbeRealTest, ReadsTheRealDriverWhenPresent) {
  Result<std::unique_ptr<NvmlGpuProbe>> probe = NvmlGpuProbe::Open();
  if (!probe.ok()) GTEST_SKIP() << probe.status().ToString();
  types::WorkerStatus status;
  status.gpu_source = "nvml";
  status.driver_version = (*probe)->driver_version();
  status.gpus = ProbeOrDie(**probe);
  std::cout << ToJsonString(types::ToJson(status)) << "\n";
  EXPECT_FALSE(status.driver_version.empty());
  ASSERT_FALSE(status.gpus.empty());
  for (const types::GpuDevice& g : status.gpus) {
    EXPECT_TRUE(g.uuid.rfind("GPU-", 0) == 0 || g.uuid.rfind("MIG-", 0) == 0) << g.uuid;
    EXPECT_GT(g.memory_total, 0);
    EXPECT_FALSE(g.compute_capability.empty());
  }
  EXPECT_TRUE(types::WorkerStatusFromJson(types::ToJson(status)).ok());
  if (const char* expect = std::getenv("SEGMA_NVML_EXPECT_EXTERNAL_BYTES")) {
    EXPECT_GE(status.gpus[0].memory_used_external, std::atoll(expect));
  }
}

}  // namespace
}  // namespace segma::gpu
