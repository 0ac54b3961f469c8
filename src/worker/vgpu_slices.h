#pragma once

// The worker's view of the engines it holds to a VRAM slice with libsegma-vgpu (gpu_sharing
// "enforced", docs/gpu-sharing.md): which segment each engine's processes book their device memory
// in, and what that accounting says now. The library does the booking and the refusing; the
// worker only reads, for the heartbeat (/v2/gpus "slices"), its /metrics, its log and the
// instance's state message.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "types/worker.h"
#include "worker/engines/backend.h"

namespace segma::worker {

// One engine held to limits: its segment and, per GPU index, the CUDA ordinal the engine sees the
// GPU as and the limit in bytes.
struct VgpuEngine {
  int64_t instance_id = 0;  // a distributed server's engine counts for its instance
  std::string shm;          // SEGMA_VGPU_SHM
  struct Limit {
    int ordinal = 0;
    int64_t bytes = 0;
  };
  std::map<int, Limit> limits;  // GPU index → its limit
};

// The engine that `launch` starts on `gpus` (the instance's GPU indexes, in CUDA ordinal order),
// or nullopt when the launch does not preload the library (claims-only sharing, a GPU owned whole,
// no library on this worker) or its variables cannot be read.
std::optional<VgpuEngine> VgpuEngineOf(int64_t instance_id, const engines::LaunchSpec& launch,
                                       const std::vector<int>& gpus);

// What one engine's accounting says for each of its GPUs, as GpuSlices by GPU index. An engine
// whose segment does not exist yet (its processes have not loaded the library) reads as nothing
// used and no hits. Reading reclaims the bookings of the engine's processes that died, as the
// library does before it refuses an allocation.
std::map<int, types::GpuSlice> ReadSlices(const VgpuEngine& engine);

// Removes the names of an engine's libsegma-vgpu segments: its memory accounting `shm`
// (SEGMA_VGPU_SHM) and its compute buckets "<shm>-compute" (absent unless it had a compute
// share; an absent name is not an error). Processes that still map them keep their mappings.
void UnlinkVgpuSegments(const std::string& shm);

// What ReadSlices said of each engine, by engine id (an rpc-server's: minus its instance id).
using SliceReadings = std::map<int64_t, std::map<int, types::GpuSlice>>;

// Adds each engine's slices to the GPUs of `gpus` with that index.
void AddSlices(const SliceReadings& readings, std::vector<types::GpuDevice>& gpus);

// "GPU 0: 3 allocations refused at the VRAM limit of 12.0 GiB (11.8 GiB in use)"; "" when no
// slice of `slices` has a hit.
std::string LimitHitsMessage(const std::map<int, types::GpuSlice>& slices);

}  // namespace segma::worker
