#pragma once

// SEGMA_VGPU_LIMITS: the per-device memory limits the worker gives an engine, e.g.
// "0=10737418240,GPU-5c2f...=8589934592". A key is a device ordinal as the process sees it (after
// CUDA_VISIBLE_DEVICES) or a device UUID as CUDA and NVML print it ("GPU-…", "MIG-…"); a value is
// a byte count, optionally with a K, M, G or T suffix (powers of 1024: "10G").

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace segma::vgpu {

// At most this many limits (and devices in the shared accounting).
inline constexpr int kMaxDevices = 16;

struct DeviceLimit {
  std::string key;  // "0" or "GPU-…"
  int64_t bytes = 0;
};

// Parses the variable's value. An empty value is no limit at all (an empty list). Errors (with
// the offending entry) for a missing '=', an empty key, a value that is not a positive count,
// a duplicate key, or more than kMaxDevices entries.
std::optional<std::vector<DeviceLimit>> ParseLimits(std::string_view text, std::string* error);

// The index in `limits` of the limit for the device with this ordinal and UUID ("" = unknown),
// or -1 when none applies. A UUID key wins over an ordinal key.
int FindLimit(const std::vector<DeviceLimit>& limits, int ordinal, std::string_view uuid);

// "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", the form nvidia-smi and NVML print, from the 16
// bytes cuDeviceGetUuid returns.
std::string FormatUuid(const char bytes[16]);

// SEGMA_VGPU_COMPUTE: the share of a device's SM time the worker gives an engine, e.g. "0=70,1=30".
// A key is a device ordinal as the process sees it (0 .. kMaxDevices-1), a value a whole percent
// from 1 to 100 (100: no limit on that device).
struct ComputeShare {
  int ordinal = 0;
  int percent = 100;
};

// Parses the variable's value. An empty value is no share at all (an empty list). Errors (with
// the offending entry) for a missing '=', a key that is not an ordinal below kMaxDevices, a value
// that is not a whole number from 1 to 100, or a duplicate key.
std::optional<std::vector<ComputeShare>> ParseComputeShares(std::string_view text,
                                                            std::string* error);

}  // namespace segma::vgpu
