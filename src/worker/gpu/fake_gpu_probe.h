#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "types/worker.h"
#include "worker/gpu/gpu_probe.h"

namespace segma::gpu {

// The GPU pool `segma start` simulates on a machine without NVIDIA GPUs, so that a first run can
// deploy models at once (on simulated engines): two H200 NVL with 141 GiB each (NVLink between
// them) and one RTX PRO 6000 with 96 GiB. Parse it with ParseFakeGpuSpec.
inline constexpr std::string_view kDemoGpuSpec = "2xH200-NVL:141,1xRTX-PRO-6000:96";

// Most GPUs a fake spec may describe in total.
inline constexpr int kMaxFakeGpus = 64;

// One group of identical simulated GPUs: "4xH200-NVL:141" → {4, "H200-NVL", 141}.
struct FakeGpuSpec {
  int count = 1;
  std::string name;  // as written in the spec
  int64_t memory_gib = 0;

  friend bool operator==(const FakeGpuSpec&, const FakeGpuSpec&) = default;
};

// Parses "COUNTxNAME:GiB[,COUNTxNAME:GiB...]", e.g. "4xH200-NVL:141,2xRTX-PRO-6000:96". COUNT is
// optional (1); NAME is letters, digits, '-', '_' and '.'; GiB a positive integer. Spaces around
// groups are ignored. kInvalidArgument, naming the bad group, for an empty spec, a missing size,
// a count or size <= 0, a total above kMaxFakeGpus GPUs, or anything else malformed.
Result<std::vector<FakeGpuSpec>> ParseFakeGpuSpec(std::string_view spec);

// The display name of a spec name: "H200-NVL" → "NVIDIA H200 NVL" ('-' and '_' become spaces,
// "NVIDIA " is prefixed unless present).
std::string FakeGpuDisplayName(std::string_view spec_name);

// The compute capability of a known GPU display name ("NVIDIA H200 NVL" → "9.0"; H100/H200 9.0,
// B200 10.0, RTX PRO 6000 (Blackwell) 12.0, A100 8.0, L40S/L4 8.9, ...); empty when unknown.
std::string KnownComputeCapability(std::string_view display_name);

// Simulated GPUs for tests, demos and scale runs. Indices follow the spec order; UUIDs are
// "GPU-fake-<hash of seed and index>", so workers with different seeds (use the worker name)
// report different GPUs and the same worker the same ones across restarts. Every GPU of a group
// whose name contains H100 or H200 has an NVLink to the other GPUs of its group; all other pairs
// are "pcie". memory_used is what SetUsedMemory (or SetClaimedMemory) set (0 at start);
// utilization, temperature, power and SM clock follow memory use plausibly and move from one
// Probe() to the next (a busy GPU between about 25% and 65%, an idle one below 3%), so that
// dashboards over simulated GPUs show live lines; they depend only on the number of Probe()
// calls, never on a clock.
//
// Thread-safe.
class FakeGpuProbe final : public GpuProbe {
 public:
  // `specs` as ParseFakeGpuSpec returns them (valid counts and sizes).
  FakeGpuProbe(const std::vector<FakeGpuSpec>& specs, std::string_view seed);

  // Parses `spec` (see ParseFakeGpuSpec) and builds the probe; kInvalidArgument for a bad spec.
  static Result<std::unique_ptr<FakeGpuProbe>> Create(std::string_view spec, std::string_view seed);

  // Sets the memory the simulated engines use on GPU `index` (memory_used = bytes +
  // external). kNotFound for an unknown index, kInvalidArgument when bytes < 0 or the total
  // would exceed the GPU's memory.
  Status SetUsedMemory(int index, int64_t bytes);
  // Simulates memory held by a process segma does not manage (memory_used_external), with the
  // same errors as SetUsedMemory.
  Status SetExternalMemory(int index, int64_t bytes);

  // gpu::GpuProbe
  Result<std::vector<types::GpuDevice>> Probe() override;
  // Sets each GPU's engine memory to its claim (0 for GPUs not named), capped at what the GPU has
  // beside its external memory.
  void SetClaimedMemory(const std::map<int, int64_t>& bytes) override;
  std::string_view source() const override { return "fake"; }

 private:
  struct Slot {
    types::GpuDevice device;  // static fields; memory_used and telemetry filled by Probe()
    int64_t managed_used = 0;
    int64_t external_used = 0;
  };
  Status CheckSet(int index, int64_t bytes, int64_t other) const;  // requires mu_

  mutable std::mutex mu_;
  std::vector<Slot> slots_;  // guarded by mu_
  uint64_t probes_ = 0;      // Probe() calls so far; guarded by mu_
};

}  // namespace segma::gpu
