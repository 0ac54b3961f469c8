#include "worker/gpu/fake_gpu_probe.h"

#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "types/worker.h"

namespace segma::gpu {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

TEST(ParseFakeGpuSpecTest, ParsesGroupsWithOptionalCount) {
  Result<std::vector<FakeGpuSpec>> specs =
      ParseFakeGpuSpec("4xH200-NVL:141,2xRTX-PRO-6000:96, L40S:48 ");
  ASSERT_TRUE(specs.ok()) << specs.status().ToString();
  EXPECT_EQ(*specs, (std::vector<FakeGpuSpec>{
                        {4, "H200-NVL", 141}, {2, "RTX-PRO-6000", 96}, {1, "L40S", 48}}));
  Result<std::vector<FakeGpuSpec>> xavier = ParseFakeGpuSpec("Xavier:32");
  ASSERT_TRUE(xavier.ok()) << xavier.status().ToString();
  EXPECT_EQ(xavier->at(0).name, "Xavier");
}

TEST(ParseFakeGpuSpecTest, DemoSpecIsValid) {
  Result<std::vector<FakeGpuSpec>> specs = ParseFakeGpuSpec(kDemoGpuSpec);
  ASSERT_TRUE(specs.ok()) << specs.status().ToString();
  EXPECT_EQ(*specs, (std::vector<FakeGpuSpec>{{2, "H200-NVL", 141}, {1, "RTX-PRO-6000", 96}}));
}

TEST(ParseFakeGpuSpecTest, RejectsBadSpecsWithClearErrors) {
  struct Case {
    const char* spec;
    const char* message_part;
  };
  for (const Case& c : std::vector<Case>{
           {"", "empty fake GPU spec"},
           {"   ", "empty fake GPU spec"},
           {"3xH100", "missing ':GiB' memory size"},
           {"0xA:1", "count must be between 1 and 64"},
           {"65xA:1", "count must be between 1 and 64"},
           {"40xA:1,30xB:1", "more than 64 GPUs"},
           {"x:1", "missing count before 'x'"},
           {"xH100:80", "missing count before 'x'"},
           {"2x:80", "missing GPU name"},
           {":80", "missing GPU name"},
           {"A:0", "memory size must be between 1 and 16384 GiB"},
           {"A:-5", "memory size must be positive"},
           {"A:99999", "memory size must be between 1 and 16384 GiB"},
           {"A:", "missing memory size"},
           {"H100:80GB", "whole number of GiB"},
           {"H100:8.5", "whole number of GiB"},
           {"H 100:80", "only letters, digits"},
           {"A:1,", "empty group"},
           {"A:1,,B:2", "empty group"},
           {"garbage", "missing ':GiB'"},
           {"99999999999999999999xA:1", "count must be between"},
       }) {
    Result<std::vector<FakeGpuSpec>> specs = ParseFakeGpuSpec(c.spec);
    ASSERT_FALSE(specs.ok()) << "'" << c.spec << "' was accepted";
    EXPECT_EQ(specs.status().code(), StatusCode::kInvalidArgument) << c.spec;
    EXPECT_NE(specs.status().message().find(c.message_part), std::string::npos)
        << "'" << c.spec << "': " << specs.status().message();
  }
}

TEST(FakeGpuNamesTest, DisplayNamesAndComputeCapabilities) {
  EXPECT_EQ(FakeGpuDisplayName("H200-NVL"), "NVIDIA H200 NVL");
  EXPECT_EQ(FakeGpuDisplayName("RTX-PRO-6000"), "NVIDIA RTX PRO 6000");
  EXPECT_EQ(FakeGpuDisplayName("NVIDIA-A100"), "NVIDIA A100");
  EXPECT_EQ(KnownComputeCapability("NVIDIA H200 NVL"), "9.0");
  EXPECT_EQ(KnownComputeCapability("NVIDIA H100 80GB HBM3"), "9.0");
  EXPECT_EQ(KnownComputeCapability("NVIDIA RTX PRO 6000"), "12.0");
  EXPECT_EQ(KnownComputeCapability("NVIDIA RTX 6000 Ada Generation"), "8.9");
  EXPECT_EQ(KnownComputeCapability("NVIDIA A100 SXM4 80GB"), "8.0");
  EXPECT_EQ(KnownComputeCapability("NVIDIA A10"), "8.6");
  EXPECT_EQ(KnownComputeCapability("NVIDIA L40S"), "8.9");
  EXPECT_EQ(KnownComputeCapability("NVIDIA B200"), "10.0");
  EXPECT_EQ(KnownComputeCapability("NVIDIA Mystery 9000"), "");
}

TEST(FakeGpuProbeTest, ReportsTheDemoPool) {
  Result<std::unique_ptr<FakeGpuProbe>> probe = FakeGpuProbe::Create(kDemoGpuSpec, "worker-a");
  ASSERT_TRUE(probe.ok()) << probe.status().ToString();
  EXPECT_EQ((*probe)->source(), "fake");
  Result<std::vector<types::GpuDevice>> gpus = (*probe)->Probe();
  ASSERT_TRUE(gpus.ok());
  ASSERT_EQ(gpus->size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const types::GpuDevice& g = gpus->at(i);
    EXPECT_EQ(g.index, i);
    EXPECT_TRUE(g.simulated);
    EXPECT_EQ(g.uuid.rfind("GPU-fake-", 0), 0u) << g.uuid;
    EXPECT_EQ(g.memory_used, 0);
    EXPECT_GT(g.power_limit, 0);
  }
  EXPECT_EQ(gpus->at(0).name, "NVIDIA H200 NVL");
  EXPECT_EQ(gpus->at(0).compute_capability, "9.0");
  EXPECT_EQ(gpus->at(0).memory_total, 141 * kGiB);
  EXPECT_EQ(gpus->at(2).name, "NVIDIA RTX PRO 6000");
  EXPECT_EQ(gpus->at(2).compute_capability, "12.0");
  EXPECT_EQ(gpus->at(2).memory_total, 96 * kGiB);
  EXPECT_EQ(gpus->at(0).links, (std::map<int, std::string>{{1, "nvlink"}, {2, "pcie"}}));
  EXPECT_EQ(gpus->at(1).links, (std::map<int, std::string>{{0, "nvlink"}, {2, "pcie"}}));
  EXPECT_EQ(gpus->at(2).links, (std::map<int, std::string>{{0, "pcie"}, {1, "pcie"}}));
}

TEST(FakeGpuProbeTest, UuidsAreStablePerSeedAndDistinctAcrossWorkers) {
  const auto uuids = [](std::string_view seed) {
    std::vector<std::string> out;
    std::unique_ptr<FakeGpuProbe> probe = FakeGpuProbe::Create("8xH100:80", seed).value();
    const std::vector<types::GpuDevice> gpus = probe->Probe().value();
    for (const types::GpuDevice& g : gpus) out.push_back(g.uuid);
    return out;
  };
  const std::vector<std::string> a = uuids("worker-a");
  EXPECT_EQ(a, uuids("worker-a"));
  const std::vector<std::string> b = uuids("worker-b");
  std::set<std::string> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 16u);
}

TEST(FakeGpuProbeTest, MemoryFollowsSetters) {
  FakeGpuProbe probe({{2, "A100", 80}}, "w");
  EXPECT_TRUE(probe.SetUsedMemory(1, 30 * kGiB).ok());
  EXPECT_TRUE(probe.SetExternalMemory(1, 10 * kGiB).ok());
  std::vector<types::GpuDevice> gpus = probe.Probe().value();
  EXPECT_EQ(gpus[0].memory_used, 0);
  EXPECT_EQ(gpus[1].memory_used, 40 * kGiB);
  EXPECT_EQ(gpus[1].memory_used_external, 10 * kGiB);
  EXPECT_GT(gpus[1].utilization, gpus[0].utilization);
  EXPECT_TRUE(gpus[0].links.at(1) == "pcie");  // A100 groups get no NVLink

  EXPECT_EQ(probe.SetUsedMemory(2, 1).code(), StatusCode::kNotFound);
  EXPECT_EQ(probe.SetUsedMemory(-1, 1).code(), StatusCode::kNotFound);
  EXPECT_EQ(probe.SetUsedMemory(0, -1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(probe.SetUsedMemory(1, 71 * kGiB).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(probe.SetUsedMemory(1, 70 * kGiB).ok());
  EXPECT_TRUE(probe.SetUsedMemory(1, 0).ok());
  EXPECT_EQ(probe.Probe().value()[1].memory_used, 10 * kGiB);
}

TEST(FakeGpuProbeTest, InventoryPassesTheHeartbeatCodec) {
  std::unique_ptr<FakeGpuProbe> probe =
      FakeGpuProbe::Create("64xH200-NVL:141", "big-worker").value();
  ASSERT_TRUE(probe->SetUsedMemory(63, 141 * kGiB).ok());
  types::WorkerStatus status;
  status.gpu_source = "fake";
  status.gpus = probe->Probe().value();
  Result<types::WorkerStatus> back = types::WorkerStatusFromJson(types::ToJson(status));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->gpus.size(), 64u);
  EXPECT_EQ(back->gpus[63].memory_used, 141 * kGiB);
}

TEST(NoGpuProbeTest, ReportsNothing) {
  NoGpuProbe probe;
  EXPECT_EQ(probe.source(), "none");
  EXPECT_TRUE(probe.Probe().value().empty());
  EXPECT_EQ(probe.driver_version(), "");
}

// Dashboards over simulated GPUs must show live lines: busy GPUs move within a plausible band,
// with clocks, and claimed memory shows up as used.
TEST(FakeGpuProbeTest, ClaimedGpusReportMovingPlausibleTelemetry) {
  FakeGpuProbe probe({{2, "H200-NVL", 141}}, "w");
  probe.SetClaimedMemory({{1, 70 * kGiB}});
  std::set<double> utilizations;
  for (int i = 0; i < 10; ++i) {
    const std::vector<types::GpuDevice> gpus = probe.Probe().value();
    EXPECT_EQ(gpus[0].memory_used, 0);
    EXPECT_EQ(gpus[1].memory_used, 70 * kGiB);
    EXPECT_LT(gpus[0].utilization, 3.01);
    EXPECT_GE(gpus[1].utilization, 25);
    EXPECT_LE(gpus[1].utilization, 65);
    EXPECT_GT(gpus[1].temperature, gpus[0].temperature);
    EXPECT_GT(gpus[1].sm_clock, gpus[0].sm_clock);
    EXPECT_GE(gpus[0].sm_clock, 345);
    EXPECT_DOUBLE_EQ(gpus[1].memory_clock, 2619);
    EXPECT_LE(gpus[1].power, gpus[1].power_limit);
    utilizations.insert(gpus[1].utilization);
  }
  EXPECT_GE(utilizations.size(), 5u);  // it moves
  probe.SetClaimedMemory({});
  EXPECT_EQ(probe.Probe().value()[1].memory_used, 0);
}

}  // namespace
}  // namespace segma::gpu
