#include "vgpu/shared_compute.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <new>

#include <sys/mman.h>
#include <sys/stat.h>

namespace segma::vgpu {
namespace {

constexpr uint32_t kMagic = 0x53475643;  // "SGVC"
constexpr uint32_t kVersion = 1;
constexpr uint32_t kUninitialised = 0, kInitialising = 1, kReady = 2;

}  // namespace

struct SharedCompute::Segment {
  uint32_t magic;
  uint32_t version;
  std::atomic<uint32_t> state;  // kUninitialised → kInitialising → kReady
  ComputeCells cells[kMaxDevices];
  std::atomic<int32_t> pids[kMaxPids];  // 0 = free
};
static_assert(std::atomic<int32_t>::is_always_lock_free);

std::unique_ptr<SharedCompute> SharedCompute::Open(const std::string& name, std::string* error) {
  const size_t size = sizeof(Segment);
  void* mem = nullptr;
  if (name.empty()) {
    mem = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  } else {
    const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      *error = "shm_open " + name + ": " + std::strerror(errno);
      return nullptr;
    }
    struct stat st {};
    // Only grows a fresh (empty) segment: truncating a live one would reset its buckets.
    if (::fstat(fd, &st) != 0 ||
        (st.st_size < static_cast<off_t>(size) && ::ftruncate(fd, size) != 0)) {
      *error = "sizing " + name + ": " + std::strerror(errno);
      ::close(fd);
      return nullptr;
    }
    mem = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
  }
  if (mem == MAP_FAILED) {
    *error = std::string("mmap: ") + std::strerror(errno);
    return nullptr;
  }
  auto* seg = static_cast<Segment*>(mem);
  // As in SharedAccounting: one process initialises a fresh (all-zero) segment, the others wait
  // for it, bounded.
  uint32_t expected = kUninitialised;
  if (seg->state.compare_exchange_strong(expected, kInitialising)) {
    seg->magic = kMagic;
    seg->version = kVersion;
    for (ComputeCells& c : seg->cells) ComputeBudget::Initialise(c);
    seg->state.store(kReady, std::memory_order_release);
  } else {
    for (int i = 0; i < 2000 && seg->state.load(std::memory_order_acquire) != kReady; ++i) {
      const timespec ms{0, 1000 * 1000};
      ::nanosleep(&ms, nullptr);
    }
  }
  if (seg->state.load(std::memory_order_acquire) != kReady || seg->magic != kMagic ||
      seg->version != kVersion) {
    *error = "shared segment " + name + " is not a segma-vgpu compute v1 segment";
    ::munmap(mem, size);
    return nullptr;
  }
  return std::unique_ptr<SharedCompute>(new (std::nothrow) SharedCompute(seg, size));
}

SharedCompute::~SharedCompute() { ::munmap(segment_, size_); }

ComputeCells& SharedCompute::Cells(int ordinal) { return segment_->cells[ordinal]; }

bool SharedCompute::Register(pid_t pid) {
  for (const std::atomic<int32_t>& p : segment_->pids) {
    if (p.load(std::memory_order_relaxed) == pid) return true;
  }
  for (std::atomic<int32_t>& p : segment_->pids) {
    int32_t expected = 0;
    if (p.compare_exchange_strong(expected, pid)) return true;
  }
  return ReclaimDead() > 0 && Register(pid);
}

std::vector<pid_t> SharedCompute::Processes() const {
  std::vector<pid_t> out;
  for (const std::atomic<int32_t>& p : segment_->pids) {
    if (const int32_t pid = p.load(std::memory_order_relaxed); pid != 0) out.push_back(pid);
  }
  return out;
}

int SharedCompute::ReclaimDead() {
  int n = 0;
  for (std::atomic<int32_t>& p : segment_->pids) {
    int32_t pid = p.load(std::memory_order_relaxed);
    if (pid != 0 && ::kill(pid, 0) != 0 && errno == ESRCH && p.compare_exchange_strong(pid, 0)) {
      ++n;
    }
  }
  return n;
}

}  // namespace segma::vgpu
