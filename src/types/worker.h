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

// One GPU (or MIG device) as a worker reports it. Memory in bytes, power in watts.
struct GpuDevice {
  int index = 0;                 // position on its worker (CUDA_VISIBLE_DEVICES order)
  std::string uuid;              // "GPU-…" (real) or "GPU-fake-…" (simulated)
  std::string name;              // "NVIDIA H200 NVL"
  std::string vendor = "nvidia";
  std::string compute_capability;  // "9.0"; empty when unknown
  int64_t memory_total = 0;
  int64_t memory_used = 0;       // as the driver reports it, all processes
  double utilization = 0;        // percent, 0-100
  double temperature = 0;        // degrees C
  double power = 0;              // watts drawn now
  double power_limit = 0;        // watts
  bool simulated = false;
  bool mig_enabled = false;
  std::optional<int> parent_index;  // for a MIG device: the index of its physical GPU
  // Memory used by processes that segma does not manage (other tenants, stray jobs), bytes.
  int64_t memory_used_external = 0;
  // index of peer GPU → "nvlink" | "pcie" (absent when the worker could not tell).
  std::map<int, std::string> links;
};

struct WorkerStatus {
  int cpu_count = 0;
  double cpu_utilization = 0;  // percent
  int64_t memory_total = 0;    // bytes
  int64_t memory_used = 0;
  int64_t disk_total = 0;      // bytes, of the worker's data dir file system
  int64_t disk_used = 0;
  std::string arch;            // "x86_64", "aarch64"
  std::string os;              // "linux"
  std::string gpu_source;      // "nvml" | "fake" | "none"
  std::vector<GpuDevice> gpus;
};

enum class WorkerState { kRegistering, kReady, kNotReady, kUnreachable, kMaintenance };
std::string_view WorkerStateName(WorkerState s);  // "READY", ...
std::optional<WorkerState> ParseWorkerState(std::string_view s);

json::object ToJson(const GpuDevice& g);
json::object ToJson(const WorkerStatus& s);
// Strict: unknown fields and wrong types are kInvalidArgument.
Result<GpuDevice> GpuDeviceFromJson(const json::object& o, const std::string& path = "");
Result<WorkerStatus> WorkerStatusFromJson(const json::object& o, const std::string& path = "");

}  // namespace segma::types
