// The compute (SM time) limiter: holds the processes of one engine instance to a share of a
// device's SM time, as HAMi-core's utilisation watcher does, with a token bucket per device
// (compute_budget.h) shared by the instance's processes (shared_compute.h).
//
//   SEGMA_VGPU_COMPUTE         "<CUDA ordinal>=<percent>,..." (limits.h). Unset or empty: no
//                              limiting, and the launch wrappers are not even handed out.
//                              Malformed: the reason is printed and compute is not limited: a
//                              compute share is a share, not a safety limit (unlike memory, whose
//                              malformed limit fails closed).
//   SEGMA_VGPU_SHM             the instance's segment; the buckets are in "<it>-compute".
//   SEGMA_VGPU_COMPUTE_UPDATE_MS  how often the refill is corrected (default 500, 100..10000).
//   SEGMA_VGPU_LIBNVML         the NVML library to sample (default libnvidia-ml.so.1).
//
// Each limited launch takes tokens (its grid's blocks; a graph launch kGraphLaunchCost) from the
// bucket of the current context's device, an atomic decrement, and sleeps in steps of 200 µs while
// the bucket is empty. A watcher thread per process (started at its first limited launch) wakes
// every 20 ms; once per 100 ms one watcher of the instance claims the tick, reads NVML's
// per-process SM utilisation (nvmlDeviceGetProcessUtilization) for the instance's processes,
// and refills the bucket (ComputeBudget::Tick). Without NVML (or a device that reports no
// per-process utilisation, such as a MIG device) that device is not limited, and it says so.

#include "vgpu/compute.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include "vgpu/compute_budget.h"
#include "vgpu/limits.h"
#include "vgpu/shared_compute.h"

namespace segma::vgpu {
namespace {

constexpr int kNvmlSuccess = 0;
constexpr int kNvmlErrorNotFound = 6;
constexpr int kNvmlErrorInsufficientSize = 7;
constexpr int64_t kWatchStepNs = 20'000'000;
constexpr timespec kWaitStep{0, 200'000};

// nvmlProcessUtilizationSample_t.
struct NvmlSample {
  unsigned int pid;
  unsigned long long time_stamp;  // CPU time stamp, µs
  unsigned int sm_util, mem_util, enc_util, dec_util;
};

int64_t MonotonicNs() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
}

unsigned long long WallMicros() {
  timespec t{};
  clock_gettime(CLOCK_REALTIME, &t);
  return static_cast<unsigned long long>(t.tv_sec) * 1'000'000 + t.tv_nsec / 1000;
}

class Compute {
 public:
  static Compute& Get() {
    static Compute* compute = new Compute();  // never destroyed: launches may run during exit
    return *compute;
  }

  bool On() const { return on_; }

  // Returns once the current device's bucket admits a launch of `cost` tokens (at once when the
  // device has no share, or its limiting was given up).
  void Admit(int64_t cost) {
    auto ctx_get_device = SEGMA_REAL("cuCtxGetDevice", CUdevice*);
    CUdevice dev = -1;
    if (ctx_get_device == nullptr || ctx_get_device(&dev) != kCudaSuccess || dev < 0 ||
        dev >= kMaxDevices || percent_[dev] == 0) {
      return;
    }
    if (!watcher_.load(std::memory_order_acquire)) StartWatcher();
    std::atomic<bool>& active = active_[dev];
    if (!active.load(std::memory_order_relaxed)) return;
    ComputeBudget budget(shared_->Cells(dev));
    if (budget.Take(cost)) return;
    budget.NoteWait();
    while (!budget.Take(cost)) {
      if (!active.load(std::memory_order_relaxed)) return;
      nanosleep(&kWaitStep, nullptr);
    }
  }

 private:
  Compute() {
    const char* text = std::getenv("SEGMA_VGPU_COMPUTE");
    if (text == nullptr || text[0] == '\0') return;
    std::string error;
    const std::optional<std::vector<ComputeShare>> shares = ParseComputeShares(text, &error);
    if (!shares) {
      std::fprintf(stderr,
                   "segma-vgpu: SEGMA_VGPU_COMPUTE: %s; not limiting compute (a compute share is "
                   "a share, not a safety limit)\n",
                   error.c_str());
      return;
    }
    for (const ComputeShare& s : *shares) {
      if (s.percent < 100) {
        percent_[s.ordinal] = s.percent;
        limited_.push_back(s.ordinal);
      }
    }
    if (limited_.empty()) return;
    const char* shm = std::getenv("SEGMA_VGPU_SHM");
    shared_ = SharedCompute::Open(
        shm != nullptr && shm[0] != '\0' ? std::string(shm) + "-compute" : std::string(), &error);
    if (shared_ == nullptr) {
      std::fprintf(stderr, "segma-vgpu: SEGMA_VGPU_COMPUTE: %s; not limiting compute\n",
                   error.c_str());
      return;
    }
    if (const char* ms = std::getenv("SEGMA_VGPU_COMPUTE_UPDATE_MS")) {
      update_ns_ = std::clamp<int64_t>(std::atoll(ms), 100, 10'000) * 1'000'000;
    }
    for (int d : limited_) active_[d].store(true);
    // The watcher thread does not survive a fork: the child starts its own at its first launch.
    pthread_atfork(nullptr, nullptr, [] { Get().watcher_.store(false); });
    on_ = true;
  }

  void StartWatcher() {
    bool expected = false;
    if (!watcher_.compare_exchange_strong(expected, true)) return;  // another thread does it
    if (!shared_->Register(::getpid())) {
      std::fprintf(stderr,
                   "segma-vgpu: SEGMA_VGPU_COMPUTE: more than %d processes in the instance; this "
                   "one's utilisation is not counted\n",
                   SharedCompute::kMaxPids);
    }
    // The engine's signals must not land on the watcher: it starts with all of them blocked.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t thread;
    const int r = pthread_create(&thread, nullptr, &WatcherMain, this);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (r != 0) {
      std::fprintf(stderr,
                   "segma-vgpu: SEGMA_VGPU_COMPUTE: no watcher thread (error %d); not "
                   "limiting compute\n",
                   r);
      GiveUpAll();
      return;
    }
    pthread_detach(thread);
  }

  void GiveUpAll() {
    for (int d : limited_) active_[d].store(false);
  }

  static void* WatcherMain(void* self) {
    static_cast<Compute*>(self)->Watch();
    return nullptr;
  }

  void Watch() {
    auto init = SEGMA_REAL_IN(Library::kNvml, "nvmlInit_v2", void);
    const int r = init != nullptr ? init() : -1;
    if (r != kNvmlSuccess) {
      std::fprintf(stderr,
                   "segma-vgpu: SEGMA_VGPU_COMPUTE: NVML unavailable (%d); not limiting compute\n",
                   r);
      GiveUpAll();
      return;
    }
    int64_t wake = MonotonicNs();
    for (uint64_t step = 0;; ++step) {
      wake += kWatchStepNs;
      const timespec at{static_cast<time_t>(wake / 1'000'000'000),
                        static_cast<long>(wake % 1'000'000'000)};
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, nullptr) != 0) {
      }
      const int64_t now = MonotonicNs();
      if (now - wake > kComputePeriodNs) wake = now;  // suspended: do not catch up
      bool ticked = false;
      for (int d : limited_) {
        if (!active_[d].load(std::memory_order_relaxed)) continue;
        ComputeBudget budget(shared_->Cells(d));
        if (!budget.ClaimTick(now)) continue;
        if (!ticked) pids_ = shared_->Processes();
        ticked = true;
        const std::optional<int> util = Sample(d);
        budget.Tick(percent_[d], util, now, update_ns_);
        if (Debug()) {
          std::fprintf(
              stderr,
              "segma-vgpu: compute %d: pid %d samples %u (first pid %u) of ours %u util %d "
              "refill %lld tokens %lld waits %lld\n",
              d, static_cast<int>(::getpid()), seen_, first_pid_, matched_, util.value_or(-1),
              static_cast<long long>(budget.Refill()), static_cast<long long>(budget.Tokens()),
              static_cast<long long>(budget.Waits()));
        }
      }
      if (step % 250 == 0) shared_->ReclaimDead();  // every 5 s
    }
  }

  // The instance's SM utilisation on device `ordinal` over NVML's samples since the last reading
  // (InstanceUtil); nullopt when there are none or NVML cannot say.
  std::optional<int> Sample(int ordinal) {
    void*& handle = handles_[ordinal];
    if (handle == nullptr && !Resolve(ordinal, &handle)) return std::nullopt;
    auto utilization = SEGMA_REAL_IN(Library::kNvml, "nvmlDeviceGetProcessUtilization", void*,
                                     NvmlSample*, unsigned*, unsigned long long);
    if (utilization == nullptr) return Fail(ordinal, "no nvmlDeviceGetProcessUtilization", 0);
    ComputeCells& cells = shared_->Cells(ordinal);
    unsigned long long last = static_cast<unsigned long long>(cells.last_sample_us.load());
    if (last == 0) last = WallMicros() - 1'000'000;
    if (samples_.empty()) samples_.resize(256);
    unsigned count = static_cast<unsigned>(samples_.size());
    int r = utilization(handle, samples_.data(), &count, last);
    if (r == kNvmlErrorInsufficientSize) {
      samples_.resize(std::max<size_t>(count, samples_.size()) * 2);
      count = static_cast<unsigned>(samples_.size());
      r = utilization(handle, samples_.data(), &count, last);
    }
    seen_ = matched_ = 0;
    if (r == kNvmlErrorNotFound) return std::nullopt;  // no new sample of any process
    if (r != kNvmlSuccess) return Fail(ordinal, "nvmlDeviceGetProcessUtilization failed", r);
    fresh_.clear();
    for (unsigned i = 0; i < count && i < samples_.size(); ++i) {
      const NvmlSample& s = samples_[i];
      if (s.time_stamp <= last) continue;
      if (seen_++ == 0) first_pid_ = s.pid;
      cells.last_sample_us.store(
          std::max<int64_t>(cells.last_sample_us.load(), static_cast<int64_t>(s.time_stamp)));
      const auto pid = static_cast<pid_t>(s.pid);
      if (std::find(pids_.begin(), pids_.end(), pid) != pids_.end()) ++matched_;
      fresh_.push_back({pid, s.time_stamp, s.sm_util});
    }
    return InstanceUtil(fresh_, pids_);
  }

  bool Resolve(int ordinal, void** handle) {
    auto cuda_uuid = SEGMA_REAL("cuDeviceGetUuid_v2", CUuuid*, CUdevice);
    auto by_uuid = SEGMA_REAL_IN(Library::kNvml, "nvmlDeviceGetHandleByUUID", const char*, void**);
    CUuuid raw{};
    if (cuda_uuid == nullptr || by_uuid == nullptr || cuda_uuid(&raw, ordinal) != kCudaSuccess) {
      return false;  // CUDA not ready yet: the next tick tries again
    }
    const int r = by_uuid(FormatUuid(raw.bytes).c_str(), handle);
    if (r != kNvmlSuccess) {
      Fail(ordinal, "no NVML device with its UUID (a MIG device?)", r);
      return false;
    }
    return true;
  }

  std::nullopt_t Fail(int ordinal, const char* what, int code) {
    std::fprintf(stderr,
                 "segma-vgpu: SEGMA_VGPU_COMPUTE: device %d: %s (%d); not limiting its compute\n",
                 ordinal, what, code);
    active_[ordinal].store(false);
    return std::nullopt;
  }

  bool on_ = false;
  int percent_[kMaxDevices] = {};  // 0: no share
  std::vector<int> limited_;       // the ordinals with a share below 100 %
  std::unique_ptr<SharedCompute> shared_;
  int64_t update_ns_ = kComputeUpdateNs;
  std::atomic<bool> active_[kMaxDevices] = {};  // false: launches on it pass
  std::atomic<bool> watcher_{false};            // this process has started its watcher
  // The watcher thread's own.
  void* handles_[kMaxDevices] = {};
  std::vector<NvmlSample> samples_;
  std::vector<UtilSample> fresh_;
  std::vector<pid_t> pids_;
  // The last reading's new samples, the pid of the first, and those of ours (for the debug trace).
  unsigned seen_ = 0, first_pid_ = 0, matched_ = 0;
};

void AdmitLaunch(int64_t cost) {
  Compute& c = Compute::Get();
  if (c.On()) c.Admit(cost);
}

int64_t Blocks(unsigned gx, unsigned gy, unsigned gz) {
  return std::max<int64_t>(1, int64_t{gx} * int64_t{gy} * int64_t{gz});
}

}  // namespace

bool ComputeLimited() { return Compute::Get().On(); }

}  // namespace segma::vgpu

using namespace segma::vgpu;  // NOLINT: the exported C entry points below

#define SEGMA_LAUNCH_KERNEL(name)                                                               \
  SEGMA_VGPU_EXPORT CUresult name(CUfunction f, unsigned gx, unsigned gy, unsigned gz,          \
                                  unsigned bx, unsigned by, unsigned bz, unsigned shmem,        \
                                  CUstream stream, void** params, void** extra) {               \
    auto real = SEGMA_REAL(#name, CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, \
                           unsigned, unsigned, CUstream, void**, void**);                       \
    if (real == nullptr) return kCudaErrorNotInitialized;                                       \
    AdmitLaunch(Blocks(gx, gy, gz));                                                            \
    return real(f, gx, gy, gz, bx, by, bz, shmem, stream, params, extra);                       \
  }
SEGMA_LAUNCH_KERNEL(cuLaunchKernel)
SEGMA_LAUNCH_KERNEL(cuLaunchKernel_ptsz)

#define SEGMA_LAUNCH_KERNEL_EX(name)                                                               \
  SEGMA_VGPU_EXPORT CUresult name(const CUlaunchConfigPrefix* config, CUfunction f, void** params, \
                                  void** extra) {                                                  \
    auto real = SEGMA_REAL(#name, const CUlaunchConfigPrefix*, CUfunction, void**, void**);        \
    if (real == nullptr) return kCudaErrorNotInitialized;                                          \
    if (config != nullptr) {                                                                       \
      AdmitLaunch(Blocks(config->grid_dim_x, config->grid_dim_y, config->grid_dim_z));             \
    }                                                                                              \
    return real(config, f, params, extra);                                                         \
  }
SEGMA_LAUNCH_KERNEL_EX(cuLaunchKernelEx)
SEGMA_LAUNCH_KERNEL_EX(cuLaunchKernelEx_ptsz)

#define SEGMA_LAUNCH_COOPERATIVE(name)                                                          \
  SEGMA_VGPU_EXPORT CUresult name(CUfunction f, unsigned gx, unsigned gy, unsigned gz,          \
                                  unsigned bx, unsigned by, unsigned bz, unsigned shmem,        \
                                  CUstream stream, void** params) {                             \
    auto real = SEGMA_REAL(#name, CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, \
                           unsigned, unsigned, CUstream, void**);                               \
    if (real == nullptr) return kCudaErrorNotInitialized;                                       \
    AdmitLaunch(Blocks(gx, gy, gz));                                                            \
    return real(f, gx, gy, gz, bx, by, bz, shmem, stream, params);                              \
  }
SEGMA_LAUNCH_COOPERATIVE(cuLaunchCooperativeKernel)
SEGMA_LAUNCH_COOPERATIVE(cuLaunchCooperativeKernel_ptsz)

#define SEGMA_GRAPH_LAUNCH(name)                                        \
  SEGMA_VGPU_EXPORT CUresult name(CUgraphExec graph, CUstream stream) { \
    auto real = SEGMA_REAL(#name, CUgraphExec, CUstream);               \
    if (real == nullptr) return kCudaErrorNotInitialized;               \
    AdmitLaunch(kGraphLaunchCost);                                      \
    return real(graph, stream);                                         \
  }
SEGMA_GRAPH_LAUNCH(cuGraphLaunch)
SEGMA_GRAPH_LAUNCH(cuGraphLaunch_ptsz)
