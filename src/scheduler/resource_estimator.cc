#include "scheduler/resource_estimator.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace segma::scheduler {

Result<Requirement> ResourceEstimator::ForGpuLayers(int gpu_layers) const {
  ASSIGN_OR_RETURN(Requirement full, ForGpus(1));
  const int layers = total_layers();
  if (layers <= 0) return FailedPreconditionError("layer count unknown: no partial offload");
  const int on_cpu = layers - std::clamp(gpu_layers, 0, layers);
  const int64_t moved = static_cast<int64_t>(on_cpu) * layer_bytes();
  Requirement r = full;
  r.gpu_memory_fraction = 0;  // partial offload is llama.cpp's: it allocates what it needs
  r.vram_per_gpu = gpu_layers <= 0 ? 0 : std::max<int64_t>(full.vram_per_gpu - moved, 0);
  r.ram = full.ram + (gpu_layers <= 0 ? full.vram_per_gpu : moved);
  return r;
}

int ResourceEstimator::MaxGpuLayers(int64_t vram) const {
  Result<Requirement> full = ForGpus(1);
  const int layers = total_layers();
  const int64_t per_layer = layer_bytes();
  if (!full.ok() || layers <= 0 || per_layer <= 0) return 0;
  const int64_t fixed = full->vram_per_gpu - static_cast<int64_t>(layers) * per_layer;
  if (vram < fixed + per_layer) return 0;
  return static_cast<int>(std::min<int64_t>(layers, (vram - fixed) / per_layer));
}

FixedEstimator::Options FixedEstimator::ForParams(double params_b, int64_t context_length,
                                                  int sequences) {
  struct Arch {
    double params_b;
    int layers;
    int heads;
    int kv_heads;
    int head_dim;
  };
  // Shapes of common public models (Llama 3.2 1B, Llama 3.1 8B, Qwen2.5 14B/32B, Llama 3.1 70B
  // and 405B).
  static constexpr Arch kArchs[] = {{1, 16, 32, 8, 64},   {8, 32, 32, 8, 128},
                                    {14, 48, 40, 8, 128}, {32, 64, 40, 8, 128},
                                    {70, 80, 64, 8, 128}, {405, 126, 128, 8, 128}};
  const Arch* best = &kArchs[0];
  for (const Arch& a : kArchs) {
    if (std::abs(std::log(a.params_b / params_b)) < std::abs(std::log(best->params_b / params_b))) {
      best = &a;
    }
  }
  Options o;
  o.params_b = params_b;
  o.layers = best->layers;
  o.attention_heads = best->heads;
  o.context_length = context_length > 0 ? context_length : kTypicalContextTokens;
  o.sequences = std::max(1, sequences);
  const int64_t tokens = o.context_length * o.sequences;
  // K and V, fp16: 2 × layers × kv_heads × head_dim × 2 bytes per token.
  o.kv_cache_bytes = tokens * 2 * best->layers * best->kv_heads * best->head_dim * 2;
  return o;
}

FixedEstimator FixedEstimator::ForModel(const types::Model& m) {
  return FixedEstimator(
      ForParams(m.source.params_b, m.context_length,
                m.max_concurrent_sequences > 0 ? m.max_concurrent_sequences : kTargetSequences));
}

int64_t FixedEstimator::kv_bytes_per_sequence(int tp_size) const {
  if (options_.sequences <= 0 || tp_size < 1) return 0;
  const int64_t per_sequence = options_.kv_cache_bytes / options_.sequences;
  return (per_sequence + tp_size - 1) / tp_size;
}

int64_t FixedEstimator::weight_bytes() const {
  return static_cast<int64_t>(options_.params_b * 1e9 * options_.bytes_per_param);
}

int64_t FixedEstimator::layer_bytes() const {
  if (options_.layers <= 0) return 0;
  return (weight_bytes() + options_.kv_cache_bytes) / options_.layers;
}

Result<Requirement> FixedEstimator::ForGpus(int tp_size) const {
  if (tp_size < 1) return InvalidArgumentError("tensor-parallel size must be positive");
  if (options_.attention_heads > 0 && options_.attention_heads % tp_size != 0) {
    return InvalidArgumentError(fmt::format("tensor-parallel size {} does not divide {} heads",
                                            tp_size, options_.attention_heads));
  }
  Requirement r;
  r.vram_per_gpu = (weight_bytes() + options_.kv_cache_bytes + tp_size - 1) / tp_size +
                   options_.overhead_per_gpu;
  r.ram = options_.ram;
  r.gpu_memory_fraction = options_.gpu_memory_fraction;
  return r;
}

}  // namespace segma::scheduler
