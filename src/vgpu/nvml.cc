// NVML memory queries inside a limited process report the slice: nvmlDeviceGetMemoryInfo and
// nvmlDeviceGetMemoryInfo_v2 of a device with a limit say total = the limit, used = what the
// instance booked, free = min(the driver's free, limit - booked). A device is matched by UUID:
// a limit keyed by UUID directly, a limit keyed by CUDA ordinal through cuDeviceGetUuid (so only
// once the process has initialised CUDA; before that NVML reports the whole GPU).

#include <cstring>
#include <string_view>

#include "vgpu/state.h"

namespace segma::vgpu {
namespace {

struct NvmlMemory {
  unsigned long long total, free, used;
};
struct NvmlMemoryV2 {
  unsigned int version;
  unsigned long long total, reserved, free, used;
};
constexpr int kNvmlSuccess = 0;
constexpr int kNvmlErrorUninitialized = 1;

std::string_view Digits(std::string_view uuid) {
  if (uuid.starts_with("GPU-") || uuid.starts_with("MIG-")) uuid.remove_prefix(4);
  return uuid;
}

// The limit index of the NVML device `device`, or kNoLimit.
int LimitOf(void* device) {
  State& s = State::Get();
  if (!s.HasLimits()) return kNoLimit;
  auto get_uuid = SEGMA_REAL_IN(Library::kNvml, "nvmlDeviceGetUUID", void*, char*, unsigned);
  char buf[96] = {};
  if (get_uuid == nullptr || get_uuid(device, buf, sizeof(buf)) != kNvmlSuccess) return kNoLimit;
  const int by_uuid = s.DeviceForUuid(buf);
  if (by_uuid != kNoLimit) return by_uuid;
  auto cuda_uuid = SEGMA_REAL("cuDeviceGetUuid_v2", CUuuid*, CUdevice);
  if (cuda_uuid == nullptr) return kNoLimit;
  for (int ordinal = 0; ordinal < kMaxOrdinals; ++ordinal) {
    CUuuid raw{};
    if (cuda_uuid(&raw, ordinal) != kCudaSuccess) break;  // no such device, or CUDA not initialised
    if (Digits(FormatUuid(raw.bytes)) == Digits(buf)) return s.DeviceFor(ordinal);
  }
  return kNoLimit;
}

void Clamp(int device, unsigned long long& total, unsigned long long& free,
           unsigned long long& used) {
  State& s = State::Get();
  const auto limit = static_cast<unsigned long long>(s.Limit(device));
  const auto booked = static_cast<unsigned long long>(s.Used(device));
  total = std::min(total, limit);
  used = std::min(booked, total);
  free = std::min(free, total - used);
}

}  // namespace
}  // namespace segma::vgpu

using namespace segma::vgpu;  // NOLINT: the exported C entry points below

SEGMA_VGPU_EXPORT int nvmlDeviceGetMemoryInfo(void* device, NvmlMemory* memory) {
  auto real = SEGMA_REAL_IN(Library::kNvml, "nvmlDeviceGetMemoryInfo", void*, NvmlMemory*);
  if (real == nullptr) return kNvmlErrorUninitialized;
  const int r = real(device, memory);
  if (r != kNvmlSuccess || memory == nullptr) return r;
  if (const int d = LimitOf(device); d >= 0) Clamp(d, memory->total, memory->free, memory->used);
  return r;
}

SEGMA_VGPU_EXPORT int nvmlDeviceGetMemoryInfo_v2(void* device, NvmlMemoryV2* memory) {
  auto real = SEGMA_REAL_IN(Library::kNvml, "nvmlDeviceGetMemoryInfo_v2", void*, NvmlMemoryV2*);
  if (real == nullptr) return kNvmlErrorUninitialized;
  const int r = real(device, memory);
  if (r != kNvmlSuccess || memory == nullptr) return r;
  if (const int d = LimitOf(device); d >= 0) {
    Clamp(d, memory->total, memory->free, memory->used);
    memory->reserved = std::min(memory->reserved, memory->total - memory->used);
    memory->free = std::min(memory->free, memory->total - memory->used - memory->reserved);
  }
  return r;
}

namespace segma::vgpu {

void* NvmlWrapper(const char* name) {
  if (std::strcmp(name, "nvmlDeviceGetMemoryInfo") == 0) {
    return reinterpret_cast<void*>(&nvmlDeviceGetMemoryInfo);
  }
  if (std::strcmp(name, "nvmlDeviceGetMemoryInfo_v2") == 0) {
    return reinterpret_cast<void*>(&nvmlDeviceGetMemoryInfo_v2);
  }
  return nullptr;
}

}  // namespace segma::vgpu
