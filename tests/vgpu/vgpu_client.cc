// A CUDA "program" for the libsegma-vgpu tests: linked against the fake libcuda (like a program
// using the driver API), it runs the operations named on its command line and prints one line per
// operation, "<op> <CUresult> [values]". The vgpu tests run it with LD_PRELOAD=libsegma-vgpu.so.
// An operation is "[via:]name [args]" as separate arguments; via picks how the entry point is
// reached:
//   (none)  the linked symbol, e.g. cuMemAlloc_v2 (bound to the preloaded wrapper)
//   gpa:    cuGetProcAddress_v2 at CUDA 12.0, itself found as the CUDA runtime finds it:
//           dlopen(FAKE_CUDA_PATH) then dlsym(handle, "cuGetProcAddress_v2")
//   gpa1:   cuGetProcAddress (v1) at CUDA 11.3, found the same way
// Operations (sizes in bytes, or with a K/M/G suffix; `i` is the index of an earlier allocation):
//   alloc N | managed N | pitch W H | async N | async_ptsz N | pool N | pool_ptsz N | create N
//   free i | free_async i | release i | info | totalmem D | device D | used D
//   is_wrapped NAME VERSION FLAGS   "<rc> 1" when cuGetProcAddress_v2 answers with a function
//                                   outside the fake driver (a wrapper), "<rc> 0" otherwise
//   nvml D | nvml_v2 D   the fake NVML's (FAKE_NVML_PATH) nvmlDeviceGetMemoryInfo(_v2) of GPU D,
//                        looked up with dlsym as pynvml does: "<rc> total free used"
//   is_wrapped1 NAME VERSION FLAGS  the same through cuGetProcAddress (v1)
//   launch N | launch_ptsz N | launch_ex N | launch_ex_ptsz N | coop N | coop_ptsz N | graph N |
//   graph_ptsz N    N kernel launches (64 blocks) or graph launches through that entry point:
//                   "<rc of the last> <the fake driver's launches so far>"
//   spin OP         launches through OP (one of the above) until stdin closes:
//                   "spin <rc of the last> <launches made> <the fake driver's launches so far>"
//   launches        "launches 0 <the fake driver's launches so far>"
//   hold    prints "hold 0" and waits until stdin closes
#include <dlfcn.h>
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "vgpu/cuda_abi.h"

extern "C" {
CUresult cuMemAlloc_v2(CUdeviceptr*, size_t);
CUresult cuMemAllocManaged(CUdeviceptr*, size_t, unsigned int);
CUresult cuMemAllocPitch_v2(CUdeviceptr*, size_t*, size_t, size_t, unsigned int);
CUresult cuMemAllocAsync(CUdeviceptr*, size_t, CUstream);
CUresult cuMemAllocAsync_ptsz(CUdeviceptr*, size_t, CUstream);
CUresult cuMemAllocFromPoolAsync(CUdeviceptr*, size_t, CUmemoryPool, CUstream);
CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr*, size_t, CUmemoryPool, CUstream);
CUresult cuMemFree_v2(CUdeviceptr);
CUresult cuMemFreeAsync(CUdeviceptr, CUstream);
CUresult cuMemCreate(CUmemGenericAllocationHandle*, size_t, const CUmemAllocationPropPrefix*,
                     unsigned long long);
CUresult cuMemRelease(CUmemGenericAllocationHandle);
CUresult cuMemGetInfo_v2(size_t*, size_t*);
CUresult cuDeviceTotalMem_v2(size_t*, CUdevice);
CUresult cuLaunchKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                        unsigned, CUstream, void**, void**);
CUresult cuLaunchKernel_ptsz(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, CUstream, void**, void**);
CUresult cuLaunchKernelEx(const CUlaunchConfigPrefix*, CUfunction, void**, void**);
CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfigPrefix*, CUfunction, void**, void**);
CUresult cuLaunchCooperativeKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                                   unsigned, unsigned, CUstream, void**);
CUresult cuLaunchCooperativeKernel_ptsz(CUfunction, unsigned, unsigned, unsigned, unsigned,
                                        unsigned, unsigned, unsigned, CUstream, void**);
CUresult cuGraphLaunch(CUgraphExec, CUstream);
CUresult cuGraphLaunch_ptsz(CUgraphExec, CUstream);
void fake_cuda_set_device(int);
long long fake_cuda_used(int);
long long fake_cuda_launches();
}

namespace {

using namespace segma::vgpu;

struct Api {
  decltype(&cuMemAlloc_v2) alloc = &cuMemAlloc_v2;
  decltype(&cuMemAllocManaged) managed = &cuMemAllocManaged;
  decltype(&cuMemAllocPitch_v2) pitch = &cuMemAllocPitch_v2;
  decltype(&cuMemAllocAsync) async = &cuMemAllocAsync;
  decltype(&cuMemAllocAsync_ptsz) async_ptsz = &cuMemAllocAsync_ptsz;
  decltype(&cuMemAllocFromPoolAsync) pool = &cuMemAllocFromPoolAsync;
  decltype(&cuMemAllocFromPoolAsync_ptsz) pool_ptsz = &cuMemAllocFromPoolAsync_ptsz;
  decltype(&cuMemFree_v2) free = &cuMemFree_v2;
  decltype(&cuMemFreeAsync) free_async = &cuMemFreeAsync;
  decltype(&cuMemCreate) create = &cuMemCreate;
  decltype(&cuMemRelease) release = &cuMemRelease;
  decltype(&cuMemGetInfo_v2) info = &cuMemGetInfo_v2;
  decltype(&cuDeviceTotalMem_v2) totalmem = &cuDeviceTotalMem_v2;
  decltype(&cuLaunchKernel) launch = &cuLaunchKernel;
  decltype(&cuLaunchKernel_ptsz) launch_ptsz = &cuLaunchKernel_ptsz;
  decltype(&cuLaunchKernelEx) launch_ex = &cuLaunchKernelEx;
  decltype(&cuLaunchKernelEx_ptsz) launch_ex_ptsz = &cuLaunchKernelEx_ptsz;
  decltype(&cuLaunchCooperativeKernel) coop = &cuLaunchCooperativeKernel;
  decltype(&cuLaunchCooperativeKernel_ptsz) coop_ptsz = &cuLaunchCooperativeKernel_ptsz;
  decltype(&cuGraphLaunch) graph = &cuGraphLaunch;
  decltype(&cuGraphLaunch_ptsz) graph_ptsz = &cuGraphLaunch_ptsz;
};

void* Driver() {
  static void* h = dlopen(FAKE_CUDA_PATH, RTLD_NOW | RTLD_LOCAL);
  return h;
}

// cuGetProcAddress(_v2) as the runtime finds it, wrapped as (name, version, flags) → pointer.
void* Resolve(bool v1, const char* name, int version, cuuint64_t flags) {
  void* pfn = nullptr;
  if (v1) {
    auto gpa = reinterpret_cast<PFN_cuGetProcAddress_v1>(dlsym(Driver(), "cuGetProcAddress"));
    if (gpa == nullptr || gpa(name, &pfn, version, flags) != kCudaSuccess) return nullptr;
  } else {
    auto gpa = reinterpret_cast<PFN_cuGetProcAddress_v2>(dlsym(Driver(), "cuGetProcAddress_v2"));
    CUdriverProcAddressQueryResult status = -1;
    if (gpa == nullptr || gpa(name, &pfn, version, flags, &status) != kCudaSuccess) return nullptr;
  }
  return pfn;
}

template <typename Fn>
void Set(Fn& fn, bool v1, const char* name, cuuint64_t flags = 0, int version = 0) {
  fn = reinterpret_cast<Fn>(Resolve(v1, name, version != 0 ? version : v1 ? 11030 : 12000, flags));
}

Api ThroughGetProcAddress(bool v1) {
  Api a;
  Set(a.alloc, v1, "cuMemAlloc");
  Set(a.managed, v1, "cuMemAllocManaged");
  Set(a.pitch, v1, "cuMemAllocPitch");
  Set(a.async, v1, "cuMemAllocAsync");
  Set(a.async_ptsz, v1, "cuMemAllocAsync", kGetProcAddressPerThreadDefaultStream);
  Set(a.pool, v1, "cuMemAllocFromPoolAsync");
  Set(a.pool_ptsz, v1, "cuMemAllocFromPoolAsync", kGetProcAddressPerThreadDefaultStream);
  Set(a.free, v1, "cuMemFree");
  Set(a.free_async, v1, "cuMemFreeAsync");
  Set(a.create, v1, "cuMemCreate");
  Set(a.release, v1, "cuMemRelease");
  Set(a.info, v1, "cuMemGetInfo");
  Set(a.totalmem, v1, "cuDeviceTotalMem");
  // cuLaunchKernelEx is from CUDA 11.8: asked for at 12.0 through either version.
  constexpr cuuint64_t kPtsz = kGetProcAddressPerThreadDefaultStream;
  Set(a.launch, v1, "cuLaunchKernel", 0, 12000);
  Set(a.launch_ptsz, v1, "cuLaunchKernel", kPtsz, 12000);
  Set(a.launch_ex, v1, "cuLaunchKernelEx", 0, 12000);
  Set(a.launch_ex_ptsz, v1, "cuLaunchKernelEx", kPtsz, 12000);
  Set(a.coop, v1, "cuLaunchCooperativeKernel", 0, 12000);
  Set(a.coop_ptsz, v1, "cuLaunchCooperativeKernel", kPtsz, 12000);
  Set(a.graph, v1, "cuGraphLaunch", 0, 12000);
  Set(a.graph_ptsz, v1, "cuGraphLaunch", kPtsz, 12000);
  return a;
}

size_t Bytes(const char* s) {
  char* end = nullptr;
  size_t n = std::strtoull(s, &end, 10);
  switch (*end) {
    case 'K':
      return n << 10;
    case 'M':
      return n << 20;
    case 'G':
      return n << 30;
    default:
      return n;
  }
}

// One launch through the entry point `op` names; -1 for an unknown name.
CUresult Launch(const Api& api, const std::string& op) {
  constexpr unsigned kGrid = 64;
  const CUlaunchConfigPrefix config{kGrid, 1, 1};
  if (op == "launch")
    return api.launch(nullptr, kGrid, 1, 1, 128, 1, 1, 0, nullptr, nullptr, nullptr);
  if (op == "launch_ptsz") {
    return api.launch_ptsz(nullptr, kGrid, 1, 1, 128, 1, 1, 0, nullptr, nullptr, nullptr);
  }
  if (op == "launch_ex") return api.launch_ex(&config, nullptr, nullptr, nullptr);
  if (op == "launch_ex_ptsz") return api.launch_ex_ptsz(&config, nullptr, nullptr, nullptr);
  if (op == "coop") return api.coop(nullptr, kGrid, 1, 1, 128, 1, 1, 0, nullptr, nullptr);
  if (op == "coop_ptsz") return api.coop_ptsz(nullptr, kGrid, 1, 1, 128, 1, 1, 0, nullptr, nullptr);
  if (op == "graph") return api.graph(nullptr, nullptr);
  if (op == "graph_ptsz") return api.graph_ptsz(nullptr, nullptr);
  return -1;
}

bool StdinOpen() {
  pollfd p{0, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;  // closed: readable (EOF)
}

}  // namespace

int main(int argc, char** argv) {
  const Api direct;
  const Api gpa = ThroughGetProcAddress(false);
  const Api gpa1 = ThroughGetProcAddress(true);
  std::vector<unsigned long long> allocs;  // pointers and handles, by index
  auto record = [&](const std::string& op, CUresult r, unsigned long long v) {
    if (r == kCudaSuccess) allocs.push_back(v);
    std::printf("%s %d%s\n", op.c_str(), r,
                r == kCudaSuccess ? (" " + std::to_string(allocs.size() - 1)).c_str() : "");
  };
  auto arg = [&](int& i) -> const char* {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "missing argument after %s\n", argv[i]);
      std::exit(2);
    }
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    std::string op = argv[i];
    const Api* api = &direct;
    if (op.starts_with("gpa:")) api = &gpa, op = op.substr(4);
    if (op.starts_with("gpa1:")) api = &gpa1, op = op.substr(5);
    const std::string label = argv[i];
    CUdeviceptr p = 0;
    if (op == "alloc") {
      CUresult r = api->alloc(&p, Bytes(arg(i)));
      record(label, r, p);
    } else if (op == "managed") {
      CUresult r = api->managed(&p, Bytes(arg(i)), 1);
      record(label, r, p);
    } else if (op == "pitch") {
      size_t w = Bytes(arg(i)), h = Bytes(arg(i)), pitch = 0;
      CUresult r = api->pitch(&p, &pitch, w, h, 4);
      record(label, r, p);
    } else if (op == "async" || op == "async_ptsz") {
      CUresult r = (op == "async" ? api->async : api->async_ptsz)(&p, Bytes(arg(i)), nullptr);
      record(label, r, p);
    } else if (op == "pool" || op == "pool_ptsz") {
      CUresult r = (op == "pool" ? api->pool : api->pool_ptsz)(&p, Bytes(arg(i)), nullptr, nullptr);
      record(label, r, p);
    } else if (op == "create") {
      CUmemAllocationPropPrefix prop{};
      prop.location = {kMemLocationTypeDevice, 0};
      CUmemGenericAllocationHandle h = 0;
      CUresult r = api->create(&h, Bytes(arg(i)), &prop, 0);
      record(label, r, h);
    } else if (op == "free" || op == "free_async" || op == "release") {
      const unsigned long long v = allocs.at(std::atoi(arg(i)));
      CUresult r = op == "free"         ? api->free(v)
                   : op == "free_async" ? api->free_async(v, nullptr)
                                        : api->release(v);
      std::printf("%s %d\n", label.c_str(), r);
    } else if (op == "info") {
      size_t free = 0, total = 0;
      CUresult r = api->info(&free, &total);
      std::printf("%s %d %zu %zu\n", label.c_str(), r, free, total);
    } else if (op == "totalmem") {
      size_t total = 0;
      CUresult r = api->totalmem(&total, std::atoi(arg(i)));
      std::printf("%s %d %zu\n", label.c_str(), r, total);
    } else if (op == "device") {
      fake_cuda_set_device(std::atoi(arg(i)));
      std::printf("%s 0\n", label.c_str());
    } else if (op == "used") {
      std::printf("%s 0 %lld\n", label.c_str(), fake_cuda_used(std::atoi(arg(i))));
    } else if (op == "is_wrapped") {
      const char* name = arg(i);
      const int version = std::atoi(arg(i));
      const cuuint64_t flags = std::strtoull(arg(i), nullptr, 10);
      void* got = Resolve(false, name, version, flags);
      // Wrapped: the answer lies outside the fake driver (in the preloaded library).
      Dl_info info{};
      const bool in_driver = got != nullptr && dladdr(got, &info) != 0 &&
                             std::string(info.dli_fname).find("fake_cuda") != std::string::npos;
      std::printf("%s %d %d\n", label.c_str(), got != nullptr ? 0 : 500, in_driver ? 0 : 1);
    } else if (op == "nvml" || op == "nvml_v2") {
      void* h = dlopen(FAKE_NVML_PATH, RTLD_NOW | RTLD_LOCAL);
      auto init = reinterpret_cast<int (*)()>(dlsym(h, "nvmlInit_v2"));
      auto handle =
          reinterpret_cast<int (*)(unsigned, void**)>(dlsym(h, "nvmlDeviceGetHandleByIndex_v2"));
      void* dev = nullptr;
      if (init == nullptr || init() != 0 || handle(std::atoi(arg(i)), &dev) != 0) {
        std::printf("%s 999\n", label.c_str());
      } else if (op == "nvml") {
        unsigned long long m[3] = {};  // total, free, used
        auto info = reinterpret_cast<int (*)(void*, unsigned long long*)>(
            dlsym(h, "nvmlDeviceGetMemoryInfo"));
        const int r = info(dev, m);
        std::printf("%s %d %llu %llu %llu\n", label.c_str(), r, m[0], m[1], m[2]);
      } else {
        struct {
          unsigned version;
          unsigned long long total, reserved, free, used;
        } m{0x02000028, 0, 0, 0, 0};
        auto info = reinterpret_cast<int (*)(void*, void*)>(dlsym(h, "nvmlDeviceGetMemoryInfo_v2"));
        const int r = info(dev, &m);
        std::printf("%s %d %llu %llu %llu\n", label.c_str(), r, m.total, m.free, m.used);
      }
    } else if (op == "is_wrapped1") {
      const char* name = arg(i);
      const int version = std::atoi(arg(i));
      const cuuint64_t flags = std::strtoull(arg(i), nullptr, 10);
      void* got = Resolve(true, name, version, flags);
      Dl_info info{};
      const bool in_driver = got != nullptr && dladdr(got, &info) != 0 &&
                             std::string(info.dli_fname).find("fake_cuda") != std::string::npos;
      std::printf("%s %d %d\n", label.c_str(), got != nullptr ? 0 : 500, in_driver ? 0 : 1);
    } else if ((op.starts_with("launch") && op != "launches") || op.starts_with("coop") ||
               op.starts_with("graph")) {
      const long n = std::atol(arg(i));
      CUresult r = 0;
      for (long k = 0; k < n; ++k) r = Launch(*api, op);
      std::printf("%s %d %lld\n", label.c_str(), r, fake_cuda_launches());
    } else if (op == "spin") {
      std::string what = arg(i);
      const Api* via = &direct;
      if (what.starts_with("gpa:")) via = &gpa, what = what.substr(4);
      if (what.starts_with("gpa1:")) via = &gpa1, what = what.substr(5);
      CUresult r = 0;
      long long n = 0;
      while (StdinOpen()) {
        r = Launch(*via, what);
        ++n;
      }
      std::printf("%s %d %lld %lld\n", label.c_str(), r, n, fake_cuda_launches());
    } else if (op == "launches") {
      std::printf("%s 0 %lld\n", label.c_str(), fake_cuda_launches());
    } else if (op == "hold") {
      std::printf("hold 0\n");
      std::fflush(stdout);
      char c;
      while (read(0, &c, 1) > 0) {
      }
    } else {
      std::fprintf(stderr, "unknown operation %s\n", argv[i]);
      return 2;
    }
    std::fflush(stdout);
  }
  return 0;
}
