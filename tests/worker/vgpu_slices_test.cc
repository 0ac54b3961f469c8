// The worker's reading of libsegma-vgpu's accounting: which engines it holds to limits, what their
// segments say, and the message a refused allocation leaves.

#include "worker/vgpu_slices.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "vgpu/shared_accounting.h"
#include "vgpu/shared_compute.h"

namespace segma::worker {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

// A segment name of this test process alone, unlinked at the end.
class VgpuSlicesTest : public ::testing::Test {
 protected:
  void TearDown() override {
    ::shm_unlink(shm_.c_str());
    ::shm_unlink((shm_ + "-compute").c_str());
  }
  const std::string shm_ = fmt::format("/segma-vgpu-test-{}", ::getpid());
};

engines::LaunchSpec Launch(std::string shm, std::string limits) {
  engines::LaunchSpec l;
  l.argv = {"llama-server"};
  l.env = {{"LD_PRELOAD", "/opt/segma/lib/libsegma-vgpu.so"},
           {"SEGMA_VGPU_SHM", std::move(shm)},
           {"SEGMA_VGPU_LIMITS", std::move(limits)}};
  return l;
}

TEST_F(VgpuSlicesTest, EngineOfALaunchMapsOrdinalsToTheInstancesGpus) {
  // CUDA ordinal 1 of an engine on GPUs 2 and 5 is GPU 5.
  std::optional<VgpuEngine> e = VgpuEngineOf(7, Launch(shm_, "1=12884901888"), {2, 5});
  ASSERT_TRUE(e);
  EXPECT_EQ(e->instance_id, 7);
  EXPECT_EQ(e->shm, shm_);
  ASSERT_EQ(e->limits.size(), 1u);
  EXPECT_EQ(e->limits.at(5).ordinal, 1);
  EXPECT_EQ(e->limits.at(5).bytes, 12 * kGiB);

  // No library, an unreadable list, or an ordinal the instance does not have: nothing to read.
  engines::LaunchSpec claims_only;
  claims_only.argv = {"llama-server"};
  EXPECT_FALSE(VgpuEngineOf(7, claims_only, {0}));
  EXPECT_FALSE(VgpuEngineOf(7, Launch(shm_, "0=lots"), {0}));
  EXPECT_FALSE(VgpuEngineOf(7, Launch(shm_, "3=1G"), {0}));
}

TEST_F(VgpuSlicesTest, ReadsWhatTheEnginesProcessesHoldAndWhatWasRefused) {
  std::optional<VgpuEngine> e = VgpuEngineOf(9, Launch(shm_, "0=10G"), {3});
  ASSERT_TRUE(e);

  // Before any engine process made the segment: nothing used, no hits, and no segment made.
  std::map<int, types::GpuSlice> before = ReadSlices(*e);
  ASSERT_EQ(before.size(), 1u);
  EXPECT_EQ(before.at(3).instance_id, 9);
  EXPECT_EQ(before.at(3).memory_limit, 10 * kGiB);
  EXPECT_EQ(before.at(3).memory_used, 0);
  EXPECT_EQ(before.at(3).limit_hits, 0);
  EXPECT_FALSE(std::filesystem::exists("/dev/shm" + shm_));
  EXPECT_EQ(LimitHitsMessage(before), "");

  // An engine process books 9 GiB, then is refused 2 GiB more, twice (as the library does).
  std::string error;
  std::unique_ptr<vgpu::SharedAccounting> engine = vgpu::SharedAccounting::Open(shm_, &error);
  ASSERT_TRUE(engine) << error;
  ASSERT_TRUE(engine->Reserve(0, 9 * kGiB, 10 * kGiB));
  ASSERT_FALSE(engine->Reserve(0, 2 * kGiB, 10 * kGiB));
  ASSERT_FALSE(engine->Reserve(0, 2 * kGiB, 10 * kGiB));

  std::map<int, types::GpuSlice> after = ReadSlices(*e);
  EXPECT_EQ(after.at(3).memory_used, 9 * kGiB);
  EXPECT_EQ(after.at(3).limit_hits, 2);
  EXPECT_EQ(LimitHitsMessage(after),
            "GPU 3: 2 allocations refused at the VRAM limit of 10.0 GiB (9.0 GiB in use)");

  // The heartbeat's GPUs get the slice on the right device only.
  std::vector<types::GpuDevice> gpus(2);
  gpus[0].index = 0;
  gpus[1].index = 3;
  AddSlices({{e->instance_id, after}}, gpus);
  EXPECT_TRUE(gpus[0].slices.empty());
  ASSERT_EQ(gpus[1].slices.size(), 1u);
  EXPECT_EQ(gpus[1].slices[0], after.at(3));
}

TEST_F(VgpuSlicesTest, MemoryOfAnEngineProcessThatDiedIsNotCounted) {
  std::optional<VgpuEngine> e = VgpuEngineOf(4, Launch(shm_, "0=8G"), {0});
  ASSERT_TRUE(e);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::string error;
    auto acc = vgpu::SharedAccounting::Open(shm_, &error);
    _exit(acc && acc->Reserve(0, 5 * kGiB, 8 * kGiB) ? 0 : 1);  // dies holding 5 GiB
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(ReadSlices(*e).at(0).memory_used, 0);
}

// When an instance ends the worker removes both of the engine's segments (DropVgpu): the memory
// accounting and the compute buckets, made by the library as the engine's processes do.
TEST_F(VgpuSlicesTest, UnlinkRemovesTheAccountingAndTheComputeBuckets) {
  std::string error;
  {
    std::unique_ptr<vgpu::SharedAccounting> memory = vgpu::SharedAccounting::Open(shm_, &error);
    ASSERT_TRUE(memory) << error;
    std::unique_ptr<vgpu::SharedCompute> compute =
        vgpu::SharedCompute::Open(shm_ + "-compute", &error);
    ASSERT_TRUE(compute) << error;
    ASSERT_TRUE(compute->Register(::getpid()));
  }
  ASSERT_TRUE(std::filesystem::exists("/dev/shm" + shm_));
  ASSERT_TRUE(std::filesystem::exists("/dev/shm" + shm_ + "-compute"));
  UnlinkVgpuSegments(shm_);
  EXPECT_FALSE(std::filesystem::exists("/dev/shm" + shm_));
  EXPECT_FALSE(std::filesystem::exists("/dev/shm" + shm_ + "-compute"));
  // An engine without a compute share has only the first; removing twice is harmless.
  ASSERT_TRUE(vgpu::SharedAccounting::Open(shm_, &error)) << error;
  UnlinkVgpuSegments(shm_);
  UnlinkVgpuSegments(shm_);
  EXPECT_FALSE(std::filesystem::exists("/dev/shm" + shm_));
}

TEST(VgpuSlicesMessageTest, NamesEveryGpuWithHits) {
  std::map<int, types::GpuSlice> slices;
  slices[0] = {
      .instance_id = 1, .memory_limit = 12 * kGiB, .memory_used = 12 * kGiB, .limit_hits = 1};
  slices[1] = {.instance_id = 1, .memory_limit = 12 * kGiB, .memory_used = kGiB, .limit_hits = 0};
  slices[2] = {
      .instance_id = 1, .memory_limit = 6 * kGiB, .memory_used = 5 * kGiB, .limit_hits = 4};
  EXPECT_EQ(LimitHitsMessage(slices),
            "GPU 0: 1 allocation refused at the VRAM limit of 12.0 GiB (12.0 GiB in use); "
            "GPU 2: 4 allocations refused at the VRAM limit of 6.0 GiB (5.0 GiB in use)");
}

}  // namespace
}  // namespace segma::worker
