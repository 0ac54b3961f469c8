#pragma once

// The compute buckets (ComputeBudget) of one engine instance's processes, one per device, and the
// list of those processes (whose SM utilisation NVML reports per pid), in a POSIX shared-memory
// segment of their own ("<SEGMA_VGPU_SHM>-compute"), apart from the memory accounting. Everything
// in it is an atomic: no lock, so a process killed at any point leaves it usable.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <sys/types.h>

#include "vgpu/compute_budget.h"
#include "vgpu/limits.h"

namespace segma::vgpu {

class SharedCompute {
 public:
  // Processes of one instance the list holds.
  static constexpr int kMaxPids = 1024;

  // Opens (creating and initialising when absent) the segment `name` ("/segma-vgpu-…-compute"),
  // or a private one for this process alone when `name` is empty. nullptr with `error` set when
  // the segment cannot be opened or was made by an incompatible version.
  static std::unique_ptr<SharedCompute> Open(const std::string& name, std::string* error);

  ~SharedCompute();
  SharedCompute(const SharedCompute&) = delete;
  SharedCompute& operator=(const SharedCompute&) = delete;

  // The bucket of device `ordinal` (0 .. kMaxDevices-1).
  ComputeCells& Cells(int ordinal);

  // Adds `pid` to the instance's processes; true if it is there now, false if the list is full.
  bool Register(pid_t pid);
  // The instance's processes, in no order.
  std::vector<pid_t> Processes() const;
  // Drops the processes that no longer exist (a pid reused meanwhile by another process stays
  // until that one ends); returns how many.
  int ReclaimDead();

 private:
  struct Segment;
  SharedCompute(Segment* segment, size_t size) : segment_(segment), size_(size) {}

  Segment* const segment_;
  const size_t size_;
};

}  // namespace segma::vgpu
