#pragma once

// ModelShape: what the estimator needs to know about a model, whatever it was read from (a GGUF
// header, config.json with or without safetensors headers, or just a parameter count).

#include <cstdint>
#include <string>

#include "common/status.h"
#include "scheduler/estimate/gguf.h"
#include "scheduler/estimate/model_config.h"
#include "scheduler/estimate/safetensors.h"

namespace segma::estimate {

// Weights above this (1 EiB) are rejected as implausible, which keeps all arithmetic in range.
inline constexpr uint64_t kMaxModelBytes = uint64_t{1} << 60;

struct ModelShape {
  std::string architecture;  // "llama", "LlamaForCausalLM", ...
  std::string source;        // "gguf", "safetensors", "config", "params"

  // Transformer dimensions.
  int64_t n_layers = 0;
  int64_t hidden_size = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;  // of K and V
  int64_t ffn_size = 0;  // dense FFN width
  int64_t vocab_size = 0;
  int64_t max_context = 0;     // trained context (0 if unknown)
  int64_t n_experts = 0;       // 0 for dense models
  int64_t n_experts_used = 0;  // per token
  int64_t expert_ffn_size = 0;
  bool encoder_only = false;  // no KV cache (embedding / reranker models)
  bool tied_embeddings = false;

  // Weights, in the bytes they occupy in memory once loaded.
  uint64_t parameter_count = 0;
  uint64_t weight_bytes = 0;            // everything
  uint64_t layer_weight_bytes = 0;      // one repeating block (average over blocks)
  uint64_t input_embedding_bytes = 0;   // token (and position) embeddings
  uint64_t output_head_bytes = 0;       // final norm + LM head (0 if tied and shared)
  double weight_bytes_per_param = 2.0;  // for compute-buffer sizing and display

  // Bytes of K+V per token across all layers at `bytes_per_element`.
  uint64_t KvBytesPerToken(double bytes_per_element) const;
  // kInvalidArgument unless the dimensions are positive and mutually consistent.
  Status Validate() const;
};

// From a parsed GGUF header: dimensions from `<arch>.*` metadata, weights summed exactly from the
// tensor table (blk.N.* are layers, token_embd the input, output/output_norm the head).
// kInvalidArgument if general.architecture or the block/embedding/head counts are missing.
Result<ModelShape> ShapeFromGguf(const GgufFile& gguf);

// From config.json; weights computed from the dimensions at the checkpoint dtype, or summed from
// `weights` (safetensors headers of all shards) when given.
Result<ModelShape> ShapeFromConfig(const ModelConfig& config,
                                   const SafetensorsHeader* weights = nullptr);

// A model known only by its parameter count (simulated models): Llama-like proportions
// (head_dim 128, 8 KV heads, FFN 3.5x hidden, 128256 vocab), bf16 weights, with the layer count
// chosen so that the parameter count matches `params_b` × 1e9. kInvalidArgument unless
// 0 < params_b <= 10000.
Result<ModelShape> FromParamsB(double params_b);

// Parameter count of a config's dense or MoE transformer, as the checkpoint stores it.
uint64_t CountParameters(const ModelConfig& config);

}  // namespace segma::estimate
