#pragma once

// How libsegma-vgpu reaches the real driver libraries (libcuda, libnvidia-ml) past its own
// wrappers. Internal to the library.

#include <atomic>

#define SEGMA_VGPU_EXPORT extern "C" __attribute__((visibility("default")))
// dlsym is called from the first moments of a process on, by the sanitizer runtimes among
// others before they are initialised: that path is neither instrumented nor guarded by a
// function-local static.
#define SEGMA_VGPU_EARLY __attribute__((no_sanitize("address", "undefined")))

namespace segma::vgpu {

using DlsymFn = void* (*)(void*, const char*);

enum class Library { kCuda, kNvml };

// glibc's dlsym.
DlsymFn RealDlsym();

// SEGMA_VGPU_DEBUG=1.
bool Debug();

// The library's own `name`: from the libraries after this one in the global scope, else from the
// handle a program looked a wrapped name up on (RememberHandle), else from libcuda.so.1
// (SEGMA_VGPU_LIBCUDA overrides) or libnvidia-ml.so.1 (SEGMA_VGPU_LIBNVML overrides) opened here.
void* RealSymbol(const char* name, Library lib = Library::kCuda);

// Records `handle` as `lib`'s when that library is not in the global scope (the CUDA runtime
// dlopens libcuda RTLD_LOCAL).
void RememberHandle(Library lib, void* handle);

// A real entry point, resolved once (a missing one stays null and is retried).
template <typename Fn>
Fn Real(const char* name, std::atomic<void*>& slot, Library lib) {
  void* f = slot.load(std::memory_order_acquire);
  if (f == nullptr) {
    f = RealSymbol(name, lib);
    slot.store(f, std::memory_order_release);
  }
  return reinterpret_cast<Fn>(f);
}

#define SEGMA_REAL_IN(lib, name, ...)                                  \
  ([]() {                                                              \
    static std::atomic<void*> slot{nullptr};                           \
    return ::segma::vgpu::Real<int (*)(__VA_ARGS__)>(name, slot, lib); \
  }())
#define SEGMA_REAL(name, ...) SEGMA_REAL_IN(::segma::vgpu::Library::kCuda, name, __VA_ARGS__)

}  // namespace segma::vgpu
