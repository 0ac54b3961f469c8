#include "scheduler/estimate/model_shape.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <vector>

#include <fmt/format.h>

namespace segma::estimate {
namespace {

// Parameter counts of the parts of a transformer, from its dimensions.
struct ParamSplit {
  double input = 0;   // token/position/type embeddings (+ embedding layer norm)
  double layer = 0;   // one repeating block
  double output = 0;  // final norm, LM head (untied), pooler
  double Total(int64_t n_layers) const {
    return input + output + layer * static_cast<double>(n_layers);
  }
};

ParamSplit SplitParameters(const ModelConfig& c) {
  const double h = static_cast<double>(c.hidden_size);
  const double q = static_cast<double>(c.num_heads * c.head_dim);
  const double kv = static_cast<double>(c.num_kv_heads * c.head_dim);
  const double v = static_cast<double>(c.vocab_size);
  ParamSplit p;
  p.input = v * h + static_cast<double>(c.type_vocab_size) * h;
  double attn = h * q + 2 * h * kv + q * h;
  if (c.IsEncoderOnly()) {
    // BERT family: learned positions, LayerNorms with bias, biases everywhere, 2-matrix FFN,
    // pooler.
    p.input += static_cast<double>(c.max_position_embeddings) * h + 2 * h;
    attn += q + 2 * kv + h;
    const double ffn = static_cast<double>(c.intermediate_size);
    p.layer = attn + 2 * h * ffn + ffn + h + 4 * h;
    p.output = h * h + h;
    return p;
  }
  if (c.attention_bias) attn += q + 2 * kv;
  double ffn = 0;
  if (c.num_experts > 0) {
    const double e = static_cast<double>(c.num_experts);
    ffn = e * 3 * h * static_cast<double>(c.moe_intermediate_size) + h * e;
    if (c.shared_expert_intermediate_size > 0) {
      ffn += 3 * h * static_cast<double>(c.shared_expert_intermediate_size) + h;
    }
  } else {
    ffn = 3 * h * static_cast<double>(c.intermediate_size);
  }
  p.layer = attn + ffn + 2 * h;
  p.output = h + (c.tie_word_embeddings ? 0 : v * h);
  return p;
}

// Rounds to bytes, saturating far above any real model so hostile inputs cannot overflow.
uint64_t ToBytes(double x) {
  if (!(x > 0)) return 0;
  if (x >= 0x1p62) return uint64_t{1} << 62;
  return static_cast<uint64_t>(std::llround(x));
}

// Largest value of a scalar or per-layer array key (some architectures vary it per layer).
std::optional<uint64_t> MaxUint(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.Find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_array()) return v->AsUint();
  std::optional<uint64_t> best;
  for (uint64_t i = 0; i < v->array_size(); ++i) {
    std::optional<int64_t> x = v->ArrayInt(i);
    if (x && *x >= 0 && (!best || static_cast<uint64_t>(*x) > *best)) best = *x;
  }
  return best;
}

// "blk.12.attn_q.weight" → 12.
std::optional<int64_t> LayerIndex(std::string_view name) {
  if (!name.starts_with("blk.")) return std::nullopt;
  name.remove_prefix(4);
  int64_t idx = 0;
  auto [ptr, ec] = std::from_chars(name.data(), name.data() + name.size(), idx);
  if (ec != std::errc() || ptr == name.data()) return std::nullopt;
  return idx;
}

}  // namespace

uint64_t ModelShape::KvBytesPerToken(double bytes_per_element) const {
  if (encoder_only) return 0;
  return ToBytes(2.0 * static_cast<double>(n_layers) * static_cast<double>(n_kv_heads) *
                 static_cast<double>(head_dim) * bytes_per_element);
}

Status ModelShape::Validate() const {
  if (n_layers <= 0 || n_layers > 10000 || hidden_size <= 0 || n_heads <= 0 || n_kv_heads <= 0 ||
      head_dim <= 0 || vocab_size <= 0) {
    return InvalidArgumentError(fmt::format(
        "model shape needs positive dimensions (layers {}, hidden {}, heads {}, kv heads {}, "
        "head_dim {}, vocab {})",
        n_layers, hidden_size, n_heads, n_kv_heads, head_dim, vocab_size));
  }
  if (n_kv_heads > n_heads || n_heads > (1 << 20) || head_dim > (1 << 20) ||
      hidden_size > (1 << 24) || vocab_size > (1 << 24)) {
    return InvalidArgumentError(fmt::format(
        "model shape dimensions out of range (heads {}, kv heads {}, head_dim {}, hidden {}, "
        "vocab {})",
        n_heads, n_kv_heads, head_dim, hidden_size, vocab_size));
  }
  if (weight_bytes == 0) return InvalidArgumentError("model shape has no weights");
  if (weight_bytes > kMaxModelBytes) {
    return InvalidArgumentError(
        fmt::format("model weights of {} bytes are implausible", weight_bytes));
  }
  return OkStatus();
}

Result<ModelShape> ShapeFromGguf(const GgufFile& f) {
  const std::string* arch = f.FindString("general.architecture");
  if (arch == nullptr) return InvalidArgumentError("gguf: general.architecture is missing");
  const std::string& a = *arch;
  ModelShape s;
  s.architecture = a;
  s.source = "gguf";
  auto need = [&](const std::string& key) -> Result<int64_t> {
    std::optional<uint64_t> v = MaxUint(f, key);
    if (!v || *v == 0 || *v > (uint64_t{1} << 32)) {
      return InvalidArgumentError(fmt::format("gguf: {} is missing or out of range", key));
    }
    return static_cast<int64_t>(*v);
  };
  ASSIGN_OR_RETURN(s.n_layers, need(a + ".block_count"));
  ASSIGN_OR_RETURN(s.hidden_size, need(a + ".embedding_length"));
  ASSIGN_OR_RETURN(s.n_heads, need(a + ".attention.head_count"));
  s.n_kv_heads =
      static_cast<int64_t>(MaxUint(f, a + ".attention.head_count_kv").value_or(s.n_heads));
  if (s.n_kv_heads == 0 || s.n_kv_heads > s.n_heads) s.n_kv_heads = s.n_heads;
  const uint64_t default_head = static_cast<uint64_t>(s.hidden_size / s.n_heads);
  const uint64_t k_len = MaxUint(f, a + ".attention.key_length").value_or(default_head);
  const uint64_t v_len = MaxUint(f, a + ".attention.value_length").value_or(k_len);
  // K and V may differ in width; head_dim is their mean so that 2 × head_dim covers both.
  s.head_dim = static_cast<int64_t>(std::min<uint64_t>((k_len + v_len + 1) / 2, 1 << 20));
  s.ffn_size = static_cast<int64_t>(
      std::min<uint64_t>(MaxUint(f, a + ".feed_forward_length").value_or(0), 1 << 24));
  s.max_context = static_cast<int64_t>(
      std::min<uint64_t>(MaxUint(f, a + ".context_length").value_or(0), uint64_t{1} << 32));
  s.n_experts = static_cast<int64_t>(
      std::min<uint64_t>(MaxUint(f, a + ".expert_count").value_or(0), 1 << 16));
  s.n_experts_used = static_cast<int64_t>(
      std::min<uint64_t>(MaxUint(f, a + ".expert_used_count").value_or(0), 1 << 16));
  s.expert_ffn_size = static_cast<int64_t>(std::min<uint64_t>(
      MaxUint(f, a + ".expert_feed_forward_length").value_or(s.ffn_size), 1 << 24));
  s.encoder_only = a == "bert" || a == "nomic-bert" || a == "jina-bert-v2" || a == "modern-bert";

  uint64_t vocab = f.FindUint(a + ".vocab_size").value_or(0);
  if (vocab == 0) {
    if (const GgufValue* tokens = f.Find("tokenizer.ggml.tokens")) vocab = tokens->array_size();
  }

  std::vector<uint64_t> per_layer(static_cast<size_t>(s.n_layers), 0);
  uint64_t extra_layer_bytes = 0;  // blocks beyond block_count (e.g. MTP heads)
  bool has_output = false;
  for (const GgufTensorInfo& t : f.tensors) {
    s.parameter_count += t.element_count();
    s.weight_bytes += t.size_bytes;
    if (std::optional<int64_t> i = LayerIndex(t.name)) {
      if (*i >= 0 && *i < s.n_layers) {
        per_layer[static_cast<size_t>(*i)] += t.size_bytes;
      } else {
        extra_layer_bytes += t.size_bytes;
      }
    } else if (t.name.starts_with("token_embd") || t.name.starts_with("position_embd") ||
               t.name.starts_with("token_types")) {
      s.input_embedding_bytes += t.size_bytes;
      if (vocab == 0 && t.name == "token_embd.weight" && t.dims.size() == 2) vocab = t.dims[1];
    } else {
      if (t.name == "output.weight") has_output = true;
      s.output_head_bytes += t.size_bytes;
    }
  }
  // Without output.weight llama.cpp duplicates token_embd as the LM head onto the GPU.
  s.tied_embeddings = !has_output && !s.encoder_only;
  if (s.tied_embeddings) s.output_head_bytes += s.input_embedding_bytes;
  s.output_head_bytes += extra_layer_bytes;
  uint64_t layers_total = 0;
  for (uint64_t b : per_layer) layers_total += b;
  s.layer_weight_bytes = layers_total / static_cast<uint64_t>(s.n_layers);
  s.vocab_size = static_cast<int64_t>(std::min<uint64_t>(vocab, 1 << 24));
  if (s.parameter_count > 0) {
    s.weight_bytes_per_param =
        static_cast<double>(s.weight_bytes) / static_cast<double>(s.parameter_count);
  }
  RETURN_IF_ERROR(s.Validate());
  return s;
}

uint64_t CountParameters(const ModelConfig& config) {
  return ToBytes(SplitParameters(config).Total(config.num_layers));
}

Result<ModelShape> ShapeFromConfig(const ModelConfig& c, const SafetensorsHeader* weights) {
  ModelShape s;
  s.architecture = c.architecture.empty() ? c.model_type : c.architecture;
  s.source = weights ? "safetensors" : "config";
  s.n_layers = c.num_layers;
  s.hidden_size = c.hidden_size;
  s.n_heads = c.num_heads;
  s.n_kv_heads = c.num_kv_heads;
  s.head_dim = c.head_dim;
  s.ffn_size = c.intermediate_size;
  s.vocab_size = c.vocab_size;
  s.max_context = c.max_position_embeddings;
  s.n_experts = c.num_experts;
  s.n_experts_used = c.num_experts_per_token;
  s.expert_ffn_size = c.moe_intermediate_size;
  s.encoder_only = c.IsEncoderOnly();
  s.tied_embeddings = c.tie_word_embeddings;

  const ParamSplit p = SplitParameters(c);
  const double total = p.Total(c.num_layers);
  double bpp = c.WeightBytesPerParam();
  double scale = 1.0;  // real sizes / analytic sizes, when safetensors headers are known
  s.parameter_count = ToBytes(total);
  if (weights != nullptr && weights->data_bytes > 0) {
    s.parameter_count = weights->parameter_count;
    s.weight_bytes = weights->data_bytes;
    bpp = static_cast<double>(weights->data_bytes) /
          static_cast<double>(std::max<uint64_t>(weights->parameter_count, 1));
    scale = static_cast<double>(weights->data_bytes) / (total * bpp);
  } else {
    s.weight_bytes = ToBytes(total * bpp);
  }
  s.weight_bytes_per_param = bpp;
  s.layer_weight_bytes = ToBytes(p.layer * bpp * scale);
  s.input_embedding_bytes = ToBytes(p.input * bpp * scale);
  s.output_head_bytes = ToBytes(p.output * bpp * scale);
  RETURN_IF_ERROR(s.Validate());
  return s;
}

Result<ModelShape> FromParamsB(double params_b) {
  if (!(params_b > 0) || params_b > 10000) {
    return InvalidArgumentError(fmt::format("params_b must be in (0, 10000], got {}", params_b));
  }
  struct Family {
    double max_b;
    int64_t hidden, heads, kv_heads, ffn, vocab;
  };
  // Llama-family proportions by size (Llama 3.x where one exists).
  static constexpr Family kFamilies[] = {
      {0.3, 512, 4, 4, 1792, 32000},       {0.7, 1024, 8, 8, 3584, 32000},
      {2, 2048, 16, 8, 8192, 128256},      {5, 3072, 24, 8, 8192, 128256},
      {11, 4096, 32, 8, 14336, 128256},    {22, 5120, 40, 8, 13824, 128256},
      {45, 8192, 64, 8, 22016, 128256},    {150, 8192, 64, 8, 28672, 128256},
      {1e9, 16384, 128, 8, 53248, 128256},
  };
  const Family* fam = &kFamilies[0];
  for (const Family& f : kFamilies) {
    fam = &f;
    if (params_b <= f.max_b) break;
  }
  ModelConfig c;
  c.model_type = "llama";
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = fam->hidden;
  c.num_heads = fam->heads;
  c.num_kv_heads = fam->kv_heads;
  c.head_dim = 128;
  c.intermediate_size = fam->ffn;
  c.vocab_size = fam->vocab;
  c.max_position_embeddings = 131072;
  c.torch_dtype = "bfloat16";
  c.num_layers = 1;
  const ParamSplit p = SplitParameters(c);
  const double want = params_b * 1e9;
  c.num_layers = std::clamp<int64_t>(std::llround((want - p.input - p.output) / p.layer), 1, 10000);
  ASSIGN_OR_RETURN(ModelShape s, ShapeFromConfig(c));
  // Scale the weights so that the parameter count is exactly what was asked for.
  const double scale = want / p.Total(c.num_layers);
  s.source = "params";
  s.parameter_count = ToBytes(want);
  s.weight_bytes = ToBytes(want * 2);
  s.layer_weight_bytes = ToBytes(p.layer * 2 * scale);
  s.input_embedding_bytes = ToBytes(p.input * 2 * scale);
  s.output_head_bytes = ToBytes(p.output * 2 * scale);
  return s;
}

}  // namespace segma::estimate
