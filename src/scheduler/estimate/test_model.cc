#include "scheduler/estimate/test_model.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "common/random.h"

namespace segma::estimate {
namespace {

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

// The bytes a GPT-2-style byte-level BPE token stands for: its characters are bytes_to_unicode()
// images (printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100 + n in order).
// nullopt when a character is outside that alphabet.
std::optional<std::string> ByteLevelBytes(const std::string& token) {
  static const std::array<int, 324> kInverse = [] {
    std::array<int, 324> inv{};
    inv.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      inv[printable ? b : 256 + n++] = b;
    }
    return inv;
  }();
  std::string out;
  for (size_t i = 0; i < token.size();) {
    const auto c = static_cast<unsigned char>(token[i]);
    uint32_t cp = 0;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < token.size()) {
      cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(token[i + 1]) & 0x3Fu);
      i += 2;
    } else {
      return std::nullopt;
    }
    if (cp >= kInverse.size() || kInverse[cp] < 0) return std::nullopt;
    out.push_back(static_cast<char>(kInverse[cp]));
  }
  return out;
}

// True when `bytes` is complete, valid UTF-8.
bool IsCompleteUtf8(std::string_view bytes) {
  for (size_t i = 0; i < bytes.size();) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    const size_t len = c < 0x80             ? 1
                       : (c & 0xE0) == 0xC0 ? 2
                       : (c & 0xF0) == 0xE0 ? 3
                       : (c & 0xF8) == 0xF0 ? 4
                                            : 0;
    if (len == 0 || (len == 2 && c < 0xC2) || i + len > bytes.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(bytes[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

// Tokens a random model must never emit: anything but normal text (control, unknown, byte
// tokens), and for byte-level BPE vocabularies the tokens that are not complete UTF-8 alone.
std::vector<bool> QuietTokens(const GgufFile& vocab) {
  std::vector<bool> quiet;
  const GgufValue* types = vocab.Find("tokenizer.ggml.token_type");
  const GgufValue* tokens = vocab.Find("tokenizer.ggml.tokens");
  const GgufValue* model = vocab.Find("tokenizer.ggml.model");
  const bool byte_level =
      model != nullptr && model->AsString() != nullptr && *model->AsString() == "gpt2";
  if (types == nullptr || !types->is_array()) return quiet;
  quiet.resize(types->array_size());
  for (uint64_t i = 0; i < types->array_size(); ++i) {
    const std::optional<int64_t> type = types->ArrayInt(i);
    quiet[i] = !type || *type != 1;  // 1: normal
    if (!quiet[i] && byte_level && tokens != nullptr && i < tokens->array_strings().size()) {
      const std::optional<std::string> bytes = ByteLevelBytes(tokens->array_strings()[i]);
      quiet[i] = !bytes || !IsCompleteUtf8(*bytes);
    }
  }
  return quiet;
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
  if (name == "32b") return TestModelSize::k32B;
  return InvalidArgumentError(
      fmt::format("unknown test model size '{}' (tiny, 7b, 8b, 32b)", name));
}

TestModelDims DimsFor(TestModelSize size) {
  if (size == TestModelSize::k8B) return {4096, 32, 32, 8, 14336, 131072, 500000.0f};
  if (size == TestModelSize::k32B) return {5120, 64, 40, 8, 27648, 131072, 1000000.0f};
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
  w.SetMetadata("general.name",
                GgufValue::String(o.size == TestModelSize::kTiny ? "segma-test-tiny"
                                  : o.size == TestModelSize::k8B ? "segma-test-8b"
                                                                 : "segma-test-32b"));
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
  // Quiet tokens get zero rows in the output head: their logit is 0 while the best random logit
  // is positive, so greedy decoding never emits them. Engines' output parsers then see complete
  // UTF-8 text (llama.cpp ends a stream with an error on a stray control token or broken UTF-8).
  std::vector<bool> quiet;
  if (Result<GgufFile> vocab = ReadGgufFile(o.vocab_path); vocab.ok()) quiet = QuietTokens(*vocab);
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
      if (t.name == "output.weight") {
        for (uint64_t r = 0; r < n_rows; ++r) {
          if (first_row + r < quiet.size() && quiet[first_row + r]) {
            std::fill_n(values.begin() + static_cast<ptrdiff_t>(r * row), row, 0.0f);
          }
        }
      }
    }
    return EncodeRow(values, t.type, out);
  };
  return w.WriteFile(o.path, fill);
}

}  // namespace segma::estimate
