#include "types/worker.h"

#include <charconv>
#include <limits>
#include <set>

#include <fmt/format.h>

#include "types/json_codec.h"

namespace segma::types {

std::string_view WorkerStateName(WorkerState s) {
  switch (s) {
    case WorkerState::kRegistering:
      return "REGISTERING";
    case WorkerState::kReady:
      return "READY";
    case WorkerState::kNotReady:
      return "NOT_READY";
    case WorkerState::kUnreachable:
      return "UNREACHABLE";
    case WorkerState::kMaintenance:
      return "MAINTENANCE";
  }
  return "NOT_READY";
}

std::optional<WorkerState> ParseWorkerState(std::string_view s) {
  return ParseByName(s,
                     {WorkerState::kRegistering, WorkerState::kReady, WorkerState::kNotReady,
                      WorkerState::kUnreachable, WorkerState::kMaintenance},
                     WorkerStateName);
}

namespace {

constexpr double kMaxTemperature = 300;  // degrees C; sensors report far less, this rejects junk
constexpr double kMaxPower = 100000;     // watts per device
constexpr double kMaxClockMhz = 100000;
constexpr int kMaxCpuCount = 1 << 16;

// Validation helpers record the first problem on the reader, so errors carry the field path.
void CheckString(JsonReader& r, std::string_view key, const std::string& v) {
  if (v.size() > kMaxGpuStringLength) {
    r.Fail(key, fmt::format("must be at most {} characters", kMaxGpuStringLength));
  }
}

void CheckNonNegative(JsonReader& r, std::string_view key, int64_t v) {
  if (v < 0) r.Fail(key, "must be >= 0");
}

void CheckRange(JsonReader& r, std::string_view key, double v, double lo, double hi) {
  // Written so that NaN fails too.
  if (!(v >= lo && v <= hi)) r.Fail(key, fmt::format("must be between {} and {}", lo, hi));
}

void CheckAtMost(JsonReader& r, std::string_view key, int64_t v, std::string_view total_key,
                 int64_t total) {
  if (v > total) r.Fail(key, fmt::format("must be <= {}", total_key));
}

std::vector<GpuProcess> ReadProcesses(JsonReader& r, int64_t memory_total) {
  std::vector<GpuProcess> out;
  const json::value* v = r.OptionalValue("processes");
  if (v == nullptr || !r.ok()) return out;
  if (!v->is_array()) {
    r.Fail("processes", "must be an array of objects");
    return out;
  }
  if (v->as_array().size() > static_cast<size_t>(kMaxGpuProcesses)) {
    r.Fail("processes", fmt::format("must have at most {} entries", kMaxGpuProcesses));
    return out;
  }
  for (size_t i = 0; i < v->as_array().size(); ++i) {
    const json::value& item = v->as_array()[i];
    const std::string key = fmt::format("processes[{}]", i);
    if (!item.is_object()) {
      r.Fail(key, "must be an object");
      return out;
    }
    JsonReader pr(item.as_object(), r.Path(key));
    GpuProcess p;
    const int64_t pid = pr.Int("pid");
    if (pr.ok() && (pid <= 0 || pid > std::numeric_limits<int>::max())) {
      pr.Fail("pid", "must be a positive process id");
    }
    p.pid = static_cast<int>(pid);
    p.memory_used = pr.OptionalInt("memory_used").value_or(0);
    CheckNonNegative(pr, "memory_used", p.memory_used);
    CheckAtMost(pr, "memory_used", p.memory_used, "memory_total", memory_total);
    p.managed = pr.OptionalBool("managed").value_or(false);
    if (Status s = pr.Finish(); !s.ok()) {
      r.FailStatus(s);
      return out;
    }
    out.push_back(p);
  }
  return out;
}

std::vector<GpuSlice> ReadSlices(JsonReader& r) {
  std::vector<GpuSlice> out;
  const json::value* v = r.OptionalValue("slices");
  if (v == nullptr || !r.ok()) return out;
  if (!v->is_array()) {
    r.Fail("slices", "must be an array of objects");
    return out;
  }
  if (v->as_array().size() > static_cast<size_t>(kMaxGpuProcesses)) {
    r.Fail("slices", fmt::format("must have at most {} entries", kMaxGpuProcesses));
    return out;
  }
  for (size_t i = 0; i < v->as_array().size(); ++i) {
    const json::value& item = v->as_array()[i];
    const std::string key = fmt::format("slices[{}]", i);
    if (!item.is_object()) {
      r.Fail(key, "must be an object");
      return out;
    }
    JsonReader sr(item.as_object(), r.Path(key));
    GpuSlice sl;
    sl.instance_id = sr.Int("instance_id");
    if (sr.ok() && sl.instance_id <= 0) sr.Fail("instance_id", "must be > 0");
    sl.memory_limit = sr.Int("memory_limit");
    CheckNonNegative(sr, "memory_limit", sl.memory_limit);
    sl.memory_used = sr.OptionalInt("memory_used").value_or(0);
    CheckNonNegative(sr, "memory_used", sl.memory_used);
    sl.limit_hits = sr.OptionalInt("limit_hits").value_or(0);
    CheckNonNegative(sr, "limit_hits", sl.limit_hits);
    if (Status s = sr.Finish(); !s.ok()) {
      r.FailStatus(s);
      return out;
    }
    out.push_back(sl);
  }
  return out;
}

std::map<int, std::string> ReadLinks(JsonReader& r) {
  std::map<int, std::string> links;
  std::optional<std::map<std::string, std::string>> raw = r.OptionalStringMap("links");
  if (!raw) return links;
  if (raw->size() > static_cast<size_t>(kMaxGpuDevices)) {
    r.Fail("links", fmt::format("must have at most {} entries", kMaxGpuDevices));
    return links;
  }
  for (const auto& [key, kind] : *raw) {
    const std::string field = fmt::format("links.{}", key);
    int peer = -1;
    const char* end = key.data() + key.size();
    auto [ptr, ec] = std::from_chars(key.data(), end, peer);
    if (key.empty() || ec != std::errc() || ptr != end || peer < 0 || peer > kMaxGpuIndex) {
      r.Fail(field, fmt::format("key must be a GPU index 0-{}", kMaxGpuIndex));
      return links;
    }
    if (kind != "nvlink" && kind != "pcie") {
      r.Fail(field, "must be \"nvlink\" or \"pcie\"");
      return links;
    }
    links.emplace(peer, kind);
  }
  return links;
}

}  // namespace

json::object ToJson(const GpuDevice& g) {
  json::object o;
  o["index"] = g.index;
  o["uuid"] = g.uuid;
  o["name"] = g.name;
  o["vendor"] = g.vendor;
  o["compute_capability"] = g.compute_capability;
  o["memory_total"] = g.memory_total;
  o["memory_used"] = g.memory_used;
  o["memory_used_external"] = g.memory_used_external;
  o["utilization"] = g.utilization;
  o["temperature"] = g.temperature;
  o["power"] = g.power;
  o["power_limit"] = g.power_limit;
  if (g.sm_clock > 0) o["sm_clock"] = g.sm_clock;
  if (g.memory_clock > 0) o["memory_clock"] = g.memory_clock;
  o["simulated"] = g.simulated;
  o["mig_enabled"] = g.mig_enabled;
  if (g.parent_index) o["parent_index"] = *g.parent_index;
  if (!g.mig_profile.empty()) o["mig_profile"] = g.mig_profile;
  json::object links;
  for (const auto& [peer, kind] : g.links) links[std::to_string(peer)] = kind;
  o["links"] = std::move(links);
  if (!g.processes.empty()) {
    json::array procs;
    procs.reserve(g.processes.size());
    for (const GpuProcess& p : g.processes) {
      procs.emplace_back(
          json::object{{"pid", p.pid}, {"memory_used", p.memory_used}, {"managed", p.managed}});
    }
    o["processes"] = std::move(procs);
  }
  if (!g.slices.empty()) {
    json::array slices;
    slices.reserve(g.slices.size());
    for (const GpuSlice& sl : g.slices) {
      slices.emplace_back(json::object{{"instance_id", sl.instance_id},
                                       {"memory_limit", sl.memory_limit},
                                       {"memory_used", sl.memory_used},
                                       {"limit_hits", sl.limit_hits}});
    }
    o["slices"] = std::move(slices);
  }
  return o;
}

json::object ToJson(const WorkerStatus& s) {
  json::object o;
  o["cpu_count"] = s.cpu_count;
  o["cpu_utilization"] = s.cpu_utilization;
  o["memory_total"] = s.memory_total;
  o["memory_used"] = s.memory_used;
  o["disk_total"] = s.disk_total;
  o["disk_used"] = s.disk_used;
  o["arch"] = s.arch;
  o["os"] = s.os;
  o["gpu_source"] = s.gpu_source;
  o["driver_version"] = s.driver_version;
  json::array gpus;
  gpus.reserve(s.gpus.size());
  for (const GpuDevice& g : s.gpus) gpus.emplace_back(ToJson(g));
  o["gpus"] = std::move(gpus);
  return o;
}

Result<GpuDevice> GpuDeviceFromJson(const json::object& o, const std::string& path) {
  JsonReader r(o, path);
  GpuDevice g;
  const int64_t index = r.Int("index");
  if (index < 0 || index > kMaxGpuIndex) {
    r.Fail("index", fmt::format("must be between 0 and {}", kMaxGpuIndex));
  }
  g.index = static_cast<int>(index);
  g.uuid = r.String("uuid");
  if (r.ok() && g.uuid.empty()) r.Fail("uuid", "must not be empty");
  CheckString(r, "uuid", g.uuid);
  g.name = r.String("name");
  CheckString(r, "name", g.name);
  g.vendor = r.OptionalString("vendor").value_or(g.vendor);
  CheckString(r, "vendor", g.vendor);
  g.compute_capability = r.OptionalString("compute_capability").value_or("");
  CheckString(r, "compute_capability", g.compute_capability);
  g.memory_total = r.Int("memory_total");
  CheckNonNegative(r, "memory_total", g.memory_total);
  g.memory_used = r.OptionalInt("memory_used").value_or(0);
  CheckNonNegative(r, "memory_used", g.memory_used);
  CheckAtMost(r, "memory_used", g.memory_used, "memory_total", g.memory_total);
  g.memory_used_external = r.OptionalInt("memory_used_external").value_or(0);
  CheckNonNegative(r, "memory_used_external", g.memory_used_external);
  CheckAtMost(r, "memory_used_external", g.memory_used_external, "memory_total", g.memory_total);
  g.utilization = r.OptionalDouble("utilization").value_or(0);
  CheckRange(r, "utilization", g.utilization, 0, 100);
  g.temperature = r.OptionalDouble("temperature").value_or(0);
  CheckRange(r, "temperature", g.temperature, -kMaxTemperature, kMaxTemperature);
  g.power = r.OptionalDouble("power").value_or(0);
  CheckRange(r, "power", g.power, 0, kMaxPower);
  g.power_limit = r.OptionalDouble("power_limit").value_or(0);
  CheckRange(r, "power_limit", g.power_limit, 0, kMaxPower);
  g.sm_clock = r.OptionalDouble("sm_clock").value_or(0);
  CheckRange(r, "sm_clock", g.sm_clock, 0, kMaxClockMhz);
  g.memory_clock = r.OptionalDouble("memory_clock").value_or(0);
  CheckRange(r, "memory_clock", g.memory_clock, 0, kMaxClockMhz);
  g.simulated = r.OptionalBool("simulated").value_or(false);
  g.mig_enabled = r.OptionalBool("mig_enabled").value_or(false);
  if (std::optional<int64_t> parent = r.OptionalInt("parent_index")) {
    if (*parent < 0 || *parent > kMaxGpuIndex) {
      r.Fail("parent_index", fmt::format("must be between 0 and {}", kMaxGpuIndex));
    } else if (*parent == index) {
      r.Fail("parent_index", "must differ from index");
    }
    g.parent_index = static_cast<int>(*parent);
  }
  g.mig_profile = r.OptionalString("mig_profile").value_or("");
  CheckString(r, "mig_profile", g.mig_profile);
  g.links = ReadLinks(r);
  g.processes = ReadProcesses(r, g.memory_total);
  g.slices = ReadSlices(r);
  if (r.ok() && g.links.count(g.index) != 0) {
    r.Fail(fmt::format("links.{}", g.index), "must not link a GPU to itself");
  }
  RETURN_IF_ERROR(r.Finish());
  return g;
}

Result<WorkerStatus> WorkerStatusFromJson(const json::object& o, const std::string& path) {
  JsonReader r(o, path);
  WorkerStatus s;
  const int64_t cpu_count = r.OptionalInt("cpu_count").value_or(0);
  if (cpu_count < 0 || cpu_count > kMaxCpuCount) {
    r.Fail("cpu_count", fmt::format("must be between 0 and {}", kMaxCpuCount));
  }
  s.cpu_count = static_cast<int>(cpu_count);
  s.cpu_utilization = r.OptionalDouble("cpu_utilization").value_or(0);
  CheckRange(r, "cpu_utilization", s.cpu_utilization, 0, 100);
  s.memory_total = r.OptionalInt("memory_total").value_or(0);
  CheckNonNegative(r, "memory_total", s.memory_total);
  s.memory_used = r.OptionalInt("memory_used").value_or(0);
  CheckNonNegative(r, "memory_used", s.memory_used);
  CheckAtMost(r, "memory_used", s.memory_used, "memory_total", s.memory_total);
  s.disk_total = r.OptionalInt("disk_total").value_or(0);
  CheckNonNegative(r, "disk_total", s.disk_total);
  s.disk_used = r.OptionalInt("disk_used").value_or(0);
  CheckNonNegative(r, "disk_used", s.disk_used);
  CheckAtMost(r, "disk_used", s.disk_used, "disk_total", s.disk_total);
  s.arch = r.OptionalString("arch").value_or("");
  CheckString(r, "arch", s.arch);
  s.os = r.OptionalString("os").value_or("");
  CheckString(r, "os", s.os);
  s.gpu_source = r.OptionalString("gpu_source").value_or("");
  if (s.gpu_source != "" && s.gpu_source != "nvml" && s.gpu_source != "fake" &&
      s.gpu_source != "none") {
    r.Fail("gpu_source", "must be \"nvml\", \"fake\" or \"none\"");
  }
  s.driver_version = r.OptionalString("driver_version").value_or("");
  CheckString(r, "driver_version", s.driver_version);
  if (const json::value* gpus = r.OptionalValue("gpus"); gpus != nullptr && r.ok()) {
    if (!gpus->is_array()) {
      r.Fail("gpus", "must be an array of objects");
    } else if (gpus->as_array().size() > static_cast<size_t>(kMaxGpuDevices)) {
      r.Fail("gpus", fmt::format("must have at most {} entries", kMaxGpuDevices));
    } else {
      std::set<int> indices;
      std::set<std::string> uuids;
      const json::array& arr = gpus->as_array();
      for (size_t i = 0; i < arr.size() && r.ok(); ++i) {
        const std::string key = fmt::format("gpus[{}]", i);
        if (!arr[i].is_object()) {
          r.Fail(key, "must be an object");
          break;
        }
        Result<GpuDevice> g = GpuDeviceFromJson(arr[i].as_object(), r.Path(key));
        if (!g.ok()) {
          r.FailStatus(g.status());
          break;
        }
        if (!indices.insert(g->index).second) {
          r.Fail(key + ".index", fmt::format("duplicates index {}", g->index));
        } else if (!uuids.insert(g->uuid).second) {
          r.Fail(key + ".uuid", fmt::format("duplicates uuid '{}'", g->uuid));
        }
        s.gpus.push_back(std::move(g).value());
      }
    }
  }
  RETURN_IF_ERROR(r.Finish());
  return s;
}

}  // namespace segma::types
