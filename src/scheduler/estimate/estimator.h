#pragma once

// VRAM and RAM estimates for serving a model with one of the inference engines.
//
//   need per GPU (tp GPUs) = weights / tp + KV cache / tp' + compute buffers + engine overhead
//   KV cache               = tokens × 2 × layers × kv_heads × head_dim × bytes per element
//   tokens                 = context_length × parallel
//
// where tp' = min(tp, kv_heads) because KV heads are replicated, not split, when there are fewer
// of them than GPUs. vLLM-style engines (vllm, sglang, tensorrt-llm) then take a fixed fraction
// of each GPU whatever they need (gpu_memory_utilization and its equivalents), filling the rest
// with KV cache; llama.cpp and the simulator allocate what they need. See docs/estimation.md.
// Everything here is pure computation: thread-safe, no I/O.

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "scheduler/estimate/model_shape.h"

namespace segma::estimate {

enum class Engine { kLlamaCpp, kVllm, kSglang, kTensorRtLlm, kSimulator };

// "llama.cpp", "vllm", "sglang", "tensorrt-llm", "simulator" (the backend names of /v2/models).
// kInvalidArgument for other names (custom backends have no built-in estimate).
Result<Engine> ParseEngine(std::string_view name);
std::string_view EngineName(Engine engine);

// Bytes per KV cache element for an engine's cache type name: "auto" (= f16/bf16), "f16",
// "bf16", "f32", "fp8" / "fp8_e4m3" / "fp8_e5m2", "q8_0", "q5_0", "q5_1", "q4_0", "q4_1",
// "iq4_nl". kInvalidArgument for other names.
Result<double> KvCacheBytesPerElement(std::string_view cache_type);

struct EstimateOptions {
  Engine engine = Engine::kLlamaCpp;
  // Tokens of context per sequence. 0: llama.cpp and the simulator use min(trained context,
  // 8192); vLLM-style engines use the trained context (their max_model_len default).
  int64_t context_length = 0;
  // Sequences that each hold a full context at once. llama.cpp: `-np parallel` with
  // `-c context_length × parallel`.
  int64_t parallel = 1;
  std::string kv_cache_type = "auto";
  // Tokens per forward pass for activation sizing. 0: llama.cpp n_ubatch 512; vLLM/SGLang
  // max_num_batched_tokens 8192; TensorRT-LLM max_num_tokens 8192.
  int64_t batch_tokens = 0;
  // llama.cpp -fa (on by default on CUDA since 2025); without it the KQ matrix is materialised.
  bool flash_attention = true;
  // vLLM gpu_memory_utilization / SGLang mem_fraction_static / TensorRT-LLM
  // kv_cache_free_gpu_mem_fraction. 0: engine default (0.9, 0.88, 0.9).
  double gpu_memory_fraction = 0;
  // vLLM/SGLang capture CUDA graphs unless --enforce-eager / --disable-cuda-graph.
  bool cuda_graphs = true;
};

// The estimate for one model on one engine. Byte counts are totals unless they say "per GPU".
struct ResourceEstimate {
  Engine engine = Engine::kLlamaCpp;
  int64_t context_length = 0;  // resolved
  int64_t parallel = 1;
  int64_t n_layers = 0;
  int64_t n_kv_heads = 0;

  uint64_t parameter_count = 0;        // the model's, for the serving prediction
  uint64_t weight_bytes = 0;           // all weights, as loaded by this engine
  uint64_t layer_weight_bytes = 0;     // one repeating block
  uint64_t input_embedding_bytes = 0;  // llama.cpp keeps these in RAM
  uint64_t output_head_bytes = 0;      // llama.cpp offloads these with the last "layer"
  uint64_t kv_bytes_per_token = 0;     // all layers
  uint64_t kv_cache_bytes = 0;         // context_length × parallel tokens
  uint64_t compute_bytes = 0;          // activations / compute buffers, per GPU
  uint64_t overhead_bytes = 0;         // CUDA context, CUDA graphs, allocator slack, per GPU
  uint64_t ram_bytes = 0;              // host memory with everything offloaded to GPUs
  // Fraction of every GPU the engine takes regardless of need; 0 for engines that allocate what
  // they need (llama.cpp, simulator).
  double gpu_memory_fraction = 0;

  // Bytes each GPU needs when the model is split over `tp_size` GPUs (tensor parallel for the
  // vLLM-style engines, llama.cpp's default layer split). tp_size < 1 is treated as 1.
  uint64_t vram_per_gpu(int tp_size) const;
  // The share of a KV cache of `kv_bytes` that each of `tp_size` GPUs holds (layer split for
  // llama.cpp and the simulator, KV heads replicated beyond n_kv_heads for the others).
  uint64_t KvPerGpu(uint64_t kv_bytes, int tp_size) const;
  // Bytes the engine will actually hold on each of `tp_size` GPUs of `gpu_total_bytes`:
  // the fraction × total for vLLM-style engines, the need otherwise. TensorRT-LLM takes its
  // fraction of what is free after weights.
  uint64_t ClaimPerGpu(int tp_size, uint64_t gpu_total_bytes) const;
  // Whether the need fits (for vLLM-style engines: inside the fraction of the GPU).
  bool Fits(int tp_size, uint64_t gpu_total_bytes) const;

  // llama.cpp partial offload (-ngl n) on one GPU, in llama.cpp's own count of n_layers + 1
  // layers: n >= 1 puts the output layer on the GPU and the last n - 1 blocks with it (as
  // llama-model.cpp's load_tensors assigns them); n = n_layers + 1 is everything, n = 0 is CPU
  // only. n is clamped to [0, n_layers + 1].
  uint64_t VramWithGpuLayers(int64_t n_gpu_layers) const;
  uint64_t RamWithGpuLayers(int64_t n_gpu_layers) const;
  // The most layers (0 … n_layers + 1) whose VramWithGpuLayers fits in `vram_bytes`.
  int64_t MaxGpuLayers(uint64_t vram_bytes) const;
};

// Estimates the memory `shape` needs on `options.engine`. kInvalidArgument for an invalid shape,
// unknown KV cache type, non-positive parallel or batch, a fraction outside (0, 1], or (vLLM-style
// engines, which refuse it) a context longer than the model's trained context.
Result<ResourceEstimate> Estimate(const ModelShape& shape, const EstimateOptions& options);

inline constexpr uint64_t kMiB = uint64_t{1} << 20;
inline constexpr uint64_t kGiB = uint64_t{1} << 30;

}  // namespace segma::estimate
