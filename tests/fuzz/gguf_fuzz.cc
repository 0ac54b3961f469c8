// Fuzz target for the model-file readers of segma::estimate: GGUF, safetensors headers and
// indexes, config.json. Whatever parses is pushed through the estimator for every engine, so
// hostile dimensions also exercise its arithmetic (under UBSan).
//
// With clang: tests/fuzz/CMakeLists.txt builds `gguf_fuzz` with -fsanitize=fuzzer. With g++,
// gguf_fuzz_replay_test.cc calls LLVMFuzzerTestOneInput on a deterministic mutated corpus.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "scheduler/estimate/estimator.h"
#include "scheduler/estimate/gguf.h"
#include "scheduler/estimate/model_config.h"
#include "scheduler/estimate/model_shape.h"
#include "scheduler/estimate/safetensors.h"

namespace {

using namespace segma::estimate;  // NOLINT(build/namespaces): fuzz entry point only

void Exercise(const ModelShape& shape) {
  for (Engine engine : {Engine::kLlamaCpp, Engine::kVllm, Engine::kSglang, Engine::kTensorRtLlm,
                        Engine::kSimulator}) {
    for (int64_t parallel : {1, 4}) {
      auto e = Estimate(shape, {.engine = engine, .parallel = parallel, .flash_attention = false});
      if (!e.ok()) continue;
      for (int tp : {1, 3, 8}) {
        (void)e->vram_per_gpu(tp);
        (void)e->ClaimPerGpu(tp, uint64_t{80} << 30);
        (void)e->Fits(tp, uint64_t{24} << 30);
      }
      (void)e->MaxGpuLayers(uint64_t{8} << 30);
      (void)e->RamWithGpuLayers(e->n_layers / 2);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  for (bool require_data : {true, false}) {
    auto gguf = ParseGguf(bytes, {.require_tensor_data = require_data});
    if (!gguf.ok()) continue;
    auto shape = ShapeFromGguf(*gguf);
    if (shape.ok()) Exercise(*shape);
  }
  auto st = ParseSafetensorsHeader(bytes, size);
  (void)ParseSafetensorsHeader(bytes);
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)SafetensorsIndex::Parse(text);
  auto config = ParseModelConfig(text);
  if (config.ok()) {
    (void)CountParameters(*config);
    auto shape = ShapeFromConfig(*config, st.ok() ? &*st : nullptr);
    if (shape.ok()) Exercise(*shape);
  }
  return 0;
}
