#pragma once

// The device memory that all processes of one engine instance hold, per device, in a small POSIX
// shared-memory segment (SEGMA_VGPU_SHM=/segma-vgpu-<instance>), so that an engine that forks
// workers is held to one limit. Each process books its allocations in its own entry (pid and
// start time); the entries of processes that died (killed, crashed, exited without freeing) are
// reclaimed before an allocation is refused, so their memory counts only while they live.
//
// The segment holds a process-shared robust mutex: a process killed while holding it does not
// wedge the others (the next locker marks it consistent and sums the totals again).

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include <sys/types.h>

#include "vgpu/limits.h"

namespace segma::vgpu {

// Processes of one instance that can hold memory at once.
inline constexpr int kMaxProcesses = 1024;

class SharedAccounting {
 public:
  // Opens (creating and initialising when absent) the segment `name` ("/segma-vgpu-…"), or a
  // private one for this process alone when `name` is empty. nullptr with `error` set when the
  // segment cannot be opened or was made by an incompatible version.
  static std::unique_ptr<SharedAccounting> Open(const std::string& name, std::string* error);
  // Opens the segment `name` only if some process made it (the worker reading an engine's use);
  // nullptr with `error` set otherwise.
  static std::unique_ptr<SharedAccounting> OpenExisting(const std::string& name,
                                                        std::string* error);

  ~SharedAccounting();
  SharedAccounting(const SharedAccounting&) = delete;
  SharedAccounting& operator=(const SharedAccounting&) = delete;

  // Books `bytes` on `device` for this process if every live process's total stays within
  // `limit`; otherwise books nothing, counts a limit hit, and returns false.
  bool Reserve(int device, int64_t bytes, int64_t limit);
  // Gives back `bytes` this process booked on `device`.
  void Release(int device, int64_t bytes);

  // Bytes booked on `device` by all processes (dead ones included until reclaimed).
  int64_t Used(int device);
  // Bytes booked on `device` by `pid`.
  int64_t UsedBy(pid_t pid, int device);
  // Allocations refused on `device` since the segment was created.
  int64_t LimitHits(int device);
  // Drops the entries of processes that no longer run; returns how many.
  int ReclaimDead();

 private:
  struct Segment;
  SharedAccounting(Segment* segment, size_t size) : segment_(segment), size_(size) {}
  static std::unique_ptr<SharedAccounting> OpenNamed(const std::string& name, bool create,
                                                     std::string* error);

  // The entry of this process (taken on first use after a fork or exec). Called locked.
  int OwnEntryLocked();
  int64_t UsedLocked(int device) const;
  int ReclaimDeadLocked();
  void DropEntryLocked(int i);
  void Lock();
  void Unlock();

  Segment* const segment_;
  const size_t size_;
  pid_t entry_pid_ = 0;  // the process that owns entry_, 0 = none yet
  int entry_ = -1;
};

}  // namespace segma::vgpu
