// libsegma-vgpu.so: holds a CUDA process (and the processes it forks) to a per-device memory
// limit. Preloaded by the worker into an engine placed on a GPU it does not own whole; see
// docs/gpu-sharing.md.
//
// How calls reach the wrappers below:
//  - A program linked against libcuda binds cuMemAlloc_v2 & co. to the preloaded definitions.
//  - The CUDA runtime (and frameworks that embed it) dlopen libcuda.so.1, dlsym cuGetProcAddress
//    and resolve every other entry point through it. dlsym is defined here: asked on any handle
//    for an entry point wrapped here, it returns the wrapper; and the cuGetProcAddress wrappers
//    ask the driver first (so version and per-thread-stream rules stay the driver's) and swap
//    what it returns for the wrapper of the same exported function (cuMemAlloc → cuMemAlloc_v2,
//    cuMemAllocAsync with CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM → cuMemAllocAsync_ptsz).
// Environment (read once, at the first call):
//   SEGMA_VGPU_LIMITS  "<ordinal or uuid>=<bytes>,..." (see limits.h); unset: no limit, calls pass
//                      through. Malformed: every allocation is refused (fail closed) and the
//                      reason is printed.
//   SEGMA_VGPU_SHM     "/segma-vgpu-<instance>": the accounting shared by the instance's
//                      processes; unset: this process alone.
//   SEGMA_VGPU_DEBUG=1 prints each cuGetProcAddress substitution to stderr.

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "vgpu/cuda_abi.h"
#include "vgpu/limits.h"
#include "vgpu/shared_accounting.h"

#define SEGMA_VGPU_EXPORT extern "C" __attribute__((visibility("default")))

namespace segma::vgpu {
namespace {

using DlsymFn = void* (*)(void*, const char*);

// dlsym is called from the first moments of a process on, by the sanitizer runtimes among
// others before they are initialised: this path is neither instrumented nor guarded by a
// function-local static.
#define SEGMA_VGPU_EARLY __attribute__((no_sanitize("address", "undefined")))

// Builtins rather than std::atomic, whose (out-of-line, instrumented) members would run here.
DlsymFn g_real_dlsym = nullptr;

SEGMA_VGPU_EARLY DlsymFn RealDlsym() {
  DlsymFn fn = __atomic_load_n(&g_real_dlsym, __ATOMIC_ACQUIRE);
  if (fn != nullptr) return fn;
  // glibc >= 2.34 defines dlsym in libc at GLIBC_2.34, older ones at GLIBC_2.2.5 (x86-64) or
  // GLIBC_2.17 (arm64); the newer ones keep the old versions as aliases.
  static constexpr const char* kVersions[] = {"GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17"};
  for (const char* v : kVersions) {
    fn = reinterpret_cast<DlsymFn>(dlvsym(RTLD_NEXT, "dlsym", v));
    if (fn != nullptr) break;
  }
  __atomic_store_n(&g_real_dlsym, fn, __ATOMIC_RELEASE);
  return fn;
}

bool Debug() {
  static const bool on = [] {
    const char* v = std::getenv("SEGMA_VGPU_DEBUG");
    return v != nullptr && v[0] == '1';
  }();
  return on;
}

// The handle of the real libcuda when it is not in the global scope (dlopen'ed RTLD_LOCAL by the
// CUDA runtime): recorded when a program looks up a wrapped symbol on it.
std::atomic<void*> g_libcuda{nullptr};

// The driver's own `name`.
void* RealSymbol(const char* name) {
  const DlsymFn real_dlsym = RealDlsym();
  if (real_dlsym == nullptr) return nullptr;
  if (void* f = real_dlsym(RTLD_NEXT, name)) return f;
  void* h = g_libcuda.load(std::memory_order_acquire);
  if (h == nullptr) {
    const char* path = std::getenv("SEGMA_VGPU_LIBCUDA");
    h = dlopen(path != nullptr && path[0] != '\0' ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) return nullptr;
    g_libcuda.store(h, std::memory_order_release);
  }
  return real_dlsym(h, name);
}

// A real entry point, resolved once (a missing one stays null and is retried).
template <typename Fn>
Fn Real(const char* name, std::atomic<void*>& slot) {
  void* f = slot.load(std::memory_order_acquire);
  if (f == nullptr) {
    f = RealSymbol(name);
    slot.store(f, std::memory_order_release);
  }
  return reinterpret_cast<Fn>(f);
}

#define SEGMA_REAL(name, ...)                           \
  ([]() {                                               \
    static std::atomic<void*> slot{nullptr};            \
    return Real<CUresult (*)(__VA_ARGS__)>(name, slot); \
  }())

struct Booking {
  int device;  // index in the limits
  int64_t bytes;
};

constexpr int kNoLimit = -1;
constexpr int kRefuse = -2;  // bad configuration: fail closed
constexpr int kMaxOrdinals = 64;

class State {
 public:
  static State& Get() {
    static State* state = new State();  // never destroyed: wrappers may run during exit
    return *state;
  }

  // The limit index of device `ordinal`: kNoLimit, kRefuse or an index into limits_.
  int DeviceFor(CUdevice ordinal) {
    if (broken_) return kRefuse;
    if (limits_.empty()) return kNoLimit;
    if (ordinal < 0 || ordinal >= kMaxOrdinals) return kNoLimit;
    int d = by_ordinal_[ordinal].load(std::memory_order_acquire);
    if (d != kUnresolved) return d;
    std::string uuid;
    CUuuid raw{};
    auto get_uuid = SEGMA_REAL("cuDeviceGetUuid_v2", CUuuid*, CUdevice);
    if (get_uuid == nullptr) get_uuid = SEGMA_REAL("cuDeviceGetUuid", CUuuid*, CUdevice);
    if (get_uuid != nullptr && get_uuid(&raw, ordinal) == kCudaSuccess)
      uuid = FormatUuid(raw.bytes);
    d = FindLimit(limits_, ordinal, uuid);
    if (d < 0) d = kNoLimit;
    by_ordinal_[ordinal].store(d, std::memory_order_release);
    return d;
  }

  // The limit index of the current context's device.
  int CurrentDevice() {
    if (broken_) return kRefuse;
    if (limits_.empty()) return kNoLimit;
    auto ctx_get_device = SEGMA_REAL("cuCtxGetDevice", CUdevice*);
    CUdevice dev = 0;
    if (ctx_get_device == nullptr || ctx_get_device(&dev) != kCudaSuccess) return kNoLimit;
    return DeviceFor(dev);
  }

  bool Reserve(int device, int64_t bytes) {
    if (device == kRefuse) return false;
    if (accounting_->Reserve(device, bytes, limits_[device].bytes)) return true;
    std::fprintf(stderr,
                 "segma-vgpu: out of memory: refused %lld bytes on device %s: %lld of %lld bytes "
                 "in use by this instance\n",
                 static_cast<long long>(bytes), limits_[device].key.c_str(),
                 static_cast<long long>(accounting_->Used(device)),
                 static_cast<long long>(limits_[device].bytes));
    return false;
  }
  void Release(const Booking& b) { accounting_->Release(b.device, b.bytes); }

  void TrackPointer(CUdeviceptr p, Booking b) {
    std::lock_guard lock(mu_);
    pointers_[p] = b;
  }
  bool UntrackPointer(CUdeviceptr p, Booking* b) {
    std::lock_guard lock(mu_);
    auto it = pointers_.find(p);
    if (it == pointers_.end()) return false;
    *b = it->second;
    pointers_.erase(it);
    return true;
  }
  void TrackHandle(CUmemGenericAllocationHandle h, Booking b) {
    std::lock_guard lock(mu_);
    handles_[h] = b;
  }
  bool UntrackHandle(CUmemGenericAllocationHandle h, Booking* b) {
    std::lock_guard lock(mu_);
    auto it = handles_.find(h);
    if (it == handles_.end()) return false;
    *b = it->second;
    handles_.erase(it);
    return true;
  }

  int64_t Limit(int device) const { return limits_[device].bytes; }
  int64_t Used(int device) {
    accounting_->ReclaimDead();
    return accounting_->Used(device);
  }

 private:
  static constexpr int kUnresolved = -3;

  State() {
    for (auto& d : by_ordinal_) d.store(kUnresolved);
    const char* text = std::getenv("SEGMA_VGPU_LIMITS");
    std::string error;
    std::optional<std::vector<DeviceLimit>> limits = ParseLimits(text ? text : "", &error);
    if (!limits) {
      std::fprintf(stderr, "segma-vgpu: SEGMA_VGPU_LIMITS: %s; refusing device allocations\n",
                   error.c_str());
      broken_ = true;
      return;
    }
    limits_ = std::move(*limits);
    if (limits_.empty()) return;
    const char* shm = std::getenv("SEGMA_VGPU_SHM");
    accounting_ = SharedAccounting::Open(shm ? shm : "", &error);
    if (accounting_ == nullptr) {
      std::fprintf(stderr, "segma-vgpu: SEGMA_VGPU_SHM: %s; refusing device allocations\n",
                   error.c_str());
      broken_ = true;
    }
  }

  bool broken_ = false;
  std::vector<DeviceLimit> limits_;
  std::unique_ptr<SharedAccounting> accounting_;
  std::atomic<int> by_ordinal_[kMaxOrdinals];
  std::mutex mu_;
  std::unordered_map<CUdeviceptr, Booking> pointers_;
  std::unordered_map<CUmemGenericAllocationHandle, Booking> handles_;
};

// Books `bytes` on `device`, runs `alloc`, tracks the result with `track`; gives the booking back
// when the driver fails.
template <typename Alloc, typename Track>
CUresult Booked(int device, int64_t bytes, Alloc&& alloc, Track&& track) {
  if (device == kNoLimit) return alloc();
  State& s = State::Get();
  if (!s.Reserve(device, bytes)) return kCudaErrorOutOfMemory;
  const CUresult r = alloc();
  if (r != kCudaSuccess) {
    s.Release({device, bytes});
  } else {
    track(Booking{device, bytes});
  }
  return r;
}

template <typename Free>
CUresult FreePointer(CUdeviceptr p, Free&& free) {
  State& s = State::Get();
  Booking b{};
  const bool booked = p != 0 && s.UntrackPointer(p, &b);
  const CUresult r = free();
  if (booked) {
    if (r == kCudaSuccess) {
      s.Release(b);
    } else {
      s.TrackPointer(p, b);
    }
  }
  return r;
}

}  // namespace
}  // namespace segma::vgpu

using namespace segma::vgpu;  // NOLINT: the exported C entry points below

SEGMA_VGPU_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytes) {
  auto real = SEGMA_REAL("cuMemAlloc_v2", CUdeviceptr*, size_t);
  if (real == nullptr) return kCudaErrorNotInitialized;
  return Booked(
      State::Get().CurrentDevice(), static_cast<int64_t>(bytes), [&] { return real(dptr, bytes); },
      [&](Booking b) { State::Get().TrackPointer(*dptr, b); });
}

SEGMA_VGPU_EXPORT CUresult cuMemAllocManaged(CUdeviceptr* dptr, size_t bytes, unsigned int flags) {
  auto real = SEGMA_REAL("cuMemAllocManaged", CUdeviceptr*, size_t, unsigned int);
  if (real == nullptr) return kCudaErrorNotInitialized;
  return Booked(
      State::Get().CurrentDevice(), static_cast<int64_t>(bytes),
      [&] { return real(dptr, bytes, flags); },
      [&](Booking b) { State::Get().TrackPointer(*dptr, b); });
}

SEGMA_VGPU_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr* dptr, size_t* pitch, size_t width,
                                              size_t height, unsigned int element_size) {
  auto real = SEGMA_REAL("cuMemAllocPitch_v2", CUdeviceptr*, size_t*, size_t, size_t, unsigned int);
  if (real == nullptr) return kCudaErrorNotInitialized;
  State& s = State::Get();
  const int device = s.CurrentDevice();
  if (device == kNoLimit) return real(dptr, pitch, width, height, element_size);
  // The pitch is the driver's choice: book width * height first, then the difference.
  const int64_t first = static_cast<int64_t>(width) * static_cast<int64_t>(height);
  return Booked(
      device, first,
      [&]() -> CUresult {
        const CUresult r = real(dptr, pitch, width, height, element_size);
        if (r != kCudaSuccess) return r;
        const int64_t extra = static_cast<int64_t>(*pitch) * static_cast<int64_t>(height) - first;
        if (extra > 0 && !s.Reserve(device, extra)) {
          SEGMA_REAL("cuMemFree_v2", CUdeviceptr)(*dptr);
          return kCudaErrorOutOfMemory;
        }
        return kCudaSuccess;
      },
      [&](Booking b) {
        b.bytes = static_cast<int64_t>(*pitch) * static_cast<int64_t>(height);
        s.TrackPointer(*dptr, b);
      });
}

#define SEGMA_ASYNC_ALLOC(name)                                                       \
  SEGMA_VGPU_EXPORT CUresult name(CUdeviceptr* dptr, size_t bytes, CUstream stream) { \
    auto real = SEGMA_REAL(#name, CUdeviceptr*, size_t, CUstream);                    \
    if (real == nullptr) return kCudaErrorNotInitialized;                             \
    return Booked(                                                                    \
        State::Get().CurrentDevice(), static_cast<int64_t>(bytes),                    \
        [&] { return real(dptr, bytes, stream); },                                    \
        [&](Booking b) { State::Get().TrackPointer(*dptr, b); });                     \
  }
SEGMA_ASYNC_ALLOC(cuMemAllocAsync)
SEGMA_ASYNC_ALLOC(cuMemAllocAsync_ptsz)

#define SEGMA_POOL_ALLOC(name)                                                        \
  SEGMA_VGPU_EXPORT CUresult name(CUdeviceptr* dptr, size_t bytes, CUmemoryPool pool, \
                                  CUstream stream) {                                  \
    auto real = SEGMA_REAL(#name, CUdeviceptr*, size_t, CUmemoryPool, CUstream);      \
    if (real == nullptr) return kCudaErrorNotInitialized;                             \
    return Booked(                                                                    \
        State::Get().CurrentDevice(), static_cast<int64_t>(bytes),                    \
        [&] { return real(dptr, bytes, pool, stream); },                              \
        [&](Booking b) { State::Get().TrackPointer(*dptr, b); });                     \
  }
SEGMA_POOL_ALLOC(cuMemAllocFromPoolAsync)
SEGMA_POOL_ALLOC(cuMemAllocFromPoolAsync_ptsz)

SEGMA_VGPU_EXPORT CUresult cuMemFree_v2(CUdeviceptr p) {
  auto real = SEGMA_REAL("cuMemFree_v2", CUdeviceptr);
  if (real == nullptr) return kCudaErrorNotInitialized;
  return FreePointer(p, [&] { return real(p); });
}

#define SEGMA_ASYNC_FREE(name)                                      \
  SEGMA_VGPU_EXPORT CUresult name(CUdeviceptr p, CUstream stream) { \
    auto real = SEGMA_REAL(#name, CUdeviceptr, CUstream);           \
    if (real == nullptr) return kCudaErrorNotInitialized;           \
    return FreePointer(p, [&] { return real(p, stream); });         \
  }
SEGMA_ASYNC_FREE(cuMemFreeAsync)
SEGMA_ASYNC_FREE(cuMemFreeAsync_ptsz)

SEGMA_VGPU_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle* handle, size_t bytes,
                                       const CUmemAllocationPropPrefix* prop,
                                       unsigned long long flags) {
  auto real = SEGMA_REAL("cuMemCreate", CUmemGenericAllocationHandle*, size_t,
                         const CUmemAllocationPropPrefix*, unsigned long long);
  if (real == nullptr) return kCudaErrorNotInitialized;
  State& s = State::Get();
  const int device = prop != nullptr && prop->location.type == kMemLocationTypeDevice
                         ? s.DeviceFor(prop->location.id)
                         : kNoLimit;
  return Booked(
      device, static_cast<int64_t>(bytes), [&] { return real(handle, bytes, prop, flags); },
      [&](Booking b) { s.TrackHandle(*handle, b); });
}

SEGMA_VGPU_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
  auto real = SEGMA_REAL("cuMemRelease", CUmemGenericAllocationHandle);
  if (real == nullptr) return kCudaErrorNotInitialized;
  State& s = State::Get();
  Booking b{};
  const bool booked = s.UntrackHandle(handle, &b);
  const CUresult r = real(handle);
  if (booked) {
    if (r == kCudaSuccess) {
      s.Release(b);
    } else {
      s.TrackHandle(handle, b);
    }
  }
  return r;
}

SEGMA_VGPU_EXPORT CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
  auto real = SEGMA_REAL("cuMemGetInfo_v2", size_t*, size_t*);
  if (real == nullptr) return kCudaErrorNotInitialized;
  const CUresult r = real(free, total);
  State& s = State::Get();
  const int device = s.CurrentDevice();
  if (r != kCudaSuccess || device < 0 || free == nullptr || total == nullptr) return r;
  const int64_t limit = s.Limit(device);
  const int64_t left = limit - s.Used(device);
  *total = std::min<size_t>(*total, static_cast<size_t>(limit));
  *free = std::min<size_t>(*free, left > 0 ? static_cast<size_t>(left) : 0);
  return r;
}

SEGMA_VGPU_EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice dev) {
  auto real = SEGMA_REAL("cuDeviceTotalMem_v2", size_t*, CUdevice);
  if (real == nullptr) return kCudaErrorNotInitialized;
  const CUresult r = real(bytes, dev);
  State& s = State::Get();
  const int device = s.DeviceFor(dev);
  if (r == kCudaSuccess && device >= 0 && bytes != nullptr) {
    *bytes = std::min<size_t>(*bytes, static_cast<size_t>(s.Limit(device)));
  }
  return r;
}

SEGMA_VGPU_EXPORT CUresult cuGetProcAddress(const char* symbol, void** pfn, int version,
                                            cuuint64_t flags);
SEGMA_VGPU_EXPORT CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int version,
                                               cuuint64_t flags,
                                               CUdriverProcAddressQueryResult* status);

namespace segma::vgpu {
namespace {

struct Hook {
  const char* exported;  // the driver's exported name
  const char* base;      // the name cuGetProcAddress is asked for
  int min_version;       // the CUDA version from which `base` means `exported`
  bool per_thread;       // the _ptsz flavour
  void* wrapper;
};

const std::vector<Hook>& Hooks() {
  static const std::vector<Hook> hooks = {
      {"cuMemAlloc_v2", "cuMemAlloc", 3020, false, reinterpret_cast<void*>(&cuMemAlloc_v2)},
      {"cuMemAllocManaged", "cuMemAllocManaged", 6000, false,
       reinterpret_cast<void*>(&cuMemAllocManaged)},
      {"cuMemAllocPitch_v2", "cuMemAllocPitch", 3020, false,
       reinterpret_cast<void*>(&cuMemAllocPitch_v2)},
      {"cuMemAllocAsync", "cuMemAllocAsync", 11020, false,
       reinterpret_cast<void*>(&cuMemAllocAsync)},
      {"cuMemAllocAsync_ptsz", "cuMemAllocAsync", 11020, true,
       reinterpret_cast<void*>(&cuMemAllocAsync_ptsz)},
      {"cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync", 11020, false,
       reinterpret_cast<void*>(&cuMemAllocFromPoolAsync)},
      {"cuMemAllocFromPoolAsync_ptsz", "cuMemAllocFromPoolAsync", 11020, true,
       reinterpret_cast<void*>(&cuMemAllocFromPoolAsync_ptsz)},
      {"cuMemFree_v2", "cuMemFree", 3020, false, reinterpret_cast<void*>(&cuMemFree_v2)},
      {"cuMemFreeAsync", "cuMemFreeAsync", 11020, false, reinterpret_cast<void*>(&cuMemFreeAsync)},
      {"cuMemFreeAsync_ptsz", "cuMemFreeAsync", 11020, true,
       reinterpret_cast<void*>(&cuMemFreeAsync_ptsz)},
      {"cuMemCreate", "cuMemCreate", 10020, false, reinterpret_cast<void*>(&cuMemCreate)},
      {"cuMemRelease", "cuMemRelease", 10020, false, reinterpret_cast<void*>(&cuMemRelease)},
      {"cuMemGetInfo_v2", "cuMemGetInfo", 3020, false, reinterpret_cast<void*>(&cuMemGetInfo_v2)},
      {"cuDeviceTotalMem_v2", "cuDeviceTotalMem", 3020, false,
       reinterpret_cast<void*>(&cuDeviceTotalMem_v2)},
      {"cuGetProcAddress", "cuGetProcAddress", 11030, false,
       reinterpret_cast<void*>(&cuGetProcAddress)},
      {"cuGetProcAddress_v2", "cuGetProcAddress", 12000, false,
       reinterpret_cast<void*>(&cuGetProcAddress_v2)},
  };
  return hooks;
}

const Hook* FindExported(const char* name) {
  for (const Hook& h : Hooks()) {
    if (std::strcmp(h.exported, name) == 0) return &h;
  }
  return nullptr;
}

// What cuGetProcAddress hands out for `symbol` instead of `real`, the driver's answer: the
// wrapper of the exported function `real` is; failing that (a driver that answers with internal
// addresses), the wrapper the version rules name; otherwise `real` itself.
void* Substitute(const char* symbol, void* real, int version, cuuint64_t flags) {
  const Hook* by_rule = nullptr;
  for (const Hook& h : Hooks()) {
    if (h.wrapper == real) return real;  // a driver that binds its own table to the wrappers
  }
  for (const Hook& h : Hooks()) {
    if (std::strcmp(h.base, symbol) != 0) continue;
    if (RealSymbol(h.exported) == real) {
      if (Debug()) std::fprintf(stderr, "segma-vgpu: %s@%d -> %s\n", symbol, version, h.exported);
      return h.wrapper;
    }
    const bool per_thread = (flags & kGetProcAddressPerThreadDefaultStream) != 0;
    if (version >= h.min_version && h.per_thread == per_thread &&
        (by_rule == nullptr || h.min_version > by_rule->min_version)) {
      by_rule = &h;
    }
  }
  if (by_rule != nullptr) {
    if (Debug()) {
      std::fprintf(stderr, "segma-vgpu: %s@%d -> %s (by version)\n", symbol, version,
                   by_rule->exported);
    }
    return by_rule->wrapper;
  }
  return real;
}

}  // namespace
}  // namespace segma::vgpu

SEGMA_VGPU_EXPORT CUresult cuGetProcAddress(const char* symbol, void** pfn, int version,
                                            cuuint64_t flags) {
  auto real = SEGMA_REAL("cuGetProcAddress", const char*, void**, int, cuuint64_t);
  if (real == nullptr) return kCudaErrorNotInitialized;
  const CUresult r = real(symbol, pfn, version, flags);
  if (r == kCudaSuccess && symbol != nullptr && pfn != nullptr && *pfn != nullptr) {
    *pfn = Substitute(symbol, *pfn, version, flags);
  }
  return r;
}

SEGMA_VGPU_EXPORT CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int version,
                                               cuuint64_t flags,
                                               CUdriverProcAddressQueryResult* status) {
  auto real = SEGMA_REAL("cuGetProcAddress_v2", const char*, void**, int, cuuint64_t,
                         CUdriverProcAddressQueryResult*);
  if (real == nullptr) return kCudaErrorNotInitialized;
  const CUresult r = real(symbol, pfn, version, flags, status);
  if (r == kCudaSuccess && symbol != nullptr && pfn != nullptr && *pfn != nullptr) {
    *pfn = Substitute(symbol, *pfn, version, flags);
  }
  return r;
}

// Hands out the wrappers to programs that look the driver's entry points up by name on a handle
// (the CUDA runtime does: dlopen("libcuda.so.1") then dlsym(h, "cuGetProcAddress_v2")).
// RTLD_NEXT lookups pass through unchanged (they are resolved as if made from this library).
SEGMA_VGPU_EXPORT SEGMA_VGPU_EARLY void* dlsym(void* handle, const char* symbol) {
  const DlsymFn real_dlsym = RealDlsym();
  if (real_dlsym == nullptr) return nullptr;
  void* f = real_dlsym(handle, symbol);
  if (f == nullptr || handle == RTLD_NEXT || symbol[0] != 'c' || symbol[1] != 'u') {
    return f;  // everything the sanitizers and the C++ runtime ask for returns here
  }
  const Hook* h = FindExported(symbol);
  if (h == nullptr || h->wrapper == f) return f;
  if (handle != RTLD_DEFAULT && g_libcuda.load(std::memory_order_acquire) == nullptr &&
      RealDlsym()(RTLD_NEXT, symbol) == nullptr) {
    g_libcuda.store(handle, std::memory_order_release);  // the driver, outside the global scope
  }
  return h->wrapper;
}
