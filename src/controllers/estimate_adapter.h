#pragma once

// Bridges segma::estimate (what a model needs, from its files) to the scheduler's small
// ResourceEstimator interface, and picks the estimate for a model from its source.

#include <memory>

#include "common/status.h"
#include "scheduler/estimate/estimator.h"
#include "scheduler/resource_estimator.h"
#include "types/engine_choice.h"
#include "types/model.h"

namespace segma::controllers {

// A ResourceEstimator over one estimate::ResourceEstimate. Immutable, thread-safe.
class EstimateAdapter final : public scheduler::ResourceEstimator {
 public:
  // `attention_heads` (0 = unknown) bounds tensor-parallel sizes.
  EstimateAdapter(estimate::ResourceEstimate est, int attention_heads)
      : estimate_(est), attention_heads_(attention_heads) {}

  const estimate::ResourceEstimate& resource_estimate() const { return estimate_; }

  // scheduler::ResourceEstimator
  // {vram_per_gpu(tp), ram_bytes, gpu_memory_fraction}: the scheduler turns the fraction into
  // the claim (fraction × GPU total) for vLLM and SGLang. TensorRT-LLM's fraction applies to what
  // is free after weights, which a per-GPU fraction cannot express: its claim is the need.
  Result<scheduler::Requirement> ForGpus(int tp_size) const override;
  // llama.cpp -ngl on one GPU; `gpu_layers` is clamped to [0, total_layers()].
  Result<scheduler::Requirement> ForGpuLayers(int gpu_layers) const override;
  int MaxGpuLayers(int64_t vram) const override;
  // llama.cpp's own count: the repeating blocks plus the output layer (-ngl n_layers + 1 is a
  // whole offload; -ngl n_layers leaves one block on the CPU).
  int total_layers() const override {
    return estimate_.n_layers > 0 ? static_cast<int>(estimate_.n_layers) + 1 : 0;
  }
  int64_t layer_bytes() const override;
  int attention_heads() const override { return attention_heads_; }
  int sequences() const override { return static_cast<int>(estimate_.parallel); }
  int64_t context_length() const override { return estimate_.context_length; }
  int64_t kv_bytes_per_sequence(int tp_size) const override;

 private:
  const estimate::ResourceEstimate estimate_;
  const int attention_heads_;
};

// The format of `model`'s files as the server sees them: a local_path source's own files when
// the server can read them, otherwise what the source names (types::FormatOf). Stats files.
types::ModelFormat FormatOnServer(const types::Model& model);

// The estimator for `model` served by `engine` (types::ChooseEngine), from the first source of
// shape that applies:
//  - source simulated: estimate::FromParamsB(source.params_b);
//  - a GGUF local_path (engine.format gguf): the GGUF header, which must be readable;
//  - a checkpoint directory (engine.format safetensors, with config.json and *.safetensors or a
//    sharded model.safetensors.index.json, headers only): the config;
//  - any source with source.params_b > 0: that parameter count;
//  - otherwise kFailedPrecondition "cannot estimate resources before the model files are
//    available" (hub sources before their download).
// The estimate is for engine.backend; a custom backend has no estimate of its own and is
// estimated as the engine segma would choose for the format (llama.cpp for GGUF, the simulator
// for simulated sources, vLLM otherwise). Context length and max_concurrent_sequences
// (parallel) come from the model; unset sequences are scheduler::kTargetSequences, and when both
// are unset the context is min(trained context, scheduler::kTypicalContextTokens) for every
// engine (docs/scheduler.md "Concurrency").
// Reads files (headers only): call it on a blocking thread. Errors of unreadable or malformed
// files are returned as they are (kInvalidArgument, kNotFound).
Result<std::unique_ptr<EstimateAdapter>> EstimatorForModel(const types::Model& model,
                                                           const types::EngineChoice& engine);

}  // namespace segma::controllers
