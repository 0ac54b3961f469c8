#pragma once

// What a model needs, as the scheduler asks for it. Deliberately small: the estimators of
// scheduler/estimate/ (GGUF, config.json, safetensors) are adapted to it with a thin class, and
// FixedEstimator covers simulated models and tests.

#include <cstdint>

#include "common/status.h"
#include "types/model.h"

namespace segma::scheduler {

inline constexpr int64_t kMiB = int64_t{1} << 20;
inline constexpr int64_t kGiB = int64_t{1} << 30;

// The concurrency a deployment is sized for when the model sets neither max_concurrent_sequences
// nor context_length: the contract's 32 users, each holding a typical context of 8192 tokens
// (capped by the model's trained context). docs/scheduler.md "Concurrency".
inline constexpr int kTargetSequences = 32;
inline constexpr int64_t kTypicalContextTokens = 8192;

// Memory one replica needs in a given arrangement. Bytes.
struct Requirement {
  int64_t vram_per_gpu = 0;  // on each GPU of the arrangement
  int64_t ram = 0;           // host memory on the (main) worker
  // Engines that take a fixed share of every GPU whatever they need (vLLM
  // gpu_memory_utilization, SGLang mem_fraction_static): the claim on a GPU of total T is
  // fraction × T, which must cover vram_per_gpu. 0 = the engine allocates what it needs.
  double gpu_memory_fraction = 0;

  friend bool operator==(const Requirement&, const Requirement&) = default;
};

// Thread-safety: implementations must be safe to call concurrently (they are pure).
class ResourceEstimator {
 public:
  virtual ~ResourceEstimator() = default;

  // The requirement with all layers on `tp_size` GPUs (tensor parallel, or llama.cpp's split).
  // kInvalidArgument when the model cannot be split that way; other errors mean no estimate.
  virtual Result<Requirement> ForGpus(int tp_size) const = 0;

  // The requirement with `gpu_layers` of total_layers() on one GPU and the rest in RAM
  // (llama.cpp -ngl); gpu_layers = 0 is CPU only. The default is linear in layer_bytes():
  // VRAM = ForGpus(1) - (L - n) × layer_bytes, RAM = ForGpus(1).ram + (L - n) × layer_bytes.
  virtual Result<Requirement> ForGpuLayers(int gpu_layers) const;

  // The most layers (0 … total_layers()) whose ForGpuLayers fits in `vram` bytes.
  virtual int MaxGpuLayers(int64_t vram) const;

  // The layers partial offload counts in; 0 when unknown (then partial offload is not offered).
  // For a GGUF this is llama.cpp's own count (blocks + the output layer), so a claim's
  // offload_layers is the -ngl value the engine is given.
  virtual int total_layers() const = 0;
  // Bytes of one block's weights (what moves between GPU and RAM per layer).
  virtual int64_t layer_bytes() const = 0;
  // Attention heads; tensor-parallel sizes must divide it. 0 = unknown (any size allowed).
  virtual int attention_heads() const = 0;

  // Concurrency (docs/scheduler.md "Concurrency"): ForGpus includes the KV cache of sequences()
  // sequences of context_length() tokens. 0 when not modelled; then the scheduler takes the
  // requirement as it is.
  virtual int sequences() const { return 0; }
  virtual int64_t context_length() const { return 0; }
  // Bytes the KV cache of one sequence takes on each GPU of a `tp_size` split (0 = unknown).
  virtual int64_t kv_bytes_per_sequence(int /*tp_size*/) const { return 0; }
};

// An estimate from a parameter count: weights = params × bytes_per_param, plus a KV cache and a
// per-GPU overhead. For simulated models and tests.
class FixedEstimator final : public ResourceEstimator {
 public:
  struct Options {
    double params_b = 1;                    // billions of parameters
    double bytes_per_param = 2;             // 2 = fp16/bf16, ~0.56 = Q4_K_M
    int64_t kv_cache_bytes = 0;             // total, split over tensor-parallel GPUs
    int64_t overhead_per_gpu = 512 * kMiB;  // CUDA context, activations
    int64_t ram = 512 * kMiB;               // host memory of the engine process
    int layers = 32;
    int attention_heads = 32;
    double gpu_memory_fraction = 0;
    int sequences = 0;           // sequences kv_cache_bytes holds (0 = not modelled)
    int64_t context_length = 0;  // tokens per sequence
  };

  explicit FixedEstimator(Options options) : options_(options) {}

  // Options for a simulated model of `params_b` billion parameters: layers and heads from the
  // nearest common architecture (1B: 16/32, 8B: 32/32, 14B: 48/40, 32B: 64/40, 70B: 80/64,
  // 405B: 126/128) and a KV cache of `context_length` (default 8192) tokens × max(1, sequences).
  static Options ForParams(double params_b, int64_t context_length = 0, int sequences = 1);
  // FixedEstimator for a model whose source is simulated (uses source.params_b, context_length,
  // and max_concurrent_sequences or, when unset, kTargetSequences).
  static FixedEstimator ForModel(const types::Model& m);

  int64_t weight_bytes() const;
  const Options& options() const { return options_; }

  // ResourceEstimator
  Result<Requirement> ForGpus(int tp_size) const override;
  int total_layers() const override { return options_.layers; }
  int64_t layer_bytes() const override;
  int attention_heads() const override { return options_.attention_heads; }
  int sequences() const override { return options_.sequences; }
  int64_t context_length() const override { return options_.context_length; }
  int64_t kv_bytes_per_sequence(int tp_size) const override;

 private:
  Options options_;
};

}  // namespace segma::scheduler
