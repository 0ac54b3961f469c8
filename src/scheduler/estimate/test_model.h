#pragma once

// Random-weight llama-architecture GGUF models with a real vocabulary, for running real engines
// (llama.cpp's llama-server) in tests without downloading weights.

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "scheduler/estimate/gguf.h"

namespace segma::estimate {

enum class TestModelSize {
  kTiny,  // n_embd 256, 2 layers, 4 heads, 2 KV heads, ff 512 (~35 MB with a 32k vocab, f16)
  k8B,    // Llama-3.1-8B layout: 32 layers, 4096 embd, 32 heads, 8 KV heads, ff 14336
  k32B,   // a 32B-class layout (Qwen2.5-32B's dimensions as a llama model): 64 layers, 5120
          // embd, 40 heads, 8 KV heads, ff 27648; 32.5 B parameters with a 128k vocabulary
};

// "tiny", "7b" or "8b" (7b is the same Llama-3.1-8B layout), "32b". kInvalidArgument otherwise.
Result<TestModelSize> ParseTestModelSize(std::string_view name);

struct TestModelDims {
  int64_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx;
  float rope_freq_base;
};
TestModelDims DimsFor(TestModelSize size);

struct TestModelOptions {
  std::string path;        // output file, truncated
  std::string vocab_path;  // a vocab-only GGUF (llama.cpp's models/ggml-vocab-*.gguf)
  TestModelSize size = TestModelSize::kTiny;
  GgmlType type = GgmlType::kF16;  // of 2-D weights: F32, F16, BF16 or Q8_0; norms stay F32
  uint64_t seed = 1;
  float stddev = 0.02f;  // weights ~ N(0, stddev²) (tiny) or uniform of that sd (8b); norms are 1
  int64_t context_length = 0;  // llama.context_length; 0: 2048 (tiny) or 131072 (8b)
};

// Writes a llama-architecture GGUF v3 model with llama.cpp's tensor names and metadata keys and
// all `tokenizer.*` keys of the vocab file; the vocabulary size is that of the vocab file.
// Deterministic for a given seed. kNotFound / kInvalidArgument if the vocab file is missing or not
// a GGUF with tokenizer.ggml.tokens, kInvalidArgument for an unsupported type, kUnavailable if
// the output cannot be written. Memory use is a few MiB whatever the model size.
Status WriteTestModel(const TestModelOptions& options);

// The metadata and tensor table WriteTestModel writes (`options.path` is not used), e.g. to size
// the 8B layout without writing 16 GB. Errors as WriteTestModel.
Result<GgufWriter> BuildTestModel(const TestModelOptions& options);

}  // namespace segma::estimate
