#pragma once

// The limits of this process and its bookings: the allocations it made, to give back at their
// free. Internal to libsegma-vgpu.

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "vgpu/cuda_abi.h"
#include "vgpu/driver.h"
#include "vgpu/limits.h"
#include "vgpu/shared_accounting.h"

namespace segma::vgpu {

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

  bool HasLimits() const { return !broken_ && !limits_.empty(); }
  // The limit index keyed by `uuid` ("GPU-…" or "MIG-…"), or kNoLimit.
  int DeviceForUuid(const char* uuid) const {
    const int d = broken_ ? -1 : FindLimit(limits_, -1, uuid);
    return d < 0 ? kNoLimit : d;
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

// The NVML wrapper for `name` (nvml.cc), or nullptr.
void* NvmlWrapper(const char* name);

}  // namespace segma::vgpu
