#include "vgpu/driver.h"

#include <dlfcn.h>

#include <cstdlib>

namespace segma::vgpu {
namespace {

// Builtins rather than std::atomic, whose (out-of-line, instrumented) members would run early.
DlsymFn g_real_dlsym = nullptr;

std::atomic<void*> g_handles[2] = {nullptr, nullptr};

}  // namespace

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

void RememberHandle(Library lib, void* handle) {
  void* expected = nullptr;
  g_handles[static_cast<int>(lib)].compare_exchange_strong(expected, handle);
}

void* RealSymbol(const char* name, Library lib) {
  const DlsymFn real_dlsym = RealDlsym();
  if (real_dlsym == nullptr) return nullptr;
  if (void* f = real_dlsym(RTLD_NEXT, name)) return f;
  std::atomic<void*>& slot = g_handles[static_cast<int>(lib)];
  void* h = slot.load(std::memory_order_acquire);
  if (h == nullptr) {
    const char* path =
        std::getenv(lib == Library::kCuda ? "SEGMA_VGPU_LIBCUDA" : "SEGMA_VGPU_LIBNVML");
    if (path == nullptr || path[0] == '\0') {
      path = lib == Library::kCuda ? "libcuda.so.1" : "libnvidia-ml.so.1";
    }
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) return nullptr;
    RememberHandle(lib, h);
    h = slot.load(std::memory_order_acquire);
  }
  return real_dlsym(h, name);
}

}  // namespace segma::vgpu
