#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "types/worker.h"

namespace segma::gpu {

// Reports the GPUs of this machine. Implementations: NvmlGpuProbe (real NVIDIA GPUs through
// libnvidia-ml), FakeGpuProbe (simulated GPUs for tests, demos and scale runs) and NoGpuProbe
// (a CPU-only machine).
//
// Inventory conventions every implementation follows:
//  - Whole GPUs carry their NVML index (PCI bus order). Engines must therefore be started with
//    CUDA_DEVICE_ORDER=PCI_BUS_ID, or better with UUIDs in CUDA_VISIBLE_DEVICES.
//  - A GPU in MIG mode is reported with mig_enabled=true for observability (temperature, power,
//    links) but is not itself schedulable; each of its MIG devices is reported as a separate
//    GpuDevice with parent_index = the GPU's index, a "MIG-…" uuid, mig_profile set, the name
//    "<the GPU's name> MIG <profile>" (the scheduler's mig_profile filter reads it), and an
//    index after all whole GPUs.
//
// Thread-safe: Probe() may be called from any thread, concurrently with the setters of the
// implementations.
class GpuProbe {
 public:
  virtual ~GpuProbe() = default;

  // Returns the current inventory with live memory, utilization, temperature and power.
  // A device that cannot be read is left out (and logged), not an error of the whole call.
  // kUnavailable when the whole backend failed (e.g. the driver went away).
  virtual Result<std::vector<types::GpuDevice>> Probe() = 0;

  // "nvml" | "fake" | "none": WorkerStatus::gpu_source.
  virtual std::string_view source() const = 0;

  // Driver version for WorkerStatus::driver_version; empty when there is none.
  virtual std::string driver_version() const { return {}; }

  // The process (group) ids of the engines segma supervises: their GPU memory is segma's own,
  // every other compute process's is memory_used_external. Probes that cannot see processes
  // ignore it.
  virtual void SetManagedPids(std::vector<int> pids) { (void)pids; }

  // The VRAM the engines segma runs here claim: GPU index → bytes. A simulated probe reports it
  // as those engines' memory use (simulated engines allocate nothing); real probes measure
  // memory and ignore it.
  virtual void SetClaimedMemory(const std::map<int, int64_t>& bytes) { (void)bytes; }
};

// The probe of a machine without usable NVIDIA GPUs: always an empty inventory.
class NoGpuProbe final : public GpuProbe {
 public:
  // gpu::GpuProbe
  Result<std::vector<types::GpuDevice>> Probe() override { return std::vector<types::GpuDevice>{}; }
  std::string_view source() const override { return "none"; }
};

}  // namespace segma::gpu
