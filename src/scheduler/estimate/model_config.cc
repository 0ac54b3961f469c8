#include "scheduler/estimate/model_config.h"

#include <cmath>
#include <fstream>
#include <initializer_list>

#include <fmt/format.h>

#include "common/json.h"

namespace segma::estimate {
namespace {

constexpr uint64_t kMaxConfigBytes = 16 << 20;

// Reads integer fields from one JSON object, trying alias names in order. The first type or
// range error wins.
class FieldReader {
 public:
  explicit FieldReader(const json::object& o) : o_(o) {}

  int64_t Int(std::initializer_list<std::string_view> names, int64_t min, int64_t max,
              bool required) {
    for (std::string_view name : names) {
      const json::value* v = o_.if_contains(name);
      if (v == nullptr || v->is_null()) continue;
      int64_t x = 0;
      if (v->is_int64()) {
        x = v->as_int64();
      } else if (v->is_uint64()) {
        if (v->as_uint64() > static_cast<uint64_t>(max)) return Fail(name, "is out of range");
        x = static_cast<int64_t>(v->as_uint64());
      } else if (v->is_double() && std::floor(v->as_double()) == v->as_double() &&
                 std::fabs(v->as_double()) < 9e15) {
        x = static_cast<int64_t>(v->as_double());
      } else {
        return Fail(name, "must be an integer");
      }
      if (x < min || x > max) {
        return Fail(name, fmt::format("= {} is out of range [{}, {}]", x, min, max));
      }
      return x;
    }
    if (required) Fail(*names.begin(), "is required");
    return 0;
  }

  std::string String(std::string_view name) {
    const json::value* v = o_.if_contains(name);
    if (v == nullptr || v->is_null()) return {};
    if (!v->is_string()) {
      Fail(name, "must be a string");
      return {};
    }
    return std::string(v->as_string());
  }

  bool Bool(std::string_view name, bool dflt) {
    const json::value* v = o_.if_contains(name);
    if (v == nullptr || v->is_null()) return dflt;
    if (!v->is_bool()) {
      Fail(name, "must be a boolean");
      return dflt;
    }
    return v->as_bool();
  }

  double Double(std::string_view name) {
    const json::value* v = o_.if_contains(name);
    if (v == nullptr || v->is_null()) return 0;
    if (!v->is_number()) {
      Fail(name, "must be a number");
      return 0;
    }
    return v->to_number<double>();
  }

  int64_t Fail(std::string_view name, std::string_view problem) {
    if (status_.ok())
      status_ = InvalidArgumentError(fmt::format("config.json: {} {}", name, problem));
    return 0;
  }
  const Status& status() const { return status_; }

 private:
  const json::object& o_;
  Status status_;
};

}  // namespace

bool ModelConfig::IsEncoderOnly() const {
  for (std::string_view t : {"bert", "roberta", "xlm-roberta", "nomic_bert", "new", "distilbert",
                             "electra", "deberta", "deberta-v2", "modernbert"}) {
    if (model_type == t) return true;
  }
  return architecture.find("Bert") != std::string::npos ||
         architecture.find("Roberta") != std::string::npos;
}

double ModelConfig::WeightBytesPerParam() const {
  if (quant_bits > 0) return static_cast<double>(quant_bits) / 8.0;
  if (quant_method == "fp8" || quant_method == "fbgemm_fp8" ||
      quant_method == "compressed-tensors") {
    return 1.0;
  }
  if (torch_dtype == "float32") return 4.0;
  return 2.0;
}

Result<ModelConfig> ParseModelConfig(std::string_view json_text) {
  auto parsed = ParseJson(json_text);
  if (!parsed.ok()) return InvalidArgumentError("config.json: " + parsed.status().message());
  if (!parsed->is_object()) return InvalidArgumentError("config.json: not a JSON object");
  const json::object& top = parsed->as_object();

  ModelConfig c;
  FieldReader t(top);
  if (const json::value* a = top.if_contains("architectures"); a && a->is_array()) {
    if (!a->as_array().empty() && a->as_array()[0].is_string()) {
      c.architecture = a->as_array()[0].as_string();
    }
  }
  c.model_type = t.String("model_type");

  // Multimodal configs keep the language model under text_config.
  const json::object* body = &top;
  const json::value* text = top.if_contains("text_config");
  if (!top.contains("num_hidden_layers") && text != nullptr && text->is_object()) {
    body = &text->as_object();
  }
  FieldReader r(*body);
  constexpr int64_t kMaxDim = 1 << 20;
  c.num_layers = r.Int({"num_hidden_layers", "n_layer", "num_layers", "n_layers"}, 1, 10000, true);
  c.hidden_size = r.Int({"hidden_size", "n_embd", "d_model", "dim"}, 1, kMaxDim, true);
  c.num_heads = r.Int({"num_attention_heads", "n_head", "num_heads", "n_heads"}, 1, 65536, true);
  c.num_kv_heads =
      r.Int({"num_key_value_heads", "n_head_kv", "num_kv_heads", "multi_query_group_num"}, 1, 65536,
            false);
  c.head_dim = r.Int({"head_dim", "kv_channels"}, 1, 65536, false);
  c.intermediate_size = r.Int(
      {"intermediate_size", "n_inner", "ffn_dim", "d_ff", "ffn_hidden_size"}, 1, 1 << 24, false);
  c.vocab_size = r.Int({"vocab_size", "padded_vocab_size"}, 1, 1 << 24, false);
  if (c.vocab_size == 0 && body != &top) c.vocab_size = t.Int({"vocab_size"}, 1, 1 << 24, false);
  c.max_position_embeddings = r.Int({"max_position_embeddings", "n_positions", "max_seq_len",
                                     "seq_length", "max_sequence_length"},
                                    1, int64_t{1} << 32, false);
  c.torch_dtype = r.String("torch_dtype");
  if (c.torch_dtype.empty()) c.torch_dtype = r.String("dtype");
  if (c.torch_dtype.empty()) c.torch_dtype = t.String("torch_dtype");
  if (c.torch_dtype.empty()) c.torch_dtype = t.String("dtype");
  c.rope_theta = r.Double("rope_theta");
  c.tie_word_embeddings = r.Bool("tie_word_embeddings", t.Bool("tie_word_embeddings", false));
  c.attention_bias =
      r.Bool("attention_bias", false) || c.model_type == "qwen2" || c.model_type == "qwen2_moe";
  c.type_vocab_size = r.Int({"type_vocab_size"}, 0, 1 << 16, false);
  c.num_experts =
      r.Int({"num_local_experts", "num_experts", "n_routed_experts"}, 0, 1 << 16, false);
  c.num_experts_per_token = r.Int({"num_experts_per_tok", "moe_top_k", "top_k"}, 0, 1 << 16, false);
  c.moe_intermediate_size = r.Int({"moe_intermediate_size"}, 0, 1 << 24, false);
  c.shared_expert_intermediate_size = r.Int({"shared_expert_intermediate_size"}, 0, 1 << 24, false);
  if (const json::value* q = top.if_contains("quantization_config"); q && q->is_object()) {
    FieldReader qr(q->as_object());
    c.quant_method = qr.String("quant_method");
    c.quant_bits = qr.Int({"bits", "w_bit"}, 1, 32, false);
    RETURN_IF_ERROR(qr.status());
  }
  RETURN_IF_ERROR(t.status());
  RETURN_IF_ERROR(r.status());

  if (c.num_kv_heads == 0) c.num_kv_heads = c.num_heads;
  if (c.num_kv_heads > c.num_heads) {
    return InvalidArgumentError(fmt::format("config.json: {} KV heads exceed {} attention heads",
                                            c.num_kv_heads, c.num_heads));
  }
  if (c.head_dim == 0) {
    if (c.hidden_size % c.num_heads != 0) {
      return InvalidArgumentError(fmt::format(
          "config.json: hidden_size {} is not divisible by {} heads and head_dim is absent",
          c.hidden_size, c.num_heads));
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.num_experts > 0 && c.moe_intermediate_size == 0) {
    c.moe_intermediate_size = c.intermediate_size;
  }
  if (c.intermediate_size == 0 && c.moe_intermediate_size == 0) {
    return InvalidArgumentError("config.json: intermediate_size is required");
  }
  if (c.vocab_size == 0) return InvalidArgumentError("config.json: vocab_size is required");
  return c;
}

Result<ModelConfig> ReadModelConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return NotFoundError(fmt::format("cannot open '{}'", path));
  const std::streamoff size = in.tellg();
  if (size < 0 || static_cast<uint64_t>(size) > kMaxConfigBytes) {
    return InvalidArgumentError(fmt::format("'{}' is not a plausible config.json size", path));
  }
  std::string text(static_cast<size_t>(size), '\0');
  in.seekg(0);
  in.read(text.data(), size);
  if (!in) return UnavailableError(fmt::format("cannot read '{}'", path));
  auto c = ParseModelConfig(text);
  if (!c.ok()) return Status(c.status().code(), fmt::format("{}: {}", path, c.status().message()));
  return c;
}

}  // namespace segma::estimate
