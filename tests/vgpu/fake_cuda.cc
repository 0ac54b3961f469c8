// A fake libcuda.so for testing libsegma-vgpu without a GPU. It exports the driver entry points
// the library wraps, over two devices of FAKE_CUDA_TOTAL_BYTES each (default 80 GiB) whose memory
// is a counter: allocations hand out made-up addresses and fail with CUDA_ERROR_OUT_OF_MEMORY when
// the device is full, as the driver does. cuGetProcAddress(_v2) resolves names with the driver's
// rules (a version picks "_v2", the per-thread-stream flag picks "_ptsz"); with
// FAKE_CUDA_INTERNAL_POINTERS=1 it answers with internal addresses rather than the exported
// functions' (a driver may), so the library's by-version fallback is exercised.
// Kernel launches (cuLaunchKernel, cuLaunchKernelEx, cuLaunchCooperativeKernel, cuGraphLaunch and
// their _ptsz flavours) only count themselves.
// Extras for the tests: fake_cuda_set_device(d) makes d the current context's device;
// fake_cuda_used(d) is the memory allocated on d; fake_cuda_launches() the launches so far.

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "vgpu/cuda_abi.h"

namespace {

using namespace segma::vgpu;

constexpr int kDevices = 2;
constexpr unsigned long long kGiB = 1ULL << 30;

struct Alloc {
  int device;
  size_t bytes;
};

std::mutex g_mu;
int g_current = 0;
long long g_used[kDevices] = {0, 0};
unsigned long long g_next = 0x7f0000000000ULL;
std::map<unsigned long long, Alloc> g_allocs;  // pointer or VMM handle → allocation
std::atomic<long long> g_launches{0};

size_t Total() {
  const char* v = std::getenv("FAKE_CUDA_TOTAL_BYTES");
  return v != nullptr ? std::strtoull(v, nullptr, 10) : 80 * kGiB;
}

CUresult Allocate(int device, size_t bytes, unsigned long long* out) {
  if (out == nullptr || bytes == 0) return kCudaErrorInvalidValue;
  std::lock_guard lock(g_mu);
  if (device < 0 || device >= kDevices) return kCudaErrorInvalidValue;
  if (g_used[device] + static_cast<long long>(bytes) > static_cast<long long>(Total())) {
    return kCudaErrorOutOfMemory;
  }
  g_used[device] += static_cast<long long>(bytes);
  *out = g_next;
  g_next += (bytes + (2 << 20) - 1) / (2 << 20) * (2 << 20);
  g_allocs[*out] = {device, bytes};
  return kCudaSuccess;
}

CUresult Free(unsigned long long p) {
  std::lock_guard lock(g_mu);
  auto it = g_allocs.find(p);
  if (it == g_allocs.end()) return kCudaErrorInvalidValue;
  g_used[it->second.device] -= static_cast<long long>(it->second.bytes);
  g_allocs.erase(it);
  return kCudaSuccess;
}

int Current() {
  std::lock_guard lock(g_mu);
  return g_current;
}

}  // namespace

#define FAKE_EXPORT extern "C" __attribute__((visibility("default")))

FAKE_EXPORT void fake_cuda_set_device(int d) {
  std::lock_guard lock(g_mu);
  g_current = d;
}
FAKE_EXPORT long long fake_cuda_used(int d) {
  std::lock_guard lock(g_mu);
  return d >= 0 && d < kDevices ? g_used[d] : -1;
}

FAKE_EXPORT CUresult cuInit(unsigned int) { return kCudaSuccess; }
FAKE_EXPORT CUresult cuDeviceGetCount(int* n) {
  *n = kDevices;
  return kCudaSuccess;
}
FAKE_EXPORT CUresult cuCtxGetDevice(CUdevice* d) {
  *d = Current();
  return kCudaSuccess;
}
// Device d's UUID, the one tests/worker/gpu/fake_nvml.cc gives its GPU d:
// "GPU-dddddddd-1111-2222-3333-444444444444".
FAKE_EXPORT CUresult cuDeviceGetUuid_v2(CUuuid* uuid, CUdevice d) {
  if (d < 0 || d >= kDevices) return kCudaErrorInvalidValue;
  const unsigned char bytes[16] = {0,    0,    0,    0,    0x11, 0x11, 0x22, 0x22,
                                   0x33, 0x33, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44};
  std::memcpy(uuid->bytes, bytes, 16);
  std::memset(uuid->bytes, 0x11 * d, 4);
  return kCudaSuccess;
}
FAKE_EXPORT CUresult cuDeviceGetUuid(CUuuid* uuid, CUdevice d) {
  return cuDeviceGetUuid_v2(uuid, d);
}

// The 32-bit entry point of CUDA < 3.2: never wrapped, never used; answers an error if called.
FAKE_EXPORT CUresult cuMemAlloc(unsigned int*, unsigned int) { return kCudaErrorNotFound; }

FAKE_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
  return Allocate(Current(), bytes, p);
}
FAKE_EXPORT CUresult cuMemAllocManaged(CUdeviceptr* p, size_t bytes, unsigned int) {
  return Allocate(Current(), bytes, p);
}
FAKE_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr* p, size_t* pitch, size_t width, size_t height,
                                        unsigned int) {
  *pitch = (width + 511) / 512 * 512;
  return Allocate(Current(), *pitch * height, p);
}
FAKE_EXPORT CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, CUstream) {
  return Allocate(Current(), bytes, p);
}
FAKE_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr* p, size_t bytes, CUstream) {
  return Allocate(Current(), bytes, p);
}
FAKE_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr* p, size_t bytes, CUmemoryPool, CUstream) {
  return Allocate(Current(), bytes, p);
}
FAKE_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr* p, size_t bytes, CUmemoryPool,
                                                  CUstream) {
  return Allocate(Current(), bytes, p);
}
FAKE_EXPORT CUresult cuMemFree_v2(CUdeviceptr p) { return Free(p); }
FAKE_EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, CUstream) { return Free(p); }
FAKE_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream) { return Free(p); }
FAKE_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle* h, size_t bytes,
                                 const CUmemAllocationPropPrefix* prop, unsigned long long) {
  if (prop == nullptr || prop->location.type != kMemLocationTypeDevice)
    return kCudaErrorInvalidValue;
  return Allocate(prop->location.id, bytes, h);
}
FAKE_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle h) { return Free(h); }
FAKE_EXPORT CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
  *total = Total();
  *free = Total() - static_cast<size_t>(fake_cuda_used(Current()));
  return kCudaSuccess;
}
FAKE_EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
  if (d < 0 || d >= kDevices) return kCudaErrorInvalidValue;
  *bytes = Total();
  return kCudaSuccess;
}

FAKE_EXPORT long long fake_cuda_launches() { return g_launches.load(); }

#define FAKE_LAUNCH(name)                                                                 \
  FAKE_EXPORT CUresult name(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, \
                            unsigned, unsigned, CUstream, void**, void**) {               \
    ++g_launches;                                                                         \
    return kCudaSuccess;                                                                  \
  }
FAKE_LAUNCH(cuLaunchKernel)
FAKE_LAUNCH(cuLaunchKernel_ptsz)
FAKE_EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfigPrefix*, CUfunction, void**, void**) {
  ++g_launches;
  return kCudaSuccess;
}
FAKE_EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfigPrefix*, CUfunction, void**,
                                           void**) {
  ++g_launches;
  return kCudaSuccess;
}
FAKE_EXPORT CUresult cuLaunchCooperativeKernel(CUfunction, unsigned, unsigned, unsigned, unsigned,
                                               unsigned, unsigned, unsigned, CUstream, void**) {
  ++g_launches;
  return kCudaSuccess;
}
FAKE_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction, unsigned, unsigned, unsigned,
                                                    unsigned, unsigned, unsigned, unsigned,
                                                    CUstream, void**) {
  ++g_launches;
  return kCudaSuccess;
}
FAKE_EXPORT CUresult cuGraphLaunch(CUgraphExec, CUstream) {
  ++g_launches;
  return kCudaSuccess;
}
FAKE_EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec, CUstream) {
  ++g_launches;
  return kCudaSuccess;
}

FAKE_EXPORT CUresult cuGetProcAddress(const char* symbol, void** pfn, int version,
                                      cuuint64_t flags);
FAKE_EXPORT CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int version,
                                         cuuint64_t flags, CUdriverProcAddressQueryResult* status);

namespace {

// Internal entry points, distinct from the exported ones (FAKE_CUDA_INTERNAL_POINTERS=1).
CUresult InternalAlloc(CUdeviceptr* p, size_t bytes) { return Allocate(Current(), bytes, p); }
CUresult InternalGetInfo(size_t* free, size_t* total) { return cuMemGetInfo_v2(free, total); }
CUresult InternalLaunch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned shmem, CUstream stream, void** params,
                        void** extra) {
  return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shmem, stream, params, extra);
}

struct Entry {
  const char* name;
  int min_version;  // this entry from this version on (the highest matching one wins)
  bool per_thread;
  void* fn;
  void* internal;  // nullptr: the same as fn
};

#define FAKE_FN(f) reinterpret_cast<void*>(&f)
const Entry kEntries[] = {
    {"cuInit", 2000, false, FAKE_FN(cuInit), nullptr},
    {"cuCtxGetDevice", 2000, false, FAKE_FN(cuCtxGetDevice), nullptr},
    {"cuMemAlloc", 2000, false, FAKE_FN(cuMemAlloc), nullptr},
    {"cuMemAlloc", 3020, false, FAKE_FN(cuMemAlloc_v2), FAKE_FN(InternalAlloc)},
    {"cuMemAllocManaged", 6000, false, FAKE_FN(cuMemAllocManaged), nullptr},
    {"cuMemAllocPitch", 3020, false, FAKE_FN(cuMemAllocPitch_v2), nullptr},
    {"cuMemAllocAsync", 11020, false, FAKE_FN(cuMemAllocAsync), nullptr},
    {"cuMemAllocAsync", 11020, true, FAKE_FN(cuMemAllocAsync_ptsz), nullptr},
    {"cuMemAllocFromPoolAsync", 11020, false, FAKE_FN(cuMemAllocFromPoolAsync), nullptr},
    {"cuMemAllocFromPoolAsync", 11020, true, FAKE_FN(cuMemAllocFromPoolAsync_ptsz), nullptr},
    {"cuMemFree", 3020, false, FAKE_FN(cuMemFree_v2), nullptr},
    {"cuMemFreeAsync", 11020, false, FAKE_FN(cuMemFreeAsync), nullptr},
    {"cuMemFreeAsync", 11020, true, FAKE_FN(cuMemFreeAsync_ptsz), nullptr},
    {"cuMemCreate", 10020, false, FAKE_FN(cuMemCreate), nullptr},
    {"cuMemRelease", 10020, false, FAKE_FN(cuMemRelease), nullptr},
    {"cuMemGetInfo", 3020, false, FAKE_FN(cuMemGetInfo_v2), FAKE_FN(InternalGetInfo)},
    {"cuDeviceTotalMem", 3020, false, FAKE_FN(cuDeviceTotalMem_v2), nullptr},
    {"cuDeviceGetUuid", 9020, false, FAKE_FN(cuDeviceGetUuid), nullptr},
    {"cuDeviceGetUuid", 11040, false, FAKE_FN(cuDeviceGetUuid_v2), nullptr},
    {"cuLaunchKernel", 4000, false, FAKE_FN(cuLaunchKernel), FAKE_FN(InternalLaunch)},
    {"cuLaunchKernel", 7000, true, FAKE_FN(cuLaunchKernel_ptsz), nullptr},
    {"cuLaunchKernelEx", 11060, false, FAKE_FN(cuLaunchKernelEx), nullptr},
    {"cuLaunchKernelEx", 11060, true, FAKE_FN(cuLaunchKernelEx_ptsz), nullptr},
    {"cuLaunchCooperativeKernel", 9000, false, FAKE_FN(cuLaunchCooperativeKernel), nullptr},
    {"cuLaunchCooperativeKernel", 9000, true, FAKE_FN(cuLaunchCooperativeKernel_ptsz), nullptr},
    {"cuGraphLaunch", 10000, false, FAKE_FN(cuGraphLaunch), nullptr},
    {"cuGraphLaunch", 10000, true, FAKE_FN(cuGraphLaunch_ptsz), nullptr},
    {"cuGetProcAddress", 11030, false, FAKE_FN(cuGetProcAddress), nullptr},
    {"cuGetProcAddress", 12000, false, FAKE_FN(cuGetProcAddress_v2), nullptr},
};

int Lookup(const char* symbol, void** pfn, int version, cuuint64_t flags) {
  const bool per_thread = (flags & kGetProcAddressPerThreadDefaultStream) != 0;
  const char* internal = std::getenv("FAKE_CUDA_INTERNAL_POINTERS");
  const Entry* best = nullptr;
  bool known = false;
  for (const Entry& e : kEntries) {
    if (std::strcmp(e.name, symbol) != 0) continue;
    known = true;
    // Functions without a _ptsz flavour answer the per-thread flag with their only one.
    if (e.per_thread && !per_thread) continue;
    if (version >= e.min_version && (best == nullptr || e.min_version > best->min_version ||
                                     (e.per_thread && !best->per_thread))) {
      best = &e;
    }
  }
  *pfn = nullptr;
  if (best == nullptr)
    return known ? kGetProcAddressVersionNotSufficient : kGetProcAddressSymbolNotFound;
  *pfn = internal != nullptr && internal[0] == '1' && best->internal != nullptr ? best->internal
                                                                                : best->fn;
  return kGetProcAddressSuccess;
}

}  // namespace

FAKE_EXPORT CUresult cuGetProcAddress(const char* symbol, void** pfn, int version,
                                      cuuint64_t flags) {
  return Lookup(symbol, pfn, version, flags) == kGetProcAddressSuccess ? kCudaSuccess
                                                                       : kCudaErrorNotFound;
}
FAKE_EXPORT CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int version,
                                         cuuint64_t flags, CUdriverProcAddressQueryResult* status) {
  const int r = Lookup(symbol, pfn, version, flags);
  if (status != nullptr) *status = r;
  return r == kGetProcAddressSuccess ? kCudaSuccess : kCudaErrorNotFound;
}
