#include "controllers/estimate_adapter.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "scheduler/estimate/gguf.h"
#include "scheduler/estimate/model_config.h"
#include "scheduler/estimate/model_shape.h"
#include "scheduler/estimate/safetensors.h"

namespace segma::controllers {

namespace {

Result<estimate::ModelShape> ShapeFromDirectory(const std::string& dir) {
  namespace fs = std::filesystem;
  ASSIGN_OR_RETURN(estimate::ModelConfig config, estimate::ReadModelConfig(dir + "/config.json"));
  std::error_code ec;
  if (fs::exists(dir + "/model.safetensors.index.json", ec)) {
    ASSIGN_OR_RETURN(estimate::SafetensorsHeader weights,
                     estimate::ReadShardedSafetensors(dir + "/model.safetensors.index.json"));
    return estimate::ShapeFromConfig(config, &weights);
  }
  if (fs::exists(dir + "/model.safetensors", ec)) {
    ASSIGN_OR_RETURN(estimate::SafetensorsHeader weights,
                     estimate::ReadSafetensorsFile(dir + "/model.safetensors"));
    return estimate::ShapeFromConfig(config, &weights);
  }
  return estimate::ShapeFromConfig(config);
}

}  // namespace

Result<scheduler::Requirement> EstimateAdapter::ForGpus(int tp_size) const {
  if (tp_size < 1) return InvalidArgumentError("tensor-parallel size must be positive");
  if (attention_heads_ > 0 && attention_heads_ % tp_size != 0) {
    return InvalidArgumentError(
        fmt::format("tensor-parallel size {} does not divide {} heads", tp_size, attention_heads_));
  }
  scheduler::Requirement r;
  r.vram_per_gpu = static_cast<int64_t>(estimate_.vram_per_gpu(tp_size));
  r.ram = static_cast<int64_t>(estimate_.ram_bytes);
  if (estimate_.engine == estimate::Engine::kVllm ||
      estimate_.engine == estimate::Engine::kSglang) {
    r.gpu_memory_fraction = estimate_.gpu_memory_fraction;
  }
  return r;
}

Result<scheduler::Requirement> EstimateAdapter::ForGpuLayers(int gpu_layers) const {
  if (estimate_.n_layers <= 0) {
    return FailedPreconditionError("layer count unknown: no partial offload");
  }
  const int64_t n = std::clamp<int64_t>(gpu_layers, 0, total_layers());
  scheduler::Requirement r;
  r.vram_per_gpu = n == 0 ? 0 : static_cast<int64_t>(estimate_.VramWithGpuLayers(n));
  r.ram = static_cast<int64_t>(estimate_.RamWithGpuLayers(n));
  return r;
}

int EstimateAdapter::MaxGpuLayers(int64_t vram) const {
  if (vram <= 0) return 0;
  const int64_t n = estimate_.MaxGpuLayers(static_cast<uint64_t>(vram));
  return static_cast<int>(std::clamp<int64_t>(n, 0, total_layers()));
}

int64_t EstimateAdapter::kv_bytes_per_sequence(int tp_size) const {
  const uint64_t one =
      estimate_.kv_bytes_per_token * static_cast<uint64_t>(estimate_.context_length);
  return static_cast<int64_t>(estimate_.KvPerGpu(one, tp_size));
}

int64_t EstimateAdapter::layer_bytes() const {
  if (estimate_.n_layers <= 0) return 0;
  return static_cast<int64_t>(estimate_.layer_weight_bytes +
                              estimate_.kv_cache_bytes / estimate_.n_layers);
}

types::ModelFormat FormatOnServer(const types::Model& model) {
  return types::FormatOf(
      model.source, model.source.type == types::SourceType::kLocalPath ? model.source.path : "");
}

Result<std::unique_ptr<EstimateAdapter>> EstimatorForModel(const types::Model& model,
                                                           const types::EngineChoice& engine) {
  namespace fs = std::filesystem;
  const types::ModelSource& src = model.source;
  const bool local = src.type == types::SourceType::kLocalPath;
  estimate::ModelShape shape;
  if (src.type == types::SourceType::kSimulated) {
    ASSIGN_OR_RETURN(shape, estimate::FromParamsB(src.params_b));
  } else if (local && engine.format == types::ModelFormat::kGguf) {
    estimate::GgufParseOptions options;
    options.require_tensor_data = false;
    ASSIGN_OR_RETURN(estimate::GgufFile gguf, estimate::ReadGgufFile(src.path, options));
    ASSIGN_OR_RETURN(shape, estimate::ShapeFromGguf(gguf));
  } else if (std::error_code ec; local && engine.format == types::ModelFormat::kSafetensors &&
                                 fs::exists(src.path + "/config.json", ec)) {
    ASSIGN_OR_RETURN(shape, ShapeFromDirectory(src.path));
  } else if (src.params_b > 0) {
    ASSIGN_OR_RETURN(shape, estimate::FromParamsB(src.params_b));
  } else {
    return FailedPreconditionError(
        "cannot estimate resources before the model files are available");
  }
  estimate::EstimateOptions options;
  if (Result<estimate::Engine> e = estimate::ParseEngine(engine.backend); e.ok()) {
    options.engine = *e;
  } else if (src.type == types::SourceType::kSimulated) {
    options.engine = estimate::Engine::kSimulator;
  } else {
    options.engine = engine.format == types::ModelFormat::kGguf ? estimate::Engine::kLlamaCpp
                                                                : estimate::Engine::kVllm;
  }
  options.context_length = model.context_length;
  options.parallel = model.max_concurrent_sequences > 0 ? model.max_concurrent_sequences
                                                        : scheduler::kTargetSequences;
  if (model.context_length == 0 && model.max_concurrent_sequences == 0) {
    // The target is sized at a typical context, not at the longest the model was trained for.
    options.context_length =
        shape.max_context > 0
            ? std::min<int64_t>(shape.max_context, scheduler::kTypicalContextTokens)
            : scheduler::kTypicalContextTokens;
  }
  ASSIGN_OR_RETURN(estimate::ResourceEstimate est, estimate::Estimate(shape, options));
  return std::make_unique<EstimateAdapter>(est, static_cast<int>(shape.n_heads));
}

}  // namespace segma::controllers
