#pragma once

// The few CUDA driver-API types, codes and signatures libsegma-vgpu and the fake libcuda need,
// declared here so that neither needs the CUDA SDK. They follow cuda.h (CUDA 12/13) exactly: the
// layouts are the driver's ABI. Only the 64-bit ("_v2") entry points are covered; the unversioned
// 32-bit ones (cuMemAlloc, cuMemFree, ...) are unused since CUDA 3.2.

#include <cstddef>
#include <cstdint>

extern "C" {

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUmemGenericAllocationHandle = unsigned long long;
using cuuint64_t = uint64_t;
using CUstream = struct CUstream_st*;
using CUmemoryPool = struct CUmemPoolHandle_st*;
using CUcontext = struct CUctx_st*;
using CUfunction = struct CUfunc_st*;
using CUgraphExec = struct CUgraphExec_st*;

struct CUuuid {
  char bytes[16];
};

// The prefix of CUmemAllocationProp that cuMemCreate's accounting reads (type, requested handle
// types, location). The rest of the struct is never touched.
struct CUmemLocation {
  int type;  // CU_MEM_LOCATION_TYPE_DEVICE = 1
  int id;    // the device ordinal for a device location
};
struct CUmemAllocationPropPrefix {
  int type;
  int requested_handle_types;
  CUmemLocation location;
};

// The prefix of CUlaunchConfig (cuLaunchKernelEx) that the compute limiter reads: the grid.
struct CUlaunchConfigPrefix {
  unsigned int grid_dim_x, grid_dim_y, grid_dim_z;
};

// CUdriverProcAddressQueryResult, the last argument of cuGetProcAddress_v2.
using CUdriverProcAddressQueryResult = int;

using PFN_cuGetProcAddress_v1 = CUresult (*)(const char*, void**, int, cuuint64_t);
using PFN_cuGetProcAddress_v2 = CUresult (*)(const char*, void**, int, cuuint64_t,
                                             CUdriverProcAddressQueryResult*);

}  // extern "C"

namespace segma::vgpu {

inline constexpr CUresult kCudaSuccess = 0;
inline constexpr CUresult kCudaErrorInvalidValue = 1;
inline constexpr CUresult kCudaErrorOutOfMemory = 2;
inline constexpr CUresult kCudaErrorNotInitialized = 3;
inline constexpr CUresult kCudaErrorInvalidContext = 201;
inline constexpr CUresult kCudaErrorNotFound = 500;

inline constexpr int kMemLocationTypeDevice = 1;

// cuGetProcAddress flags.
inline constexpr cuuint64_t kGetProcAddressDefault = 0;
inline constexpr cuuint64_t kGetProcAddressLegacyStream = 1;
inline constexpr cuuint64_t kGetProcAddressPerThreadDefaultStream = 2;

// CUdriverProcAddressQueryResult values.
inline constexpr int kGetProcAddressSuccess = 0;
inline constexpr int kGetProcAddressSymbolNotFound = 1;
inline constexpr int kGetProcAddressVersionNotSufficient = 2;

}  // namespace segma::vgpu
