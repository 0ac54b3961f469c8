#pragma once

// What one replica is expected to serve: tokens per second per user and time to first token at
// the concurrency its claim covers, from measurements of segma's own deployments on real GPUs
// (docs/benchmarks.md "Engine choices on one H200"). Pure: no I/O, no clock.
//
// The calibration is a table per (engine, GPU type): for a reference model, the measured
// tokens/s per user and TTFT p50 at 1..64 concurrent users, and for a second, larger model the
// ratio to the reference at the user counts both were measured at. A query interpolates over
// users (log-log) and over parameter count (log), and scales beyond 64 users as a saturated
// engine does (each user's share of a fixed total). docs/scheduler.md "Serving prediction".

#include <cstdint>
#include <string>
#include <vector>

#include "scheduler/scorer.h"

namespace segma::scheduler {

// The data centre's contract: time to first token under 5 s, over 20 tokens/s per user.
inline constexpr double kContractTokensPerSecond = 20;
inline constexpr double kContractTtftMs = 5000;

struct ServingQuery {
  std::string backend;   // types::EngineChoice::backend ("llama.cpp", "vllm", ...)
  std::string gpu_name;  // the placed GPU's model, as its worker reports it ("NVIDIA H200")
  PlacementKind kind = PlacementKind::kSingleGpu;
  uint64_t parameter_count = 0;
  int sequences = 0;  // concurrent sequences the replica serves (its claim's)
};

struct ServingPrediction {
  bool available = false;
  std::string reason;  // why there is no prediction, when !available
  std::string basis;   // where the numbers come from
  // The model's size lies outside the sizes measured; the numbers are extrapolated.
  bool extrapolated = false;
  int sequences = 0;
  // With `sequences` users streaming at once: p50 over users.
  double tokens_per_second_per_user = 0;
  double ttft_ms = 0;
  double total_tokens_per_second = 0;
  // One user alone.
  double single_user_tokens_per_second = 0;
  double single_user_ttft_ms = 0;
};

ServingPrediction PredictServing(const ServingQuery& query);

// One line for each contract target that `p` misses at its concurrency; empty when it meets
// them or has no prediction.
std::vector<std::string> ContractWarnings(const ServingPrediction& p);

}  // namespace segma::scheduler
