#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "common/status.h"
#include "types/worker.h"

namespace segma::gpu {

// Reads this machine's CPU, memory and disk figures for the worker's heartbeat.
//
// CPU utilization is the busy share of CPU time between two /proc/stat samples: this call's and
// the previous call's. The first call compares against boot (the average since boot), so no call
// ever sleeps. Memory used is MemTotal - MemAvailable from /proc/meminfo. Disk figures are those
// of the file system holding `data_dir` (statvfs; used counts blocks reserved for root as used).
//
// Thread-safe.
class HostProbe {
 public:
  // `proc_root` replaces "/proc" for tests (a directory with `stat` and `meminfo` fixtures).
  explicit HostProbe(std::string data_dir, std::string proc_root = "/proc");

  // Returns a WorkerStatus with the host fields (cpu_count, cpu_utilization, memory_*, disk_*,
  // arch, os) filled; gpus, gpu_source and driver_version are left empty for the caller.
  // kUnavailable when /proc cannot be read or parsed, kNotFound when `data_dir` does not exist.
  Result<types::WorkerStatus> Probe();

 private:
  struct CpuSample {
    uint64_t busy = 0;
    uint64_t total = 0;
  };

  const std::string data_dir_;
  const std::string proc_root_;
  std::mutex mu_;
  std::optional<CpuSample> previous_;  // guarded by mu_
  double last_utilization_ = 0;        // guarded by mu_; repeated when no time passed
};

}  // namespace segma::gpu
