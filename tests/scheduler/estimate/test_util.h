#pragma once

// Helpers shared by the estimate tests and the fuzz replay.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "scheduler/estimate/gguf.h"

namespace segma::estimate::testing {

// llama.cpp sources (models/ggml-vocab-*.gguf, build/bin/llama-server); SEGMA_LLAMA_CPP_DIR
// overrides the default cache location.
inline std::filesystem::path LlamaCppDir() {
  if (const char* d = std::getenv("SEGMA_LLAMA_CPP_DIR")) return d;
  return "/var/cache/segma/llama.cpp-3.21.1";
}
inline std::filesystem::path VocabPath() {
  return LlamaCppDir() / "src" / "models" / "ggml-vocab-llama-spm.gguf";
}

// Little-endian byte builder for hand-made (often broken) files.
class Bytes {
 public:
  template <typename T>
  Bytes& Put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    data_.insert(data_.end(), p, p + sizeof(T));
    return *this;
  }
  Bytes& Raw(std::string_view s) {
    data_.insert(data_.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& Str(std::string_view s) {
    Put<uint64_t>(s.size());
    return Raw(s);
  }
  Bytes& Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    Raw("GGUF");
    Put<uint32_t>(version);
    Put<uint64_t>(n_tensors);
    return Put<uint64_t>(n_kv);
  }
  Bytes& Pad(size_t n) {
    data_.resize(data_.size() + n, 0);
    return *this;
  }
  const std::vector<uint8_t>& data() const { return data_; }

 private:
  std::vector<uint8_t> data_;
};

// A small valid GGUF with every metadata value type (nested arrays included) and tensors of
// several ggml types, filled with a deterministic byte pattern.
inline GgufWriter SampleWriter() {
  GgufWriter w;
  w.SetMetadata("general.architecture", GgufValue::String("llama"));
  w.SetMetadata("u8", GgufValue::Uint8(200));
  w.SetMetadata("i8", GgufValue::Int8(-100));
  w.SetMetadata("u16", GgufValue::Uint16(60000));
  w.SetMetadata("i16", GgufValue::Int16(-30000));
  w.SetMetadata("u32", GgufValue::Uint32(4000000000u));
  w.SetMetadata("i32", GgufValue::Int32(-2000000000));
  w.SetMetadata("u64", GgufValue::Uint64(uint64_t{1} << 63));
  w.SetMetadata("i64", GgufValue::Int64(-(int64_t{1} << 62)));
  w.SetMetadata("f32", GgufValue::Float32(0.5f));
  w.SetMetadata("f64", GgufValue::Float64(-1.25));
  w.SetMetadata("bool", GgufValue::Bool(true));
  w.SetMetadata("str", GgufValue::String("héllo"));
  w.SetMetadata("strs", GgufValue::StringArray({"a", "", "ccc"}));
  const int32_t ints[] = {1, -2, 3};
  w.SetMetadata("ints", GgufValue::Int32Array(ints));
  w.SetMetadata("bools", GgufValue::RawArray(GgufValueType::kBool, {1, 0, 1}));
  w.SetMetadata("nested", GgufValue::NestedArray(
                              {GgufValue::Int32Array(ints), GgufValue::StringArray({"x"})}));
  w.SetMetadata("llama.block_count", GgufValue::Uint32(1));
  w.SetMetadata("llama.embedding_length", GgufValue::Uint32(32));
  w.SetMetadata("llama.attention.head_count", GgufValue::Uint32(2));
  w.SetMetadata("llama.attention.head_count_kv", GgufValue::Uint32(1));
  w.SetMetadata("llama.context_length", GgufValue::Uint32(128));
  w.SetMetadata("tokenizer.ggml.tokens", GgufValue::StringArray({"<s>", "a", "b", "c"}));
  (void)w.AddTensor("token_embd.weight", {32, 4}, GgmlType::kF16);
  (void)w.AddTensor("blk.0.attn_q.weight", {32, 3}, GgmlType::kQ8_0);
  (void)w.AddTensor("blk.0.attn_norm.weight", {32}, GgmlType::kF32);
  (void)w.AddTensor("output_norm.weight", {32}, GgmlType::kF32);
  return w;
}

inline Status PatternFill(const GgufTensorInfo& t, uint64_t first_row, uint64_t,
                          std::span<uint8_t> out) {
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<uint8_t>(i * 31 + first_row + t.name.size());
  }
  return OkStatus();
}

inline std::vector<uint8_t> SampleGguf() { return *SampleWriter().WriteToBuffer(PatternFill); }

// A small valid safetensors file: header + data.
inline std::vector<uint8_t> SampleSafetensors() {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("model.embed_tokens.weight":{"dtype":"BF16","shape":[4,8],"data_offsets":[0,64]},)"
      R"("model.layers.0.mlp.up_proj.weight":{"dtype":"F32","shape":[2,8],"data_offsets":[64,128]},)"
      R"("lm_head.weight":{"dtype":"F16","shape":[4,8],"data_offsets":[128,192]}})";
  Bytes b;
  b.Put<uint64_t>(header.size()).Raw(header).Pad(192);
  return b.data();
}

}  // namespace segma::estimate::testing
