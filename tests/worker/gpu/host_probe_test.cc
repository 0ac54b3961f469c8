#include "worker/gpu/host_probe.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace segma::gpu {
namespace {

namespace fs = std::filesystem;

// A scratch directory standing in for /proc.
class HostProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "segma-host-probe-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    WriteMeminfo(
        "MemTotal:       16000000 kB\nMemFree:         1000000 kB\n"
        "MemAvailable:    4000000 kB\nBuffers:          100000 kB\n");
  }
  void TearDown() override { fs::remove_all(root_); }

  void Write(const std::string& name, const std::string& text) {
    std::ofstream(root_ / name) << text;
  }
  // user nice system idle iowait irq softirq steal guest guest_nice
  void WriteStat(const std::string& cpu_line) {
    Write("stat", "cpu  " + cpu_line +
                      "\ncpu0 1 0 1 1 0 0 0 0 0 0\ncpu1 1 0 1 1 0 0 0 0 0 0\n"
                      "cpu2 1 0 1 1 0 0 0 0 0 0\ncpu3 1 0 1 1 0 0 0 0 0 0\n"
                      "intr 12345\nctxt 999\nbtime 1700000000\n");
  }
  void WriteMeminfo(const std::string& text) { Write("meminfo", text); }

  fs::path root_;
};

TEST_F(HostProbeTest, ReadsCpuMemoryDiskAndArch) {
  WriteStat("100 0 100 700 100 0 0 0 50 0");  // busy 200 of 1000 since boot
  HostProbe probe(root_.string(), root_.string());
  Result<types::WorkerStatus> s = probe.Probe();
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->cpu_count, 4);
  EXPECT_DOUBLE_EQ(s->cpu_utilization, 20);
  EXPECT_EQ(s->memory_total, int64_t{16000000} * 1024);
  EXPECT_EQ(s->memory_used, int64_t{12000000} * 1024);
  EXPECT_GT(s->disk_total, 0);
  EXPECT_GE(s->disk_total, s->disk_used);
  EXPECT_FALSE(s->arch.empty());
  EXPECT_EQ(s->os, "linux");
  EXPECT_TRUE(s->gpus.empty());
  EXPECT_EQ(s->gpu_source, "");
}

TEST_F(HostProbeTest, UtilizationIsMeasuredBetweenCalls) {
  HostProbe probe(root_.string(), root_.string());
  WriteStat("100 0 100 700 100 0 0 0 0 0");
  ASSERT_TRUE(probe.Probe().ok());
  WriteStat("300 0 200 800 100 0 0 0 0 0");  // +300 busy, +100 idle
  EXPECT_DOUBLE_EQ(probe.Probe()->cpu_utilization, 75);
  // No time passed: the last figure stands instead of 0/0.
  EXPECT_DOUBLE_EQ(probe.Probe()->cpu_utilization, 75);
  WriteStat("300 0 200 1200 100 0 0 0 0 0");  // idle only
  EXPECT_DOUBLE_EQ(probe.Probe()->cpu_utilization, 0);
}

TEST_F(HostProbeTest, FallsBackWithoutMemAvailable) {
  WriteStat("1 0 1 1 0 0 0 0 0 0");
  WriteMeminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n");
  HostProbe probe(root_.string(), root_.string());
  Result<types::WorkerStatus> s = probe.Probe();
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->memory_used, 600 * 1024);
}

TEST_F(HostProbeTest, ReportsMissingOrBrokenSources) {
  HostProbe probe(root_.string(), root_.string());
  EXPECT_EQ(probe.Probe().status().code(), StatusCode::kUnavailable);  // no stat file

  Write("stat", "intr 1\n");
  EXPECT_EQ(probe.Probe().status().code(), StatusCode::kUnavailable);

  WriteStat("1 0 1 1 0 0 0 0 0 0");
  WriteMeminfo("Bogus: 1 kB\n");
  EXPECT_EQ(probe.Probe().status().code(), StatusCode::kUnavailable);

  WriteMeminfo("MemTotal: 1000 kB\nMemAvailable: 10 kB\n");
  HostProbe no_dir((root_ / "missing").string(), root_.string());
  EXPECT_EQ(no_dir.Probe().status().code(), StatusCode::kNotFound);
}

TEST(HostProbeRealTest, ReadsThisMachine) {
  HostProbe probe(fs::temp_directory_path().string());
  Result<types::WorkerStatus> s = probe.Probe();
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_GE(s->cpu_count, 1);
  EXPECT_GT(s->memory_total, 0);
  EXPECT_LE(s->memory_used, s->memory_total);
  EXPECT_GE(s->cpu_utilization, 0);
  EXPECT_LE(s->cpu_utilization, 100);
  Result<types::WorkerStatus> again = probe.Probe();
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(types::WorkerStatusFromJson(types::ToJson(*again)).ok());
}

}  // namespace
}  // namespace segma::gpu
