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
//   SEGMA_VGPU_COMPUTE "<ordinal>=<percent>,...": a share of SM time per device (compute.cc);
//                      unset: launches are not wrapped.
//   SEGMA_VGPU_DEBUG=1 prints each cuGetProcAddress substitution (and each compute tick) to
//                      stderr.

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

#include "vgpu/compute.h"
#include "vgpu/cuda_abi.h"
#include "vgpu/limits.h"
#include "vgpu/shared_accounting.h"
#include "vgpu/state.h"

namespace segma::vgpu {
namespace {

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
  bool launch = false;  // a kernel launch: wrapped only while compute is limited (compute.h)
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
      {"cuLaunchKernel", "cuLaunchKernel", 4000, false, reinterpret_cast<void*>(&cuLaunchKernel),
       true},
      {"cuLaunchKernel_ptsz", "cuLaunchKernel", 7000, true,
       reinterpret_cast<void*>(&cuLaunchKernel_ptsz), true},
      {"cuLaunchKernelEx", "cuLaunchKernelEx", 11060, false,
       reinterpret_cast<void*>(&cuLaunchKernelEx), true},
      {"cuLaunchKernelEx_ptsz", "cuLaunchKernelEx", 11060, true,
       reinterpret_cast<void*>(&cuLaunchKernelEx_ptsz), true},
      {"cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel", 9000, false,
       reinterpret_cast<void*>(&cuLaunchCooperativeKernel), true},
      {"cuLaunchCooperativeKernel_ptsz", "cuLaunchCooperativeKernel", 9000, true,
       reinterpret_cast<void*>(&cuLaunchCooperativeKernel_ptsz), true},
      {"cuGraphLaunch", "cuGraphLaunch", 10000, false, reinterpret_cast<void*>(&cuGraphLaunch),
       true},
      {"cuGraphLaunch_ptsz", "cuGraphLaunch", 10000, true,
       reinterpret_cast<void*>(&cuGraphLaunch_ptsz), true},
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
    if (h.launch && !ComputeLimited()) return real;  // launches cost nothing unless limited
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
  // No strncmp: the sanitizers intercept it, and this may run before they are initialised.
  const bool cuda = symbol[0] == 'c' && symbol[1] == 'u';
  const bool nvml = symbol[0] == 'n' && symbol[1] == 'v' && symbol[2] == 'm' && symbol[3] == 'l';
  if (f == nullptr || handle == RTLD_NEXT || !(cuda || nvml)) {
    return f;  // everything the sanitizers and the C++ runtime ask for returns here
  }
  const Hook* h = cuda ? FindExported(symbol) : nullptr;
  if (h != nullptr && h->launch && !ComputeLimited()) return f;
  void* wrapper = h != nullptr ? h->wrapper : NvmlWrapper(symbol);
  if (wrapper == nullptr || wrapper == f) return f;
  // The library outside the global scope: its real functions are looked up on this handle.
  if (handle != RTLD_DEFAULT && real_dlsym(RTLD_NEXT, symbol) == nullptr) {
    RememberHandle(cuda ? Library::kCuda : Library::kNvml, handle);
  }
  return wrapper;
}
