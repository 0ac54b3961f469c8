#pragma once

// Hugging Face `config.json`: the fields that size a transformer. Unknown fields are ignored
// (configs carry dozens); fields we use must have the right type and sane ranges.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace segma::estimate {

struct ModelConfig {
  std::string architecture;  // architectures[0], e.g. "LlamaForCausalLM"; may be empty
  std::string model_type;    // "llama", "qwen2", "mixtral", "xlm-roberta", ...
  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;       // = num_heads when the config omits it (no GQA)
  int64_t head_dim = 0;           // = hidden_size / num_heads when the config omits it
  int64_t intermediate_size = 0;  // dense FFN width (0 for pure-MoE configs that omit it)
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;  // 0 if absent
  std::string torch_dtype;              // "bfloat16", "float16", "float32"; "" if absent
  double rope_theta = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2 always has them)
  int64_t type_vocab_size = 0;  // BERT-style token type embeddings
  // Mixture of experts (0 when dense).
  int64_t num_experts = 0;            // num_local_experts (Mixtral) or num_experts (Qwen-MoE)
  int64_t num_experts_per_token = 0;  // num_experts_per_tok
  int64_t moe_intermediate_size = 0;  // expert FFN width; = intermediate_size when absent
  int64_t shared_expert_intermediate_size = 0;
  // Quantized checkpoints (quantization_config): method ("awq", "gptq", "fp8", ...) and bits.
  std::string quant_method;
  int64_t quant_bits = 0;

  // Encoder-only models (BERT family: embeddings, rerankers) have no KV cache.
  bool IsEncoderOnly() const;
  // Bytes per weight element from torch_dtype / quantization_config (2 when unknown).
  double WeightBytesPerParam() const;
};

// Parses config.json text. Text models nested under "text_config" (multimodal configs) are read
// from there. kInvalidArgument for broken JSON, a non-object, missing layer/hidden/head counts,
// wrong types or values out of range (e.g. heads not dividing hidden without head_dim).
Result<ModelConfig> ParseModelConfig(std::string_view json_text);
// Reads and parses the file at `path` (at most 16 MiB). kNotFound if it cannot be opened.
Result<ModelConfig> ReadModelConfig(const std::string& path);

}  // namespace segma::estimate
