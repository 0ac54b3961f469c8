#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "types/worker.h"
#include "worker/gpu/gpu_probe.h"

namespace segma::gpu {

namespace nvml_internal {
struct Api;  // the dlsym'ed NVML entry points, defined in nvml_gpu_probe.cc
}  // namespace nvml_internal

// GPU inventory from the NVIDIA driver, through libnvidia-ml loaded with dlopen (no NVIDIA headers
// or link-time dependency, so one segma binary runs on GPU and CPU-only machines alike).
//
// Per device it reports name, uuid, compute capability, memory (nvmlDeviceGetMemoryInfo_v2, else
// v1; memory_used = total - free, so driver-reserved memory counts as used), utilization,
// temperature, power and enforced power limit (watts), SM and memory clocks (MHz), MIG devices (see
// GpuProbe for the convention), links between whole GPUs ("nvlink" when an active NVLink reaches
// the peer directly or through a shared NVSwitch, else "pcie" when NVML knows a common PCIe
// ancestor), and memory_used_external: the memory of compute processes whose PID is not in
// SetManagedPids().
//
// Devices NVML cannot open (NO_PERMISSION, GPU_IS_LOST, ...) are skipped with a warning logged
// once per device and error. Optional NVML functions that are missing or unsupported leave their
// fields at the default.
//
// Thread-safe: calls are serialized by an internal mutex.
class NvmlGpuProbe final : public GpuProbe {
 public:
  static constexpr std::string_view kDefaultLibrary = "libnvidia-ml.so.1";

  // Loads `library_path` (a soname searched like dlopen does, or a path) and initializes NVML.
  // kUnavailable when the library cannot be loaded, lacks the required entry points, or
  // nvmlInit fails (no driver loaded, driver/library version mismatch, ...): the caller should
  // then report CPU only (NoGpuProbe).
  static Result<std::unique_ptr<NvmlGpuProbe>> Open(
      const std::string& library_path = std::string(kDefaultLibrary));

  NvmlGpuProbe(const NvmlGpuProbe&) = delete;
  NvmlGpuProbe& operator=(const NvmlGpuProbe&) = delete;
  // Shuts NVML down and unloads the library.
  ~NvmlGpuProbe() override;

  // gpu::GpuProbe
  // PIDs or process group ids (host PID namespace, as NVML reports them) of the engines segma
  // manages; memory of every other compute process counts as memory_used_external.
  void SetManagedPids(std::vector<int> pids) override;
  Result<std::vector<types::GpuDevice>> Probe() override;
  std::string_view source() const override { return "nvml"; }
  std::string driver_version() const override;

 private:
  NvmlGpuProbe(void* library, std::unique_ptr<nvml_internal::Api> api);

  void* const library_;  // dlopen handle
  const std::unique_ptr<const nvml_internal::Api> api_;
  mutable std::mutex mu_;
  std::set<int> managed_pids_;    // guarded by mu_
  std::set<std::string> warned_;  // "<device>:<error>" logged; guarded by mu_
  std::string driver_version_;    // set once in Open()
};

}  // namespace segma::gpu
