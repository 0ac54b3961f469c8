#include "worker/vgpu_slices.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include <fmt/format.h>
#include <sys/mman.h>

#include "vgpu/limits.h"
#include "vgpu/shared_accounting.h"

namespace segma::worker {
namespace {

constexpr double kGiB = 1024.0 * 1024 * 1024;

}  // namespace

std::optional<VgpuEngine> VgpuEngineOf(int64_t instance_id, const engines::LaunchSpec& launch,
                                       const std::vector<int>& gpus) {
  auto shm = launch.env.find("SEGMA_VGPU_SHM");
  auto text = launch.env.find("SEGMA_VGPU_LIMITS");
  if (shm == launch.env.end() || text == launch.env.end()) return std::nullopt;
  std::string error;
  std::optional<std::vector<vgpu::DeviceLimit>> parsed = vgpu::ParseLimits(text->second, &error);
  if (!parsed) return std::nullopt;
  VgpuEngine engine;
  engine.instance_id = instance_id;
  engine.shm = shm->second;
  for (const vgpu::DeviceLimit& l : *parsed) {
    // The worker writes ordinal keys (engines::RenderLaunch); a UUID key has no ordinal to read.
    const bool digits = !l.key.empty() && std::all_of(l.key.begin(), l.key.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c)) != 0;
    });
    if (!digits || l.key.size() > 4) continue;
    const auto ordinal = static_cast<size_t>(std::strtol(l.key.c_str(), nullptr, 10));
    if (ordinal >= gpus.size()) continue;
    engine.limits[gpus[ordinal]] = {static_cast<int>(ordinal), l.bytes};
  }
  if (engine.limits.empty()) return std::nullopt;
  return engine;
}

std::map<int, types::GpuSlice> ReadSlices(const VgpuEngine& engine) {
  std::map<int, types::GpuSlice> out;
  std::string error;
  std::unique_ptr<vgpu::SharedAccounting> accounting =
      vgpu::SharedAccounting::OpenExisting(engine.shm, &error);
  if (accounting) accounting->ReclaimDead();
  for (const auto& [gpu, limit] : engine.limits) {
    types::GpuSlice& s = out[gpu];
    s.instance_id = engine.instance_id;
    s.memory_limit = limit.bytes;
    if (accounting) {
      s.memory_used = accounting->Used(limit.ordinal);
      s.limit_hits = accounting->LimitHits(limit.ordinal);
    }
  }
  return out;
}

void AddSlices(const SliceReadings& readings, std::vector<types::GpuDevice>& gpus) {
  for (const auto& [engine, slices] : readings) {
    for (const auto& [index, slice] : slices) {
      auto g = std::find_if(gpus.begin(), gpus.end(), [index = index](const types::GpuDevice& d) {
        return d.index == index;
      });
      if (g != gpus.end()) g->slices.push_back(slice);
    }
  }
}

std::string LimitHitsMessage(const std::map<int, types::GpuSlice>& slices) {
  std::string out;
  for (const auto& [gpu, s] : slices) {
    if (s.limit_hits <= 0) continue;
    if (!out.empty()) out += "; ";
    out += fmt::format(
        "GPU {}: {} allocation{} refused at the VRAM limit of {:.1f} GiB ({:.1f} GiB "
        "in use)",
        gpu, s.limit_hits, s.limit_hits == 1 ? "" : "s", s.memory_limit / kGiB,
        s.memory_used / kGiB);
  }
  return out;
}

void UnlinkVgpuSegments(const std::string& shm) {
  ::shm_unlink(shm.c_str());
  // The library's compute buckets (src/vgpu/compute.cc: "<SEGMA_VGPU_SHM>-compute").
  ::shm_unlink((shm + "-compute").c_str());
}

}  // namespace segma::worker
