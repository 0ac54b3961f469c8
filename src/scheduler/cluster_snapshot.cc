#include "scheduler/cluster_snapshot.h"

#include <algorithm>
#include <climits>
#include <set>

#include <fmt/format.h>

#include "types/engine_choice.h"

namespace segma::scheduler {

Status ClusterSnapshot::AddWorker(WorkerInfo worker) {
  if (worker_by_id_.count(worker.id) != 0) {
    return AlreadyExistsError(fmt::format("worker {} already in the snapshot", worker.id));
  }
  if (worker_by_name_.count(worker.name) != 0) {
    return AlreadyExistsError(fmt::format("worker name '{}' already in the snapshot", worker.name));
  }
  std::set<int> indexes;
  for (const types::GpuDevice& g : worker.gpus) {
    if (!indexes.insert(g.index).second) {
      return InvalidArgumentError(
          fmt::format("worker '{}' reports GPU index {} twice", worker.name, g.index));
    }
  }
  const int w = static_cast<int>(workers_.size());
  Row row;
  row.unit_begin = unit_count();
  row.ram_free = worker.ram_total - worker.ram_used_external;
  for (size_t pos = 0; pos < worker.gpus.size(); ++pos) {
    const types::GpuDevice& g = worker.gpus[pos];
    if (!g.links.empty()) row.has_topology = true;
    // A GPU split into MIG devices is not usable whole; its devices are the units.
    if (g.mig_enabled && !g.parent_index) continue;
    auto [it, inserted] = gpu_name_ids_.emplace(g.name, static_cast<int>(gpu_names_.size()));
    if (inserted) gpu_names_.push_back(g.name);
    unit_total_.push_back(g.memory_total);
    unit_free_.push_back(g.memory_total - g.memory_used_external);
    unit_instances_.push_back(0);
    unit_compute_.push_back(0);
    unit_worker_.push_back(w);
    unit_gpu_pos_.push_back(static_cast<int>(pos));
    unit_index_.push_back(g.index);
    unit_name_id_.push_back(it->second);
    unit_cc10_.push_back(types::ComputeCapability10(g.compute_capability));
    unit_is_mig_.push_back(g.parent_index.has_value() ? 1 : 0);
    unit_vendor_.push_back(g.vendor == "nvidia" ? GpuVendor::kNvidia
                           : g.vendor == "amd"  ? GpuVendor::kAmd
                                                : GpuVendor::kOther);
  }
  row.unit_end = unit_count();
  row.min_cc10 = INT_MAX;
  for (int u = row.unit_begin; u < row.unit_end; ++u) {
    row.vendor_mask |= 1u << static_cast<unsigned>(unit_vendor_[u]);
    if (unit_vendor_[u] == GpuVendor::kNvidia && unit_cc10_[u] >= 0) {
      row.min_cc10 = std::min(row.min_cc10, unit_cc10_[u]);
    }
    uint64_t mask = 0;
    const types::GpuDevice& d = worker.gpus[unit_gpu_pos_[u]];
    for (int v = row.unit_begin; v < row.unit_end && v - row.unit_begin < 64; ++v) {
      auto it = d.links.find(unit_index_[v]);
      if (v != u && it != d.links.end() && it->second == "nvlink") {
        mask |= uint64_t{1} << (v - row.unit_begin);
      }
    }
    unit_nvlink_mask_.push_back(mask);
  }
  worker_by_id_.emplace(worker.id, w);
  worker_by_name_.emplace(worker.name, w);
  workers_.push_back(std::move(worker));
  rows_.push_back(row);
  RecomputeMaxFree(w);
  return OkStatus();
}

int ClusterSnapshot::FindWorker(int64_t worker_id) const {
  auto it = worker_by_id_.find(worker_id);
  return it == worker_by_id_.end() ? -1 : it->second;
}

int ClusterSnapshot::FindWorkerByName(std::string_view name) const {
  auto it = worker_by_name_.find(std::string(name));
  return it == worker_by_name_.end() ? -1 : it->second;
}

int ClusterSnapshot::FindUnit(int w, int gpu_index) const {
  for (int u = rows_[w].unit_begin; u < rows_[w].unit_end; ++u) {
    if (unit_index_[u] == gpu_index) return u;
  }
  return -1;
}

void ClusterSnapshot::RecomputeMaxFree(int w) {
  int64_t best = INT64_MIN;
  for (int u = rows_[w].unit_begin; u < rows_[w].unit_end; ++u)
    best = std::max(best, unit_free_[u]);
  rows_[w].max_unit_free = best;
}

const types::GpuDevice& ClusterSnapshot::unit_device(int u) const {
  return workers_[unit_worker_[u]].gpus[unit_gpu_pos_[u]];
}

bool ClusterSnapshot::NvLinked(int u, int v) const {
  const types::GpuDevice& d = unit_device(u);
  auto it = d.links.find(unit_index_[v]);
  return it != d.links.end() && it->second == "nvlink";
}

Status ClusterSnapshot::AddInstance(const PlacedInstance& placed) {
  const int w = FindWorker(placed.worker_id);
  if (w < 0) return NotFoundError(fmt::format("worker {} not in the snapshot", placed.worker_id));
  std::vector<int> units;
  for (const auto& [index, bytes] : placed.vram) {
    int u = FindUnit(w, index);
    if (u < 0) {
      return NotFoundError(
          fmt::format("GPU {} of worker '{}' is not a schedulable unit", index, workers_[w].name));
    }
    units.push_back(u);
  }
  InstanceRecord& rec = instances_[placed.instance_id];
  for (const InstanceClaim& c : rec.claims) {
    if (c.worker == w) {
      return AlreadyExistsError(fmt::format("instance {} already has claims on worker '{}'",
                                            placed.instance_id, workers_[w].name));
    }
  }
  rec.model_id = placed.model_id;
  std::vector<ModelRef>& refs = model_refs_[placed.model_id];
  rec.claims.push_back({w, -1, placed.ram, 0});
  refs.push_back({placed.instance_id, w, -1});
  rows_[w].ram_free -= placed.ram;
  rows_[w].instances += 1;
  size_t i = 0;
  for (const auto& [index, bytes] : placed.vram) {
    const int u = units[i++];
    rec.claims.push_back({w, u, bytes, placed.compute_percent});
    refs.push_back({placed.instance_id, w, u});
    unit_free_[u] -= bytes;
    unit_instances_[u] += 1;
    unit_compute_[u] += placed.compute_percent;
    CountSlice(bytes, 1);
  }
  RecomputeMaxFree(w);
  return OkStatus();
}

Status ClusterSnapshot::AddInstance(const types::ModelInstance& instance) {
  if (instance.worker_id == 0) return OkStatus();
  PlacedInstance main{instance.id,         instance.model_id,  instance.worker_id,
                      instance.claim.vram, instance.claim.ram, instance.claim.compute_percent};
  RETURN_IF_ERROR(AddInstance(main));
  for (const types::DistributedServer& d : instance.distributed_servers) {
    // A distributed server's share is its instance's.
    RETURN_IF_ERROR(
        AddInstance(PlacedInstance{instance.id, instance.model_id, d.worker_id, d.claim.vram,
                                   d.claim.ram, instance.claim.compute_percent}));
  }
  return OkStatus();
}

Status ClusterSnapshot::RemoveInstance(int64_t instance_id) {
  auto it = instances_.find(instance_id);
  if (it == instances_.end()) {
    return NotFoundError(fmt::format("instance {} has no claims in the snapshot", instance_id));
  }
  std::set<int> touched;
  for (const InstanceClaim& c : it->second.claims) {
    touched.insert(c.worker);
    if (c.unit < 0) {
      rows_[c.worker].ram_free += c.bytes;
      rows_[c.worker].instances -= 1;
    } else {
      unit_free_[c.unit] += c.bytes;
      unit_instances_[c.unit] -= 1;
      unit_compute_[c.unit] -= c.compute_percent;
      CountSlice(c.bytes, -1);
    }
  }
  auto refs = model_refs_.find(it->second.model_id);
  if (refs != model_refs_.end()) {
    std::erase_if(refs->second, [&](const ModelRef& r) { return r.instance_id == instance_id; });
    if (refs->second.empty()) model_refs_.erase(refs);
  }
  instances_.erase(it);
  for (int w : touched) RecomputeMaxFree(w);
  return OkStatus();
}

int ClusterSnapshot::SliceBucket(int64_t bytes) {
  constexpr int64_t kBase = int64_t{256} << 20;
  constexpr int kSubBits = 7;  // 2^7 = kSliceBucketsPerDoubling
  static_assert(1 << kSubBits == kSliceBucketsPerDoubling);
  if (bytes < kBase) return 0;
  // The position of the top bit, then the next seven bits.
  const uint64_t q =
      static_cast<uint64_t>(bytes) / static_cast<uint64_t>(kBase >> kSubBits);  // >= 128
  const int top = 63 - __builtin_clzll(q);                                      // >= 7
  const int sub = static_cast<int>((q >> (top - kSubBits)) & (kSliceBucketsPerDoubling - 1));
  return std::min(kSliceBuckets - 1, 1 + (top - kSubBits) * kSliceBucketsPerDoubling + sub);
}

void ClusterSnapshot::CountSlice(int64_t bytes, int delta) {
  const int b = SliceBucket(bytes);
  for (int i = 0; i <= b; ++i) slice_tail_[i] += delta;
}

void ClusterSnapshot::AddModelFiles(std::string_view source_key, int64_t worker_id) {
  const int w = FindWorker(worker_id);
  if (w < 0) return;
  std::vector<int>& v = files_[std::string(source_key)];
  if (std::find(v.begin(), v.end(), w) == v.end()) v.push_back(w);
}

const std::vector<ClusterSnapshot::ModelRef>* ClusterSnapshot::model_refs(int64_t model_id) const {
  auto it = model_refs_.find(model_id);
  return it == model_refs_.end() ? nullptr : &it->second;
}

const std::vector<int>* ClusterSnapshot::workers_with_files(std::string_view source_key) const {
  auto it = files_.find(std::string(source_key));
  return it == files_.end() ? nullptr : &it->second;
}

}  // namespace segma::scheduler
