#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"

namespace segma::types {

// A compute process on a GPU, as NVML lists it (host PID namespace).
struct GpuProcess {
  int pid = 0;
  int64_t memory_used = 0;  // bytes
  bool managed = false;     // an engine that segma supervises (by process group)
};

// An engine held to a VRAM limit on this GPU by libsegma-vgpu (gpu_sharing "enforced"), as the
// library's own accounting says: what all the engine's processes hold against the limit, and how
// many allocations the limit refused since the engine started.
struct GpuSlice {
  int64_t instance_id = 0;
  int64_t memory_limit = 0;  // bytes
  int64_t memory_used = 0;   // bytes
  int64_t limit_hits = 0;

  friend bool operator==(const GpuSlice&, const GpuSlice&) = default;
};

// One GPU (or MIG device) as a worker reports it. Memory in bytes, power in watts.
struct GpuDevice {
  // Position on its worker: the NVML index (PCI bus order, i.e. CUDA_VISIBLE_DEVICES order under
  // CUDA_DEVICE_ORDER=PCI_BUS_ID); MIG devices are numbered after all whole GPUs.
  int index = 0;
  std::string uuid;  // "GPU-…" (real) or "GPU-fake-…" (simulated)
  std::string name;  // "NVIDIA H200 NVL"
  std::string vendor = "nvidia";
  std::string compute_capability;  // "9.0"; empty when unknown
  int64_t memory_total = 0;
  int64_t memory_used = 0;  // as the driver reports it, all processes
  double utilization = 0;   // percent, 0-100
  double temperature = 0;   // degrees C
  double power = 0;         // watts drawn now
  double power_limit = 0;   // watts
  double sm_clock = 0;      // MHz now (SM); 0 when unknown
  double memory_clock = 0;  // MHz now (memory); 0 when unknown
  bool simulated = false;
  bool mig_enabled = false;
  std::optional<int> parent_index;  // for a MIG device: the index of its physical GPU
  // Memory used by processes that segma does not manage (other tenants, stray jobs), bytes.
  int64_t memory_used_external = 0;
  // index of peer GPU → "nvlink" | "pcie" (absent when the worker could not tell).
  std::map<int, std::string> links;
  // MIG profile of a MIG device ("1g.18gb", "1c.2g.20gb"); empty for a whole GPU.
  std::string mig_profile;
  // Compute processes using the device (empty when NVML cannot list them).
  std::vector<GpuProcess> processes;
  // The enforced slices of the device, one per engine held to a limit on it.
  std::vector<GpuSlice> slices;
};

struct WorkerStatus {
  int cpu_count = 0;
  double cpu_utilization = 0;  // percent
  int64_t memory_total = 0;    // bytes
  int64_t memory_used = 0;
  int64_t disk_total = 0;  // bytes, of the worker's data dir file system
  int64_t disk_used = 0;
  std::string arch;            // "x86_64", "aarch64"
  std::string os;              // "linux"
  std::string gpu_source;      // "nvml" | "fake" | "none"
  std::string driver_version;  // NVIDIA driver ("570.86.15"); empty without NVML
  std::vector<GpuDevice> gpus;
};

// Limits the codecs enforce on what a worker may report (heartbeats come from the network).
// A worker reports at most kMaxGpuDevices entries: physical GPUs plus their MIG devices
// (8 GPUs x 7 MIG slices + the 8 parents = 64, so 128 leaves room for 16-GPU nodes).
inline constexpr int kMaxGpuDevices = 128;
inline constexpr int kMaxGpuIndex = 1023;
inline constexpr size_t kMaxGpuStringLength = 128;  // uuid, name, vendor, mig_profile, ...
inline constexpr int kMaxGpuProcesses = 1024;       // per device

enum class WorkerState { kRegistering, kReady, kNotReady, kUnreachable, kMaintenance };
std::string_view WorkerStateName(WorkerState s);  // "READY", ...
std::optional<WorkerState> ParseWorkerState(std::string_view s);

// JSON field names are the C++ field names; `parent_index` and an empty `mig_profile` are omitted
// and `links` is an object keyed by the peer index as a string ({"1":"nvlink"}); `processes` is
// omitted when empty ([{"pid":4242,"memory_used":123,"managed":true}]), and so is `slices`
// ([{"instance_id":7,"memory_limit":…,"memory_used":…,"limit_hits":0}]).
json::object ToJson(const GpuDevice& g);
json::object ToJson(const WorkerStatus& s);
// Strict: unknown fields, wrong types and out-of-range values are kInvalidArgument, with the
// field path prefixed by `path` ("gpus[2].memory_total must be >= 0"). GpuDevice requires
// index, uuid, name and memory_total; every other field is optional and keeps its default.
// Ranges: memory and power >= 0, memory_used and memory_used_external <= memory_total,
// utilization 0-100, 0 <= index <= kMaxGpuIndex, strings <= kMaxGpuStringLength, link values
// "nvlink" | "pcie", clocks 0-100000 MHz (omitted from ToJson when 0), at most kMaxGpuProcesses
// processes and slices, a slice's instance_id > 0 and its memory and hits >= 0. WorkerStatus
// additionally checks at most kMaxGpuDevices GPUs with unique indices and uuids, used <= total for
// host memory and disk, and gpu_source in
// {"", "nvml", "fake", "none"}.
Result<GpuDevice> GpuDeviceFromJson(const json::object& o, const std::string& path = "");
Result<WorkerStatus> WorkerStatusFromJson(const json::object& o, const std::string& path = "");

}  // namespace segma::types
