// Checks libsegma-vgpu on a real GPU (bench/gpu/vgpu.sh): allocates in 1 GiB steps through the
// runtime API (cudaMalloc, cudaMallocAsync), the driver API (cuMemAlloc) and the virtual-memory
// API (cuMemCreate) until the driver refuses, prints how far each got and what the refusal was,
// gives everything back and checks the room came back; then times cuMemAlloc/cuMemFree.
//   vgpu_alloc check           one JSON line per path
//   vgpu_alloc latency N BYTES mean/median/p99 microseconds of N cuMemAlloc and N cuMemFree
#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr size_t kGiB = size_t{1} << 30;

void Report(const char* path, size_t got, int code, const char* name, bool room_back) {
  std::printf(
      "{\"path\":\"%s\",\"allocated_gib\":%zu,\"refusal\":%d,\"refusal_name\":\"%s\","
      "\"room_back\":%s}\n",
      path, got / kGiB, code, name, room_back ? "true" : "false");
  std::fflush(stdout);
}

void Runtime() {
  std::vector<void*> ptrs;
  cudaError_t e = cudaSuccess;
  while (ptrs.size() < 200) {
    void* p = nullptr;
    e = cudaMalloc(&p, kGiB);
    if (e != cudaSuccess) break;
    ptrs.push_back(p);
  }
  cudaGetLastError();  // clear the sticky-free error state
  const size_t got = ptrs.size() * kGiB;
  for (void* p : ptrs) cudaFree(p);
  void* p = nullptr;
  const bool back = cudaMalloc(&p, 4 * kGiB) == cudaSuccess;
  if (back) cudaFree(p);
  Report("runtime cudaMalloc", got, e, cudaGetErrorName(e), back);
}

void RuntimeAsync() {
  cudaStream_t s;
  cudaStreamCreate(&s);
  std::vector<void*> ptrs;
  cudaError_t e = cudaSuccess;
  while (ptrs.size() < 200) {
    void* p = nullptr;
    e = cudaMallocAsync(&p, kGiB, s);
    if (e != cudaSuccess) break;
    ptrs.push_back(p);
  }
  cudaGetLastError();
  const size_t got = ptrs.size() * kGiB;
  for (void* p : ptrs) cudaFreeAsync(p, s);
  cudaStreamSynchronize(s);
  // Give the pool's memory back to the driver too.
  cudaMemPool_t pool;
  cudaDeviceGetDefaultMemPool(&pool, 0);
  cudaMemPoolTrimTo(pool, 0);
  void* p = nullptr;
  const bool back = cudaMallocAsync(&p, 4 * kGiB, s) == cudaSuccess;
  if (back) cudaFreeAsync(p, s);
  cudaStreamSynchronize(s);
  cudaStreamDestroy(s);
  Report("runtime cudaMallocAsync", got, e, cudaGetErrorName(e), back);
}

void Driver() {
  std::vector<CUdeviceptr> ptrs;
  CUresult r = CUDA_SUCCESS;
  while (ptrs.size() < 200) {
    CUdeviceptr p = 0;
    r = cuMemAlloc(&p, kGiB);
    if (r != CUDA_SUCCESS) break;
    ptrs.push_back(p);
  }
  const size_t got = ptrs.size() * kGiB;
  for (CUdeviceptr p : ptrs) cuMemFree(p);
  CUdeviceptr p = 0;
  const bool back = cuMemAlloc(&p, 4 * kGiB) == CUDA_SUCCESS;
  if (back) cuMemFree(p);
  const char* name = "";
  cuGetErrorName(r, &name);
  Report("driver cuMemAlloc", got, r, name, back);
}

void Vmm() {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = 0;
  std::vector<CUmemGenericAllocationHandle> handles;
  CUresult r = CUDA_SUCCESS;
  while (handles.size() < 200) {
    CUmemGenericAllocationHandle h;
    r = cuMemCreate(&h, kGiB, &prop, 0);
    if (r != CUDA_SUCCESS) break;
    handles.push_back(h);
  }
  const size_t got = handles.size() * kGiB;
  // Map one to check the memory is usable, as PyTorch's expandable segments do.
  bool mapped = false;
  if (!handles.empty()) {
    CUdeviceptr va = 0;
    if (cuMemAddressReserve(&va, kGiB, 0, 0, 0) == CUDA_SUCCESS) {
      if (cuMemMap(va, kGiB, 0, handles[0], 0) == CUDA_SUCCESS) {
        CUmemAccessDesc access{};
        access.location = prop.location;
        access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        mapped = cuMemSetAccess(va, kGiB, &access, 1) == CUDA_SUCCESS &&
                 cuMemsetD8(va, 7, kGiB) == CUDA_SUCCESS;
        cuMemUnmap(va, kGiB);
      }
      cuMemAddressFree(va, kGiB);
    }
  }
  for (CUmemGenericAllocationHandle h : handles) cuMemRelease(h);
  CUmemGenericAllocationHandle h;
  const bool back = cuMemCreate(&h, 4 * kGiB, &prop, 0) == CUDA_SUCCESS;
  if (back) cuMemRelease(h);
  const char* name = "";
  cuGetErrorName(r, &name);
  Report(mapped ? "vmm cuMemCreate (mapped+memset ok)" : "vmm cuMemCreate", got, r, name, back);
}

void Info() {
  size_t free = 0, total = 0;
  cudaMemGetInfo(&free, &total);
  size_t dtotal = 0;
  cuDeviceTotalMem(&dtotal, 0);
  std::printf(
      "{\"path\":\"info\",\"cudaMemGetInfo_total\":%zu,\"cudaMemGetInfo_free\":%zu,"
      "\"cuDeviceTotalMem\":%zu}\n",
      total, free, dtotal);
}

void Latency(int n, size_t bytes) {
  std::vector<CUdeviceptr> ptrs(n);
  std::vector<double> alloc_us(n), free_us(n);
  for (int round = 0; round < 2; ++round) {  // round 0 warms the driver's caches
    for (int i = 0; i < n; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      if (cuMemAlloc(&ptrs[i], bytes) != CUDA_SUCCESS) std::abort();
      alloc_us[i] =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    }
    for (int i = 0; i < n; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      cuMemFree(ptrs[i]);
      free_us[i] =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    }
  }
  auto stats = [](std::vector<double> v, const char* what) {
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    std::printf("\"%s_mean_us\":%.2f,\"%s_p50_us\":%.2f,\"%s_p99_us\":%.2f", what, sum / v.size(),
                what, v[v.size() / 2], what, v[v.size() * 99 / 100]);
  };
  std::printf("{\"path\":\"latency\",\"n\":%d,\"bytes\":%zu,", n, bytes);
  stats(alloc_us, "alloc");
  std::printf(",");
  stats(free_us, "free");
  std::printf("}\n");
}

}  // namespace

int main(int argc, char** argv) {
  cudaFree(nullptr);  // a context, through the runtime
  if (argc >= 2 && std::strcmp(argv[1], "latency") == 0) {
    Latency(argc >= 3 ? std::atoi(argv[2]) : 2000,
            argc >= 4 ? std::strtoull(argv[3], nullptr, 10) : (1 << 20));
    return 0;
  }
  Info();
  Runtime();
  RuntimeAsync();
  Driver();
  Vmm();
  Info();
  return 0;
}
