// What `segma probe` reported on a real machine (2x NVIDIA H200, driver 580.159.04, taken by
// bench/gpu/run.sh on 2026-11-28), kept with nvidia-smi's view of the same moment: the strict
// heartbeat codec must accept a real report, and its numbers must agree with nvidia-smi.

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/json.h"
#include "types/worker.h"

namespace segma::gpu {
namespace {

std::string Fixture(const std::string& name) {
  std::ifstream in(std::string(SEGMA_DEFAULT_SOURCE_DIR) + "/tests/worker/gpu/fixtures/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.reserved,memory.free,
// utilization.gpu,temperature.gpu,power.draw,power.limit,mig.mode.current,compute_cap,
// driver_version --format=csv,noheader,nounits
std::vector<std::vector<std::string>> SmiRows(const std::string& csv) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream lines(csv);
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> cells;
    std::istringstream fields(line);
    for (std::string cell; std::getline(fields, cell, ',');) {
      cell.erase(0, cell.find_first_not_of(' '));
      cells.push_back(cell);
    }
    if (!cells.empty()) rows.push_back(cells);
  }
  return rows;
}

TEST(RealGpuFixtureTest, H200ReportMatchesNvidiaSmi) {
  Result<json::value> v = ParseJson(Fixture("h200x2-probe.json"));
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  Result<types::WorkerStatus> st = types::WorkerStatusFromJson(v->as_object());
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->gpu_source, "nvml");
  const auto rows = SmiRows(Fixture("h200x2-nvidia-smi.csv"));
  ASSERT_EQ(rows.size(), 2u);
  ASSERT_EQ(st->gpus.size(), rows.size());
  constexpr int64_t kMiB = 1024 * 1024;
  for (size_t i = 0; i < rows.size(); ++i) {
    const types::GpuDevice& g = st->gpus[i];
    const std::vector<std::string>& r = rows[i];
    ASSERT_EQ(r.size(), 14u);
    EXPECT_EQ(g.index, std::stoi(r[0]));
    EXPECT_EQ(g.uuid, r[1]);
    EXPECT_EQ(g.name, r[2]);
    EXPECT_EQ(g.memory_total / kMiB, std::stoll(r[3]));
    // NVML's total - free includes the driver's reservation, which nvidia-smi shows apart.
    EXPECT_NEAR(g.memory_used / kMiB, std::stoll(r[4]) + std::stoll(r[5]), 1);
    EXPECT_NEAR(g.temperature, std::stod(r[8]), 3);
    EXPECT_NEAR(g.power, std::stod(r[9]), 15);
    EXPECT_DOUBLE_EQ(g.power_limit, std::stod(r[10]));
    EXPECT_EQ(g.mig_enabled, r[11] == "Enabled");
    EXPECT_EQ(g.compute_capability, r[12]);
    EXPECT_EQ(st->driver_version, r[13]);
    // The two H200s are joined by NVLink (nvidia-smi topo -m: NV18).
    EXPECT_EQ(g.links.at(i == 0 ? 1 : 0), "nvlink");
  }
}

}  // namespace
}  // namespace segma::gpu
