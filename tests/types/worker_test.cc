#include "types/worker.h"

#include <string>

#include <gtest/gtest.h>

namespace segma::types {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

GpuDevice SampleGpu(int index) {
  GpuDevice g;
  g.index = index;
  g.uuid = "GPU-" + std::to_string(index);
  g.name = "NVIDIA H200 NVL";
  g.compute_capability = "9.0";
  g.memory_total = 141 * kGiB;
  g.memory_used = 43 * kGiB;
  g.memory_used_external = 3 * kGiB;
  g.utilization = 57.5;
  g.temperature = 45;
  g.power = 250.5;
  g.power_limit = 600;
  g.sm_clock = 1755;
  g.memory_clock = 2619;
  g.links = {{index == 0 ? 1 : 0, "nvlink"}, {7, "pcie"}};
  g.processes = {{.pid = 4242, .memory_used = 40 * kGiB, .managed = true},
                 {.pid = 77, .memory_used = 3 * kGiB, .managed = false}};
  g.slices = {
      {.instance_id = 12, .memory_limit = 20 * kGiB, .memory_used = 19 * kGiB, .limit_hits = 3}};
  return g;
}

WorkerStatus SampleStatus() {
  WorkerStatus s;
  s.cpu_count = 64;
  s.cpu_utilization = 12.5;
  s.memory_total = 512 * kGiB;
  s.memory_used = 100 * kGiB;
  s.disk_total = 4000 * kGiB;
  s.disk_used = 1000 * kGiB;
  s.arch = "x86_64";
  s.os = "linux";
  s.gpu_source = "nvml";
  s.driver_version = "570.86.15";
  s.gpus = {SampleGpu(0), SampleGpu(1)};
  GpuDevice mig = SampleGpu(2);
  mig.uuid = "MIG-2";
  mig.parent_index = 1;
  mig.mig_profile = "1g.18gb";
  mig.links.clear();
  s.gpus[1].mig_enabled = true;
  s.gpus.push_back(mig);
  return s;
}

json::object Parse(std::string_view text) { return ParseJson(text).value().as_object(); }

// A valid GPU object with `field` replaced by `value` (raw JSON).
json::object GpuWith(std::string_view field, std::string_view value) {
  json::object o = ToJson(SampleGpu(0));
  o[field] = ParseJson(value).value();
  return o;
}

void ExpectGpuError(const json::object& o, std::string_view message) {
  Result<GpuDevice> g = GpuDeviceFromJson(o);
  ASSERT_FALSE(g.ok()) << "accepted " << ToJsonString(o);
  EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(g.status().message(), message);
}

void ExpectStatusError(const json::object& o, std::string_view message) {
  Result<WorkerStatus> s = WorkerStatusFromJson(o);
  ASSERT_FALSE(s.ok()) << "accepted " << ToJsonString(o);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.status().message(), message);
}

void ExpectSameGpu(const GpuDevice& a, const GpuDevice& b) {
  EXPECT_EQ(a.index, b.index);
  EXPECT_EQ(a.uuid, b.uuid);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.vendor, b.vendor);
  EXPECT_EQ(a.compute_capability, b.compute_capability);
  EXPECT_EQ(a.memory_total, b.memory_total);
  EXPECT_EQ(a.memory_used, b.memory_used);
  EXPECT_EQ(a.memory_used_external, b.memory_used_external);
  EXPECT_DOUBLE_EQ(a.utilization, b.utilization);
  EXPECT_DOUBLE_EQ(a.temperature, b.temperature);
  EXPECT_DOUBLE_EQ(a.power, b.power);
  EXPECT_DOUBLE_EQ(a.power_limit, b.power_limit);
  EXPECT_DOUBLE_EQ(a.sm_clock, b.sm_clock);
  EXPECT_DOUBLE_EQ(a.memory_clock, b.memory_clock);
  EXPECT_EQ(a.simulated, b.simulated);
  EXPECT_EQ(a.mig_enabled, b.mig_enabled);
  EXPECT_EQ(a.parent_index, b.parent_index);
  EXPECT_EQ(a.mig_profile, b.mig_profile);
  EXPECT_EQ(a.links, b.links);
  ASSERT_EQ(a.processes.size(), b.processes.size());
  for (size_t i = 0; i < a.processes.size(); ++i) {
    EXPECT_EQ(a.processes[i].pid, b.processes[i].pid);
    EXPECT_EQ(a.processes[i].memory_used, b.processes[i].memory_used);
    EXPECT_EQ(a.processes[i].managed, b.processes[i].managed);
  }
  EXPECT_EQ(a.slices, b.slices);
}

TEST(WorkerCodecTest, GpuDeviceRoundTrips) {
  GpuDevice g = SampleGpu(0);
  g.simulated = true;
  g.parent_index = 3;
  g.mig_profile = "2g.35gb";
  // Through text, as a heartbeat travels.
  Result<GpuDevice> back = GpuDeviceFromJson(Parse(ToJsonString(ToJson(g))));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSameGpu(g, *back);
}

TEST(WorkerCodecTest, GpuDeviceJsonShape) {
  json::object o = ToJson(SampleGpu(0));
  EXPECT_EQ(o.at("links"), ParseJson(R"({"1":"nvlink","7":"pcie"})").value());
  EXPECT_EQ(o.at("memory_total").as_int64(), 141 * kGiB);
  EXPECT_EQ(o.at("vendor").as_string(), "nvidia");
  EXPECT_FALSE(o.contains("parent_index"));
  EXPECT_FALSE(o.contains("mig_profile"));
  EXPECT_EQ(o.at("processes"),
            ParseJson(R"([{"pid":4242,"memory_used":42949672960,"managed":true},)"
                      R"({"pid":77,"memory_used":3221225472,"managed":false}])")
                .value());
  EXPECT_EQ(o.at("slices"), ParseJson(R"([{"instance_id":12,"memory_limit":21474836480,)"
                                      R"("memory_used":20401094656,"limit_hits":3}])")
                                .value());
  GpuDevice bare = SampleGpu(1);
  bare.processes.clear();
  bare.slices.clear();
  EXPECT_FALSE(ToJson(bare).contains("processes"));
  EXPECT_FALSE(ToJson(bare).contains("slices"));
}

TEST(WorkerCodecTest, WorkerStatusRoundTrips) {
  WorkerStatus s = SampleStatus();
  Result<WorkerStatus> back = WorkerStatusFromJson(Parse(ToJsonString(ToJson(s))));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->cpu_count, s.cpu_count);
  EXPECT_DOUBLE_EQ(back->cpu_utilization, s.cpu_utilization);
  EXPECT_EQ(back->memory_total, s.memory_total);
  EXPECT_EQ(back->memory_used, s.memory_used);
  EXPECT_EQ(back->disk_total, s.disk_total);
  EXPECT_EQ(back->disk_used, s.disk_used);
  EXPECT_EQ(back->arch, s.arch);
  EXPECT_EQ(back->os, s.os);
  EXPECT_EQ(back->gpu_source, s.gpu_source);
  EXPECT_EQ(back->driver_version, s.driver_version);
  ASSERT_EQ(back->gpus.size(), s.gpus.size());
  for (size_t i = 0; i < s.gpus.size(); ++i) ExpectSameGpu(s.gpus[i], back->gpus[i]);
}

TEST(WorkerCodecTest, DefaultWorkerStatusRoundTrips) {
  Result<WorkerStatus> back = WorkerStatusFromJson(ToJson(WorkerStatus{}));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->gpus.empty());
}

TEST(WorkerCodecTest, OptionalFieldsDefault) {
  Result<GpuDevice> g =
      GpuDeviceFromJson(Parse(R"({"index":0,"uuid":"GPU-x","name":"X","memory_total":1})"));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->vendor, "nvidia");
  EXPECT_EQ(g->memory_used, 0);
  EXPECT_TRUE(g->links.empty());
  EXPECT_FALSE(g->parent_index.has_value());
}

TEST(WorkerCodecTest, RejectsUnknownFields) {
  ExpectGpuError(GpuWith("memory_free", "1"), "unknown field 'memory_free'");
  json::object s = ToJson(SampleStatus());
  s["gpus"].as_array()[2].as_object()["bogus"] = true;
  ExpectStatusError(s, "unknown field 'gpus[2].bogus'");
  json::object top = ToJson(SampleStatus());
  top["hostname"] = "x";
  ExpectStatusError(top, "unknown field 'hostname'");
}

TEST(WorkerCodecTest, RejectsWrongTypesAndMissingFields) {
  ExpectGpuError(GpuWith("memory_total", R"("1")"), "memory_total must be an integer");
  ExpectGpuError(GpuWith("memory_total", "1.5"), "memory_total must be an integer");
  ExpectGpuError(GpuWith("utilization", R"("high")"), "utilization must be a number");
  ExpectGpuError(GpuWith("simulated", "1"), "simulated must be a boolean");
  ExpectGpuError(GpuWith("links", "[]"), "links must be an object of strings");
  ExpectGpuError(GpuWith("links", R"({"1":2})"), "links.1 must be a string");
  json::object no_uuid = ToJson(SampleGpu(0));
  no_uuid.erase("uuid");
  ExpectGpuError(no_uuid, "uuid is required");

  json::object s = ToJson(SampleStatus());
  s["gpus"].as_array()[1].as_object()["memory_used"] = "lots";
  ExpectStatusError(s, "gpus[1].memory_used must be an integer");
  json::object not_array = ToJson(SampleStatus());
  not_array["gpus"] = json::object();
  ExpectStatusError(not_array, "gpus must be an array of objects");
  json::object not_object = ToJson(SampleStatus());
  not_object["gpus"].as_array()[0] = 7;
  ExpectStatusError(not_object, "gpus[0] must be an object");
  json::object cpu = ToJson(SampleStatus());
  cpu["cpu_count"] = "64";
  ExpectStatusError(cpu, "cpu_count must be an integer");
}

TEST(WorkerCodecTest, RejectsOutOfRangeGpuValues) {
  ExpectGpuError(GpuWith("index", "-1"), "index must be between 0 and 1023");
  ExpectGpuError(GpuWith("memory_total", "-1"), "memory_total must be >= 0");
  ExpectGpuError(GpuWith("memory_used", "-5"), "memory_used must be >= 0");
  ExpectGpuError(GpuWith("memory_used", std::to_string(142 * kGiB)),
                 "memory_used must be <= memory_total");
  ExpectGpuError(GpuWith("memory_used_external", std::to_string(142 * kGiB)),
                 "memory_used_external must be <= memory_total");
  ExpectGpuError(GpuWith("utilization", "100.5"), "utilization must be between 0 and 100");
  ExpectGpuError(GpuWith("utilization", "-1"), "utilization must be between 0 and 100");
  ExpectGpuError(GpuWith("power", "-3"), "power must be between 0 and 100000");
  ExpectGpuError(GpuWith("temperature", "1e9"), "temperature must be between -300 and 300");
  ExpectGpuError(GpuWith("sm_clock", "-1"), "sm_clock must be between 0 and 100000");
  ExpectGpuError(GpuWith("uuid", R"("")"), "uuid must not be empty");
  ExpectGpuError(GpuWith("name", '"' + std::string(200, 'a') + '"'),
                 "name must be at most 128 characters");
  ExpectGpuError(GpuWith("parent_index", "0"), "parent_index must differ from index");
  ExpectGpuError(GpuWith("processes", "{}"), "processes must be an array of objects");
  ExpectGpuError(GpuWith("processes", "[1]"), "processes[0] must be an object");
  ExpectGpuError(GpuWith("processes", R"([{"pid":0}])"),
                 "processes[0].pid must be a positive process id");
  ExpectGpuError(GpuWith("processes", R"([{"pid":5,"memory_used":-1}])"),
                 "processes[0].memory_used must be >= 0");
  ExpectGpuError(GpuWith("processes", R"([{"pid":5,"cpu":1}])"),
                 "unknown field 'processes[0].cpu'");
  ExpectGpuError(GpuWith("slices", "{}"), "slices must be an array of objects");
  ExpectGpuError(GpuWith("slices", R"([{"instance_id":0,"memory_limit":1}])"),
                 "slices[0].instance_id must be > 0");
  ExpectGpuError(GpuWith("slices", R"([{"instance_id":4,"memory_limit":1,"limit_hits":-1}])"),
                 "slices[0].limit_hits must be >= 0");
  ExpectGpuError(GpuWith("slices", R"([{"instance_id":4}])"), "slices[0].memory_limit is required");
  ExpectGpuError(GpuWith("parent_index", "-2"), "parent_index must be between 0 and 1023");
  ExpectGpuError(GpuWith("links", R"({"0":"nvlink"})"), "links.0 must not link a GPU to itself");
  ExpectGpuError(GpuWith("links", R"({"1":"infiniband"})"),
                 R"(links.1 must be "nvlink" or "pcie")");
  ExpectGpuError(GpuWith("links", R"({"one":"nvlink"})"),
                 "links.one key must be a GPU index 0-1023");
  ExpectGpuError(GpuWith("links", R"({"1x":"nvlink"})"), "links.1x key must be a GPU index 0-1023");
  ExpectGpuError(GpuWith("links", R"({"-1":"nvlink"})"), "links.-1 key must be a GPU index 0-1023");
}

TEST(WorkerCodecTest, RejectsInconsistentWorkerStatus) {
  const auto with = [](std::string_view field, json::value v) {
    json::object o = ToJson(SampleStatus());
    o[field] = std::move(v);
    return o;
  };
  ExpectStatusError(with("cpu_utilization", 101), "cpu_utilization must be between 0 and 100");
  ExpectStatusError(with("cpu_count", -1), "cpu_count must be between 0 and 65536");
  ExpectStatusError(with("memory_used", 600 * kGiB), "memory_used must be <= memory_total");
  ExpectStatusError(with("disk_used", -1), "disk_used must be >= 0");
  ExpectStatusError(with("disk_used", 5000 * kGiB), "disk_used must be <= disk_total");
  ExpectStatusError(with("gpu_source", "cuda"), R"(gpu_source must be "nvml", "fake" or "none")");
  ExpectStatusError(with("arch", json::string(129, 'x')), "arch must be at most 128 characters");

  WorkerStatus dup_index = SampleStatus();
  dup_index.gpus[1].index = 0;
  dup_index.gpus[1].links.clear();
  ExpectStatusError(ToJson(dup_index), "gpus[1].index duplicates index 0");
  WorkerStatus dup_uuid = SampleStatus();
  dup_uuid.gpus[2].uuid = dup_uuid.gpus[0].uuid;
  ExpectStatusError(ToJson(dup_uuid), "gpus[2].uuid duplicates uuid 'GPU-0'");

  WorkerStatus many;
  for (int i = 0; i <= kMaxGpuDevices; ++i) many.gpus.push_back(SampleGpu(i));
  ExpectStatusError(ToJson(many), "gpus must have at most 128 entries");
}

TEST(WorkerCodecTest, PathArgumentPrefixesErrors) {
  Result<GpuDevice> g = GpuDeviceFromJson(GpuWith("memory_total", "-1"), "status.gpus[2]");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().message(), "status.gpus[2].memory_total must be >= 0");

  json::object s = ToJson(SampleStatus());
  s["gpus"].as_array()[2].as_object()["memory_total"] = -1;
  Result<WorkerStatus> st = WorkerStatusFromJson(s, "status");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().message(), "status.gpus[2].memory_total must be >= 0");
}

TEST(WorkerStateTest, NamesRoundTrip) {
  for (WorkerState w : {WorkerState::kRegistering, WorkerState::kReady, WorkerState::kNotReady,
                        WorkerState::kUnreachable, WorkerState::kMaintenance}) {
    EXPECT_EQ(ParseWorkerState(WorkerStateName(w)), w);
  }
  EXPECT_EQ(ParseWorkerState("ready"), std::nullopt);
}

}  // namespace
}  // namespace segma::types
