#include "vgpu/shared_accounting.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <new>

#include <sys/mman.h>
#include <sys/stat.h>

namespace segma::vgpu {
namespace {

constexpr uint32_t kMagic = 0x53475655;  // "SGVU"
constexpr uint32_t kVersion = 2;
constexpr uint32_t kUninitialised = 0, kInitialising = 1, kReady = 2;

// The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), which tells
// a live process from a later one that reuses its pid; 0 when the process is gone or a zombie.
uint64_t StartTime(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');  // the command name may hold spaces and parentheses
  if (p == nullptr || p[1] != ' ') return 0;
  p += 2;
  if (*p == 'Z' || *p == 'X') return 0;  // exited, not yet reaped: its memory is gone
  // Fields 3 (state) .. 22 (starttime): skip 19 separators.
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return 0;
    ++p;
  }
  return std::strtoull(p, nullptr, 10);
}

}  // namespace

struct SharedAccounting::Segment {
  uint32_t magic;
  uint32_t version;
  std::atomic<uint32_t> state;  // kUninitialised → kInitialising → kReady
  pthread_mutex_t mutex;
  int64_t limit_hits[kMaxDevices];
  // The sum of the entries' bookings per device, kept with them so that a reservation does not
  // walk every entry.
  int64_t total[kMaxDevices];
  struct Entry {
    pid_t pid;  // 0 = free
    uint64_t start_time;
    int64_t used[kMaxDevices];
  } entries[kMaxProcesses];
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);

std::unique_ptr<SharedAccounting> SharedAccounting::Open(const std::string& name,
                                                         std::string* error) {
  return OpenNamed(name, /*create=*/true, error);
}

std::unique_ptr<SharedAccounting> SharedAccounting::OpenExisting(const std::string& name,
                                                                 std::string* error) {
  if (name.empty()) {
    *error = "no segment name";
    return nullptr;
  }
  return OpenNamed(name, /*create=*/false, error);
}

std::unique_ptr<SharedAccounting> SharedAccounting::OpenNamed(const std::string& name, bool create,
                                                              std::string* error) {
  const size_t size = sizeof(Segment);
  void* mem = nullptr;
  if (name.empty()) {
    mem = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  } else {
    const int fd = ::shm_open(name.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
    if (fd < 0) {
      *error = "shm_open " + name + ": " + std::strerror(errno);
      return nullptr;
    }
    struct stat st {};
    // Only grows a fresh (empty) segment: truncating a live one would wipe its bookings.
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
  // A fresh segment is all zeroes: kUninitialised. One process wins the initialisation; the
  // others wait for it (bounded: a creator killed mid-way leaves a segment nobody can use).
  uint32_t expected = kUninitialised;
  if (seg->state.compare_exchange_strong(expected, kInitialising)) {
    seg->magic = kMagic;
    seg->version = kVersion;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&seg->mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    seg->state.store(kReady, std::memory_order_release);
  } else {
    for (int i = 0; i < 2000 && seg->state.load(std::memory_order_acquire) != kReady; ++i) {
      const timespec ms{0, 1000 * 1000};
      ::nanosleep(&ms, nullptr);
    }
  }
  if (seg->state.load(std::memory_order_acquire) != kReady || seg->magic != kMagic ||
      seg->version != kVersion) {
    *error = "shared segment " + name + " is not a segma-vgpu v2 segment";
    ::munmap(mem, size);
    return nullptr;
  }
  return std::unique_ptr<SharedAccounting>(new (std::nothrow) SharedAccounting(seg, size));
}

SharedAccounting::~SharedAccounting() { ::munmap(segment_, size_); }

void SharedAccounting::Lock() {
  if (pthread_mutex_lock(&segment_->mutex) == EOWNERDEAD) {
    // Its owner died holding it, perhaps between booking in its entry and in the totals: the
    // totals are summed again from the entries (the dead owner's is reclaimed like any other).
    pthread_mutex_consistent(&segment_->mutex);
    for (int d = 0; d < kMaxDevices; ++d) {
      int64_t sum = 0;
      for (const Segment::Entry& e : segment_->entries) {
        if (e.pid != 0) sum += e.used[d];
      }
      segment_->total[d] = sum;
    }
  }
}

void SharedAccounting::Unlock() { pthread_mutex_unlock(&segment_->mutex); }

void SharedAccounting::DropEntryLocked(int i) {
  Segment::Entry& e = segment_->entries[i];
  for (int d = 0; d < kMaxDevices; ++d) segment_->total[d] -= e.used[d];
  std::memset(e.used, 0, sizeof(e.used));
  e.pid = 0;
}

int SharedAccounting::OwnEntryLocked() {
  const pid_t me = ::getpid();
  if (entry_pid_ == me) return entry_;
  entry_pid_ = me;
  entry_ = -1;
  int free_entry = -1;
  for (int i = 0; i < kMaxProcesses; ++i) {
    Segment::Entry& e = segment_->entries[i];
    // An entry with our pid is an earlier image of this process (before an exec): the driver
    // freed its memory with it.
    if (e.pid == me) {
      free_entry = i;
      break;
    }
    if (e.pid == 0 && free_entry < 0) free_entry = i;
  }
  if (free_entry < 0 && ReclaimDeadLocked() > 0) {
    for (int i = 0; i < kMaxProcesses; ++i) {
      if (segment_->entries[i].pid == 0) {
        free_entry = i;
        break;
      }
    }
  }
  if (free_entry < 0) {
    entry_pid_ = 0;  // full: try again at the next allocation
    return -1;
  }
  DropEntryLocked(free_entry);
  Segment::Entry& e = segment_->entries[free_entry];
  e.start_time = StartTime(me);
  e.pid = me;
  entry_ = free_entry;
  return entry_;
}

int64_t SharedAccounting::UsedLocked(int device) const { return segment_->total[device]; }

int SharedAccounting::ReclaimDeadLocked() {
  int n = 0;
  for (int i = 0; i < kMaxProcesses; ++i) {
    const Segment::Entry& e = segment_->entries[i];
    if (e.pid == 0 || e.pid == ::getpid()) continue;
    if (StartTime(e.pid) != e.start_time || e.start_time == 0) {
      DropEntryLocked(i);
      ++n;
    }
  }
  return n;
}

bool SharedAccounting::Reserve(int device, int64_t bytes, int64_t limit) {
  if (device < 0 || device >= kMaxDevices || bytes < 0) return false;
  Lock();
  const int entry = OwnEntryLocked();
  bool ok = false;
  if (entry >= 0) {
    ok = UsedLocked(device) + bytes <= limit;
    if (!ok && ReclaimDeadLocked() > 0) ok = UsedLocked(device) + bytes <= limit;
    if (ok) {
      segment_->entries[entry].used[device] += bytes;
      segment_->total[device] += bytes;
    }
  }
  if (!ok) ++segment_->limit_hits[device];
  Unlock();
  return ok;
}

void SharedAccounting::Release(int device, int64_t bytes) {
  if (device < 0 || device >= kMaxDevices || bytes <= 0) return;
  Lock();
  const int entry = OwnEntryLocked();
  if (entry >= 0) {
    int64_t& used = segment_->entries[entry].used[device];
    const int64_t released = used > bytes ? bytes : used;
    used -= released;
    segment_->total[device] -= released;
  }
  Unlock();
}

int64_t SharedAccounting::Used(int device) {
  if (device < 0 || device >= kMaxDevices) return 0;
  Lock();
  const int64_t used = UsedLocked(device);
  Unlock();
  return used;
}

int64_t SharedAccounting::UsedBy(pid_t pid, int device) {
  if (device < 0 || device >= kMaxDevices) return 0;
  int64_t used = 0;
  Lock();
  for (const Segment::Entry& e : segment_->entries) {
    if (e.pid == pid) used += e.used[device];
  }
  Unlock();
  return used;
}

int64_t SharedAccounting::LimitHits(int device) {
  if (device < 0 || device >= kMaxDevices) return 0;
  Lock();
  const int64_t hits = segment_->limit_hits[device];
  Unlock();
  return hits;
}

int SharedAccounting::ReclaimDead() {
  Lock();
  const int n = ReclaimDeadLocked();
  Unlock();
  return n;
}

}  // namespace segma::vgpu
