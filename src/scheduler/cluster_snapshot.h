#pragma once

// The scheduler's view of the cluster: workers, their GPUs, what segma instances already claim on
// them, and where model files already are. Laid out flat (one row per schedulable GPU unit) so that
// a decision over thousands of workers touches contiguous memory, and kept up to date
// incrementally (AddInstance / RemoveInstance) rather than rebuilt per decision.

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "types/model.h"
#include "types/worker.h"

namespace segma::scheduler {

enum class GpuVendor : uint8_t { kNvidia, kAmd, kOther };

// One worker as the scheduler needs it.
struct WorkerInfo {
  int64_t id = 0;
  std::string name;
  int64_t cluster_id = 0;
  types::WorkerState state = types::WorkerState::kReady;
  std::map<std::string, std::string> labels;
  std::string arch = "x86_64";
  int cpu_count = 0;
  int64_t ram_total = 0;          // bytes
  int64_t ram_used_external = 0;  // bytes used by processes segma doesn't manage
  std::vector<types::GpuDevice> gpus;
};

// What one instance holds on one worker (a multi-worker instance has one per worker).
struct PlacedInstance {
  int64_t instance_id = 0;
  int64_t model_id = 0;
  int64_t worker_id = 0;
  std::map<int, int64_t> vram;  // GPU index → bytes
  int64_t ram = 0;
  // Share of the compute of each GPU in `vram` (types::ResourceClaim::compute_percent); 0 = none.
  int compute_percent = 0;
};

// Not thread-safe; readers may share a const snapshot.
class ClusterSnapshot {
 public:
  // Adds a worker. A GPU with MIG enabled is not schedulable itself; its MIG devices (entries
  // with parent_index) are. kAlreadyExists for a duplicate id or name, kInvalidArgument for
  // duplicate GPU indexes.
  Status AddWorker(WorkerInfo worker);

  // Records the claims of a placed instance. Several calls with the same instance_id and
  // different workers describe a multi-worker instance. kNotFound for an unknown worker or a
  // GPU index that is not a schedulable unit of it, kAlreadyExists when the instance already
  // has claims on that worker.
  Status AddInstance(const PlacedInstance& placed);
  // Adds the claims of `instance` (main worker and distributed servers); no-op when unplaced.
  Status AddInstance(const types::ModelInstance& instance);
  // Removes every claim of the instance; kNotFound if it has none.
  Status RemoveInstance(int64_t instance_id);

  // Records that `worker_id` holds the files of the source with key types::SourceKey(...).
  void AddModelFiles(std::string_view source_key, int64_t worker_id);

  int worker_count() const { return static_cast<int>(workers_.size()); }
  int unit_count() const { return static_cast<int>(unit_total_.size()); }
  const WorkerInfo& worker(int w) const { return workers_[w]; }
  // Position of a worker, or -1.
  int FindWorker(int64_t worker_id) const;
  int FindWorkerByName(std::string_view name) const;

  // Schedulable units (whole GPUs and MIG devices) of worker w: positions [begin, end).
  int units_begin(int w) const { return rows_[w].unit_begin; }
  int units_end(int w) const { return rows_[w].unit_end; }
  const types::GpuDevice& unit_device(int u) const;
  int unit_worker(int u) const { return unit_worker_[u]; }
  int unit_gpu_index(int u) const { return unit_index_[u]; }
  int64_t unit_total(int u) const { return unit_total_[u]; }
  // Total minus segma's claims minus memory used by processes segma doesn't manage; may be < 0.
  int64_t unit_free(int u) const { return unit_free_[u]; }
  int unit_instances(int u) const { return unit_instances_[u]; }
  // Sum of the compute shares (percent) claimed on unit u; instances without one count 0.
  int unit_compute(int u) const { return unit_compute_[u]; }
  bool unit_is_mig(int u) const { return unit_is_mig_[u] != 0; }
  // Whether the worker reports units u and v connected by NVLink.
  bool NvLinked(int u, int v) const;
  bool worker_has_topology(int w) const { return rows_[w].has_topology; }
  // Bit i set: unit u is NVLink-connected to unit units_begin(w) + i (first 64 units only).
  uint64_t unit_nvlink_mask(int u) const { return unit_nvlink_mask_[u]; }
  // Bit per GpuVendor present among the worker's units.
  unsigned worker_vendor_mask(int w) const { return rows_[w].vendor_mask; }
  // Smallest compute capability × 10 among the worker's NVIDIA units that report one (INT_MAX
  // when none).
  int worker_min_cc10(int w) const { return rows_[w].min_cc10; }

  int worker_instances(int w) const { return rows_[w].instances; }
  int64_t worker_ram_free(int w) const { return rows_[w].ram_free; }
  // Largest unit_free() on the worker (INT64_MIN without units).
  int64_t worker_max_unit_free(int w) const { return rows_[w].max_unit_free; }

  // Where instances of `model_id` hold claims: one entry per (instance, worker) and per unit.
  struct ModelRef {
    int64_t instance_id;
    int worker;
    int unit;  // -1 for a worker-level (RAM only) entry
  };
  const std::vector<ModelRef>* model_refs(int64_t model_id) const;
  // Workers (positions) that hold the files of `source_key`; nullptr when none.
  const std::vector<int>* workers_with_files(std::string_view source_key) const;

  // Sizes of the GPU claims in the snapshot (one "slice" per claim on one unit), for the
  // fragmentation strategy: the request sizes the cluster has seen. Bucketed on a log scale,
  // 128 buckets per doubling from 256 MiB to 1 TiB (bucket 0 holds everything smaller, the last
  // everything larger): a bucket is 0.54 % wide, 0.2 GiB at 38 GiB. slices_above(bytes) = how
  // many slices are in buckets above the one of `bytes`, i.e. (to bucket precision) larger than
  // `bytes`; slice_count() = all of them. The precision matters: FGD steers free remainders
  // towards just below the common sizes, and with 8 buckets per doubling (12 % wide) a free
  // 36.3 GiB counted as holding a 38.3 GiB request (ADR 0026).
  static constexpr int kSliceBucketsPerDoubling = 128;
  static constexpr int kSliceDoublings = 12;  // 256 MiB × 2^12 = 1 TiB
  static constexpr int kSliceBuckets = 2 + kSliceDoublings * kSliceBucketsPerDoubling;
  static int SliceBucket(int64_t bytes);
  int64_t slice_count() const { return slice_tail_[0]; }
  int64_t slices_above(int64_t bytes) const {
    const int b = SliceBucket(bytes) + 1;
    return b < kSliceBuckets ? slice_tail_[b] : 0;
  }

  // Interned GPU names; unit_name_id(u) indexes gpu_names().
  const std::vector<std::string>& gpu_names() const { return gpu_names_; }
  int unit_name_id(int u) const { return unit_name_id_[u]; }
  // Compute capability × 10 ("8.9" → 89), -1 when unknown.
  int unit_cc10(int u) const { return unit_cc10_[u]; }
  GpuVendor unit_vendor(int u) const { return unit_vendor_[u]; }

 private:
  struct Row {
    int unit_begin = 0;
    int unit_end = 0;
    int instances = 0;
    int64_t ram_free = 0;
    int64_t max_unit_free = 0;
    bool has_topology = false;
    unsigned vendor_mask = 0;
    int min_cc10 = 0;
  };
  struct InstanceClaim {
    int worker;
    int unit;  // -1: RAM only
    int64_t bytes;
    int compute_percent;
  };
  struct InstanceRecord {
    int64_t model_id = 0;
    std::vector<InstanceClaim> claims;
  };

  int FindUnit(int w, int gpu_index) const;
  void CountSlice(int64_t bytes, int delta);
  void RecomputeMaxFree(int w);

  std::vector<WorkerInfo> workers_;
  std::vector<Row> rows_;
  // Units, structure of arrays: the hot loop reads total/free/instances only.
  std::vector<int64_t> unit_total_;
  std::vector<int64_t> unit_free_;
  std::vector<int> unit_instances_;
  std::vector<int> unit_compute_;
  std::vector<int> unit_worker_;
  std::vector<int> unit_gpu_pos_;  // position in WorkerInfo::gpus
  std::vector<int> unit_index_;
  std::vector<int> unit_name_id_;
  std::vector<int> unit_cc10_;
  std::vector<char> unit_is_mig_;
  std::vector<GpuVendor> unit_vendor_;
  std::vector<uint64_t> unit_nvlink_mask_;
  std::vector<std::string> gpu_names_;
  std::unordered_map<std::string, int> gpu_name_ids_;
  std::unordered_map<int64_t, int> worker_by_id_;
  std::unordered_map<std::string, int> worker_by_name_;
  std::unordered_map<int64_t, InstanceRecord> instances_;
  std::unordered_map<int64_t, std::vector<ModelRef>> model_refs_;
  std::unordered_map<std::string, std::vector<int>> files_;
  // slice_tail_[b]: claims on units whose bucket is >= b.
  std::array<int64_t, kSliceBuckets> slice_tail_{};
};

}  // namespace segma::scheduler
