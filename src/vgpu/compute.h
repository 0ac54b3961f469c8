#pragma once

// The compute (SM time) limiter of libsegma-vgpu: the kernel-launch wrappers and whether
// SEGMA_VGPU_COMPUTE asks for limiting. Internal to the library; see compute.cc.

#include "vgpu/cuda_abi.h"
#include "vgpu/driver.h"

SEGMA_VGPU_EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                          unsigned bx, unsigned by, unsigned bz, unsigned shmem,
                                          CUstream stream, void** params, void** extra);
SEGMA_VGPU_EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                               unsigned bx, unsigned by, unsigned bz,
                                               unsigned shmem, CUstream stream, void** params,
                                               void** extra);
SEGMA_VGPU_EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfigPrefix* config, CUfunction f,
                                            void** params, void** extra);
SEGMA_VGPU_EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfigPrefix* config, CUfunction f,
                                                 void** params, void** extra);
SEGMA_VGPU_EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gx, unsigned gy,
                                                     unsigned gz, unsigned bx, unsigned by,
                                                     unsigned bz, unsigned shmem, CUstream stream,
                                                     void** params);
SEGMA_VGPU_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned gx, unsigned gy,
                                                          unsigned gz, unsigned bx, unsigned by,
                                                          unsigned bz, unsigned shmem,
                                                          CUstream stream, void** params);
SEGMA_VGPU_EXPORT CUresult cuGraphLaunch(CUgraphExec graph, CUstream stream);
SEGMA_VGPU_EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec graph, CUstream stream);

namespace segma::vgpu {

// True when SEGMA_VGPU_COMPUTE gives some device a share below 100 % and its bucket could be set
// up (read once, at the first call). When false the launch wrappers are not handed out through
// dlsym or cuGetProcAddress at all, and a direct call passes straight through.
bool ComputeLimited();

}  // namespace segma::vgpu
