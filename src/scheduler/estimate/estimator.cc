#include "scheduler/estimate/estimator.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <fmt/format.h>

namespace segma::estimate {
namespace {

// Per-GPU memory outside the engine's own accounting. Sources in docs/estimation.md.
constexpr uint64_t kCudaContextBytes = 512 * kMiB;    // CUDA context + cuBLAS workspace
constexpr uint64_t kTorchNonTorchBytes = 768 * kMiB;  // CUDA context, NCCL, allocator slack
constexpr uint64_t kCudaGraphBytes = 512 * kMiB;      // vLLM/SGLang graph capture
constexpr uint64_t kSimulatorOverheadBytes = 256 * kMiB;
// Host memory of the engine process itself.
constexpr uint64_t kLlamaCppRamBase = 150 * kMiB;  // GPUStack's platform footprint for llama-box
constexpr uint64_t kPythonEngineRam = 4 * kGiB;    // Python, torch, tokenizer, worker processes
constexpr uint64_t kSimulatorRam = 256 * kMiB;

constexpr int64_t kLlamaCppDefaultContext = 8192;
constexpr int64_t kMaxContext = int64_t{1} << 24;
constexpr int64_t kMaxParallel = 1 << 16;

bool TakesFraction(Engine e) {
  return e == Engine::kVllm || e == Engine::kSglang || e == Engine::kTensorRtLlm;
}

uint64_t ToBytes(double x) {
  if (!(x > 0)) return 0;
  if (x >= 0x1p62) return uint64_t{1} << 62;
  return static_cast<uint64_t>(std::llround(x));
}

uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// Activations of one forward pass, per GPU.
uint64_t ComputeBytes(const ModelShape& s, Engine engine, int64_t batch_tokens, int64_t kv_cells,
                      bool flash_attention) {
  const double h = static_cast<double>(s.hidden_size);
  const double vocab = static_cast<double>(s.vocab_size);
  const double ffn =
      s.n_experts > 0
          ? static_cast<double>(s.expert_ffn_size * std::max<int64_t>(s.n_experts_used, 1))
          : static_cast<double>(s.ffn_size);
  const double bt = static_cast<double>(batch_tokens);
  switch (engine) {
    case Engine::kLlamaCpp: {
      // ggml's graph allocator reuses buffers, so the compute buffer is about its largest
      // tensor plus a few hidden-state sized ones: the f32 logits of one ubatch, the FFN
      // intermediates, or without flash attention the f32 KQ matrix over the whole cache.
      const double logits = bt * (s.encoder_only ? h : vocab) * 4;
      const double ffn_act = bt * (3 * ffn + 2 * h) * 4;
      const double kq =
          flash_attention ? 0
                          : static_cast<double>(s.n_heads) * bt * static_cast<double>(kv_cells) * 4;
      return ToBytes(std::max({logits, ffn_act, kq}) + bt * h * 4 * 4);
    }
    case Engine::kVllm:
    case Engine::kSglang:
    case Engine::kTensorRtLlm: {
      // Profile-run peak in the model dtype: gate/up output, residual stream and QKV for
      // max_num_batched_tokens, plus f32 logits and probabilities for 256 sampled sequences.
      const double qkv = static_cast<double>((s.n_heads + 2 * s.n_kv_heads) * s.head_dim);
      const double act = bt * (2 * ffn + 4 * h + qkv) * 2;
      const double sampler = s.encoder_only ? 0 : 256 * vocab * 4 * 2;
      return ToBytes(act + sampler);
    }
    case Engine::kSimulator:
      return 0;
  }
  return 0;
}

}  // namespace

Result<Engine> ParseEngine(std::string_view name) {
  if (name == "llama.cpp" || name == "llama-cpp" || name == "llamacpp") return Engine::kLlamaCpp;
  if (name == "vllm") return Engine::kVllm;
  if (name == "sglang") return Engine::kSglang;
  if (name == "tensorrt-llm" || name == "trtllm") return Engine::kTensorRtLlm;
  if (name == "simulator") return Engine::kSimulator;
  return InvalidArgumentError(fmt::format("no resource estimate for backend '{}'", name));
}

std::string_view EngineName(Engine engine) {
  switch (engine) {
    case Engine::kLlamaCpp:
      return "llama.cpp";
    case Engine::kVllm:
      return "vllm";
    case Engine::kSglang:
      return "sglang";
    case Engine::kTensorRtLlm:
      return "tensorrt-llm";
    case Engine::kSimulator:
      return "simulator";
  }
  return "unknown";
}

Result<double> KvCacheBytesPerElement(std::string_view t) {
  static constexpr std::pair<std::string_view, double> kTypes[] = {
      {"auto", 2.0},       {"f16", 2.0},          {"fp16", 2.0},       {"bf16", 2.0},
      {"f32", 4.0},        {"fp8", 1.0},          {"fp8_e4m3", 1.0},   {"fp8_e5m2", 1.0},
      {"q8_0", 34.0 / 32}, {"q5_0", 22.0 / 32},   {"q5_1", 24.0 / 32}, {"q4_0", 18.0 / 32},
      {"q4_1", 20.0 / 32}, {"iq4_nl", 18.0 / 32},
  };
  for (const auto& [name, bytes] : kTypes) {
    if (name == t) return bytes;
  }
  return InvalidArgumentError(fmt::format("unknown KV cache type '{}'", t));
}

Result<ResourceEstimate> Estimate(const ModelShape& shape, const EstimateOptions& opt) {
  RETURN_IF_ERROR(shape.Validate());
  ASSIGN_OR_RETURN(double kv_elem_bytes, KvCacheBytesPerElement(opt.kv_cache_type));
  if (opt.parallel < 1 || opt.parallel > kMaxParallel) {
    return InvalidArgumentError(fmt::format("parallel must be in [1, {}]", kMaxParallel));
  }
  if (opt.context_length < 0 || opt.context_length > kMaxContext) {
    return InvalidArgumentError(fmt::format("context_length must be in [0, {}]", kMaxContext));
  }
  if (opt.batch_tokens < 0 || opt.batch_tokens > kMaxContext) {
    return InvalidArgumentError("batch_tokens out of range");
  }
  if (!(opt.gpu_memory_fraction >= 0 && opt.gpu_memory_fraction <= 1)) {
    return InvalidArgumentError("gpu_memory_fraction must be in (0, 1]");
  }

  ResourceEstimate e;
  e.engine = opt.engine;
  e.parallel = opt.parallel;
  e.n_layers = shape.n_layers;
  e.n_kv_heads = shape.n_kv_heads;

  const bool vllm_like = TakesFraction(opt.engine);
  if (opt.context_length > 0) {
    e.context_length = opt.context_length;
    if (vllm_like && shape.max_context > 0 && opt.context_length > shape.max_context) {
      return InvalidArgumentError(fmt::format(
          "context_length {} exceeds the model's max_position_embeddings {} ({} refuses it)",
          opt.context_length, shape.max_context, EngineName(opt.engine)));
    }
  } else if (vllm_like) {
    e.context_length = shape.max_context > 0 ? shape.max_context : kLlamaCppDefaultContext;
  } else {
    e.context_length = shape.max_context > 0 ? std::min(shape.max_context, kLlamaCppDefaultContext)
                                             : kLlamaCppDefaultContext;
  }
  e.context_length = std::min(e.context_length, kMaxContext);

  // Weights as the engine holds them. vLLM-style engines load fp32 checkpoints as fp16
  // (dtype "auto"); llama.cpp keeps token embeddings in host memory and puts the LM head (a copy
  // of the embeddings when tied) on the GPU.
  double weight_scale = 1.0;
  if (vllm_like && shape.source != "gguf" && shape.weight_bytes_per_param >= 3.5)
    weight_scale = 0.5;
  e.parameter_count = shape.parameter_count;
  e.weight_bytes = ToBytes(static_cast<double>(shape.weight_bytes) * weight_scale);
  e.layer_weight_bytes = ToBytes(static_cast<double>(shape.layer_weight_bytes) * weight_scale);
  e.input_embedding_bytes =
      ToBytes(static_cast<double>(shape.input_embedding_bytes) * weight_scale);
  e.output_head_bytes = ToBytes(static_cast<double>(shape.output_head_bytes) * weight_scale);
  if (opt.engine == Engine::kLlamaCpp && shape.tied_embeddings && shape.source != "gguf") {
    e.output_head_bytes += e.input_embedding_bytes;  // ShapeFromGguf already counts the copy
  }

  e.kv_bytes_per_token = shape.KvBytesPerToken(kv_elem_bytes);
  const int64_t tokens = e.context_length * e.parallel;
  if (static_cast<double>(e.kv_bytes_per_token) * static_cast<double>(tokens) >
      static_cast<double>(kMaxModelBytes)) {
    return InvalidArgumentError(
        fmt::format("a KV cache for {} tokens is implausibly large", tokens));
  }
  e.kv_cache_bytes = e.kv_bytes_per_token * static_cast<uint64_t>(tokens);

  int64_t batch = opt.batch_tokens;
  if (batch == 0) batch = opt.engine == Engine::kLlamaCpp ? 512 : 8192;
  e.compute_bytes = ComputeBytes(shape, opt.engine, batch, tokens, opt.flash_attention);

  switch (opt.engine) {
    case Engine::kLlamaCpp:
      e.overhead_bytes = kCudaContextBytes;
      break;
    case Engine::kVllm:
    case Engine::kSglang:
      e.overhead_bytes = kTorchNonTorchBytes + (opt.cuda_graphs ? kCudaGraphBytes : 0);
      break;
    case Engine::kTensorRtLlm:
      e.overhead_bytes = kTorchNonTorchBytes;
      break;
    case Engine::kSimulator:
      e.overhead_bytes = kSimulatorOverheadBytes;
      break;
  }
  if (vllm_like) {
    const double dflt = opt.engine == Engine::kSglang ? 0.88 : 0.9;
    e.gpu_memory_fraction = opt.gpu_memory_fraction > 0 ? opt.gpu_memory_fraction : dflt;
  }

  switch (opt.engine) {
    case Engine::kLlamaCpp:
      e.ram_bytes = e.RamWithGpuLayers(e.n_layers + 1);
      break;
    case Engine::kSimulator:
      e.ram_bytes = kSimulatorRam;
      break;
    default:
      e.ram_bytes = kPythonEngineRam;
      break;
  }
  return e;
}

uint64_t ResourceEstimate::vram_per_gpu(int tp_size) const {
  const uint64_t tp = static_cast<uint64_t>(std::max(tp_size, 1));
  uint64_t weights = 0;
  if (engine == Engine::kLlamaCpp || engine == Engine::kSimulator) {
    // Layer split: blocks and their KV spread evenly; the head lands on one GPU, so count it
    // on every GPU to stay safe.
    weights = CeilDiv(static_cast<uint64_t>(n_layers) * layer_weight_bytes, tp) + output_head_bytes;
    if (engine == Engine::kSimulator) weights = CeilDiv(weight_bytes, tp);
  } else {
    weights = CeilDiv(weight_bytes, tp);
  }
  return weights + KvPerGpu(kv_cache_bytes, tp_size) + compute_bytes + overhead_bytes;
}

uint64_t ResourceEstimate::KvPerGpu(uint64_t kv_bytes, int tp_size) const {
  const uint64_t tp = static_cast<uint64_t>(std::max(tp_size, 1));
  if (engine == Engine::kLlamaCpp || engine == Engine::kSimulator) return CeilDiv(kv_bytes, tp);
  // Tensor parallel: KV heads split, but replicated when fewer than GPUs.
  const uint64_t heads = static_cast<uint64_t>(std::max<int64_t>(n_kv_heads, 1));
  const uint64_t heads_per_gpu = CeilDiv(heads, tp);
  return ToBytes(std::ceil(static_cast<double>(kv_bytes) * static_cast<double>(heads_per_gpu) /
                           static_cast<double>(heads)));
}

uint64_t ResourceEstimate::ClaimPerGpu(int tp_size, uint64_t gpu_total_bytes) const {
  const uint64_t need = vram_per_gpu(tp_size);
  if (gpu_memory_fraction <= 0 || gpu_total_bytes == 0) return need;
  if (engine == Engine::kTensorRtLlm) {
    // KV cache takes the fraction of what is free once weights and buffers are in.
    const uint64_t fixed =
        need - CeilDiv(kv_cache_bytes, static_cast<uint64_t>(std::max(tp_size, 1)));
    if (fixed >= gpu_total_bytes) return need;
    return std::max(
        need, fixed + ToBytes(gpu_memory_fraction * static_cast<double>(gpu_total_bytes - fixed)));
  }
  return std::max(need, ToBytes(gpu_memory_fraction * static_cast<double>(gpu_total_bytes)));
}

bool ResourceEstimate::Fits(int tp_size, uint64_t gpu_total_bytes) const {
  const uint64_t need = vram_per_gpu(tp_size);
  if (engine == Engine::kVllm || engine == Engine::kSglang) {
    return static_cast<double>(need) <= gpu_memory_fraction * static_cast<double>(gpu_total_bytes);
  }
  return need <= gpu_total_bytes;
}

uint64_t ResourceEstimate::VramWithGpuLayers(int64_t n_gpu_layers) const {
  const int64_t n = std::clamp<int64_t>(n_gpu_layers, 0, n_layers + 1);
  if (n == 0) return 0;
  // llama.cpp offloads the output layer first, then the last n - 1 blocks.
  const uint64_t gpu_blocks = static_cast<uint64_t>(n - 1);
  const uint64_t kv_per_layer = kv_cache_bytes / static_cast<uint64_t>(n_layers);
  return gpu_blocks * (layer_weight_bytes + kv_per_layer) + output_head_bytes + compute_bytes +
         overhead_bytes;
}

uint64_t ResourceEstimate::RamWithGpuLayers(int64_t n_gpu_layers) const {
  const int64_t n = std::clamp<int64_t>(n_gpu_layers, 0, n_layers + 1);
  const uint64_t cpu_blocks = static_cast<uint64_t>(n_layers - std::max<int64_t>(n - 1, 0));
  const uint64_t kv_per_layer = kv_cache_bytes / static_cast<uint64_t>(n_layers);
  uint64_t ram =
      kLlamaCppRamBase + input_embedding_bytes + cpu_blocks * (layer_weight_bytes + kv_per_layer);
  if (cpu_blocks > 0) ram += compute_bytes;  // the CPU runs the blocks left on it
  if (n == 0) ram += output_head_bytes;
  return ram;
}

int64_t ResourceEstimate::MaxGpuLayers(uint64_t vram_bytes) const {
  for (int64_t n = n_layers + 1; n > 0; --n) {
    if (VramWithGpuLayers(n) <= vram_bytes) return n;
  }
  return 0;
}

}  // namespace segma::estimate
