#include "scheduler/estimate/test_model.h"

#include <cmath>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace segma::estimate {
namespace {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t HashName(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ULL;
  return h;
}

// Normal(0, stddev) samples by Box-Muller from a SplitMix64 stream.
void FillNormal(uint64_t seed, float stddev, std::span<float> out) {
  uint64_t state = seed;
  for (size_t i = 0; i < out.size(); i += 2) {
    const double u1 = (static_cast<double>(SplitMix64(state) >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(SplitMix64(state) >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1)) * stddev;
    out[i] = static_cast<float>(r * std::cos(2 * M_PI * u2));
    if (i + 1 < out.size()) out[i + 1] = static_cast<float>(r * std::sin(2 * M_PI * u2));
  }
}

// Uniform values of standard deviation `stddev`, four per 64-bit draw: about 20× cheaper than
// Box-Muller, which matters for the 8 G values of an 8B model (minutes otherwise).
void FillUniform(uint64_t seed, float stddev, std::span<float> out) {
  uint64_t state = seed;
  const float half_width = stddev * 1.7320508f;  // sqrt(3): a uniform in [-a, a] has sd a/sqrt(3)
  const float scale = 2.0f * half_width / 65535.0f;
  size_t i = 0;
  while (i < out.size()) {
    uint64_t bits = SplitMix64(state);
    for (int k = 0; k < 4 && i < out.size(); ++k, ++i, bits >>= 16) {
      out[i] = static_cast<float>(bits & 0xffff) * scale - half_width;
    }
  }
}

uint32_t FileType(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
      return 0;  // LLAMA_FTYPE_ALL_F32
    case GgmlType::kF16:
      return 1;  // LLAMA_FTYPE_MOSTLY_F16
    case GgmlType::kQ8_0:
      return 7;  // LLAMA_FTYPE_MOSTLY_Q8_0
    case GgmlType::kBF16:
      return 32;  // LLAMA_FTYPE_MOSTLY_BF16
    default:
      return 0;
  }
}

}  // namespace

Result<TestModelSize> ParseTestModelSize(std::string_view name) {
  if (name == "tiny") return TestModelSize::kTiny;
  if (name == "7b" || name == "8b") return TestModelSize::k8B;
  return InvalidArgumentError(fmt::format("unknown test model size '{}' (tiny, 7b, 8b)", name));
}

TestModelDims DimsFor(TestModelSize size) {
  if (size == TestModelSize::k8B) return {4096, 32, 32, 8, 14336, 131072, 500000.0f};
  return {256, 2, 4, 2, 512, 2048, 10000.0f};
}

Result<GgufWriter> BuildTestModel(const TestModelOptions& o) {
  if (o.type != GgmlType::kF32 && o.type != GgmlType::kF16 && o.type != GgmlType::kBF16 &&
      o.type != GgmlType::kQ8_0) {
    return InvalidArgumentError(
        fmt::format("test models support f32, f16, bf16 and q8_0, not {}", GgmlTypeName(o.type)));
  }
  if (!(o.stddev >= 0 && o.stddev < 10)) return InvalidArgumentError("stddev must be in [0, 10)");
  ASSIGN_OR_RETURN(GgufFile vocab, ReadGgufFile(o.vocab_path));
  const GgufValue* tokens = vocab.Find("tokenizer.ggml.tokens");
  if (tokens == nullptr || !tokens->is_array() || tokens->array_size() == 0) {
    return InvalidArgumentError(
        fmt::format("'{}' has no tokenizer.ggml.tokens array", o.vocab_path));
  }
  const uint64_t n_vocab = tokens->array_size();

  const TestModelDims d = DimsFor(o.size);
  const int64_t head_dim = d.n_embd / d.n_head;
  const uint64_t embd = static_cast<uint64_t>(d.n_embd);
  const uint64_t kv = static_cast<uint64_t>(head_dim * d.n_head_kv);
  const uint64_t ff = static_cast<uint64_t>(d.n_ff);

  GgufWriter w;
  w.SetMetadata("general.architecture", GgufValue::String("llama"));
  w.SetMetadata(
      "general.name",
      GgufValue::String(o.size == TestModelSize::kTiny ? "segma-test-tiny" : "segma-test-8b"));
  w.SetMetadata("general.file_type", GgufValue::Uint32(FileType(o.type)));
  if (o.type == GgmlType::kQ8_0)
    w.SetMetadata("general.quantization_version", GgufValue::Uint32(2));
  const int64_t ctx = o.context_length > 0 ? o.context_length : d.n_ctx;
  w.SetMetadata("llama.context_length", GgufValue::Uint32(static_cast<uint32_t>(ctx)));
  w.SetMetadata("llama.embedding_length", GgufValue::Uint32(static_cast<uint32_t>(d.n_embd)));
  w.SetMetadata("llama.block_count", GgufValue::Uint32(static_cast<uint32_t>(d.n_layer)));
  w.SetMetadata("llama.feed_forward_length", GgufValue::Uint32(static_cast<uint32_t>(d.n_ff)));
  w.SetMetadata("llama.attention.head_count", GgufValue::Uint32(static_cast<uint32_t>(d.n_head)));
  w.SetMetadata("llama.attention.head_count_kv",
                GgufValue::Uint32(static_cast<uint32_t>(d.n_head_kv)));
  w.SetMetadata("llama.rope.dimension_count", GgufValue::Uint32(static_cast<uint32_t>(head_dim)));
  w.SetMetadata("llama.rope.freq_base", GgufValue::Float32(d.rope_freq_base));
  w.SetMetadata("llama.attention.layer_norm_rms_epsilon", GgufValue::Float32(1e-5f));
  w.SetMetadata("llama.vocab_size", GgufValue::Uint32(static_cast<uint32_t>(n_vocab)));
  for (const auto& [key, value] : vocab.metadata) {
    if (key.starts_with("tokenizer.")) w.SetMetadata(key, value);
  }

  RETURN_IF_ERROR(w.AddTensor("token_embd.weight", {embd, n_vocab}, o.type));
  for (int64_t i = 0; i < d.n_layer; ++i) {
    const std::string p = fmt::format("blk.{}.", i);
    RETURN_IF_ERROR(w.AddTensor(p + "attn_norm.weight", {embd}, GgmlType::kF32));
    RETURN_IF_ERROR(w.AddTensor(p + "attn_q.weight", {embd, embd}, o.type));
    RETURN_IF_ERROR(w.AddTensor(p + "attn_k.weight", {embd, kv}, o.type));
    RETURN_IF_ERROR(w.AddTensor(p + "attn_v.weight", {embd, kv}, o.type));
    RETURN_IF_ERROR(w.AddTensor(p + "attn_output.weight", {embd, embd}, o.type));
    RETURN_IF_ERROR(w.AddTensor(p + "ffn_norm.weight", {embd}, GgmlType::kF32));
    RETURN_IF_ERROR(w.AddTensor(p + "ffn_gate.weight", {embd, ff}, o.type));
    RETURN_IF_ERROR(w.AddTensor(p + "ffn_up.weight", {embd, ff}, o.type));
    RETURN_IF_ERROR(w.AddTensor(p + "ffn_down.weight", {ff, embd}, o.type));
  }
  RETURN_IF_ERROR(w.AddTensor("output_norm.weight", {embd}, GgmlType::kF32));
  RETURN_IF_ERROR(w.AddTensor("output.weight", {embd, n_vocab}, o.type));

  return w;
}

Status WriteTestModel(const TestModelOptions& o) {
  ASSIGN_OR_RETURN(GgufWriter w, BuildTestModel(o));
  std::vector<float> values;
  auto fill = [&](const GgufTensorInfo& t, uint64_t first_row, uint64_t n_rows,
                  std::span<uint8_t> out) -> Status {
    const uint64_t row = t.dims.empty() ? 1 : t.dims[0];
    values.resize(row * n_rows);
    if (t.name.ends_with("norm.weight")) {
      std::fill(values.begin(), values.end(), 1.0f);
    } else {
      const uint64_t seed = o.seed ^ HashName(t.name) ^ (first_row * 0x9e3779b97f4a7c15ULL);
      if (o.size == TestModelSize::kTiny) {
        FillNormal(seed, o.stddev, values);
      } else {
        FillUniform(seed, o.stddev, values);
      }
    }
    return EncodeRow(values, t.type, out);
  };
  return w.WriteFile(o.path, fill);
}

}  // namespace segma::estimate
