#include "scheduler/estimate/estimator.h"

#include <cmath>

#include <gtest/gtest.h>

#include "scheduler/estimate/model_config.h"
#include "scheduler/estimate/model_shape.h"

namespace segma::estimate {
namespace {

constexpr double kGB = 1e9;

ModelShape Shape(std::string_view name) {
  auto c = ReadModelConfig(std::string(SEGMA_ESTIMATE_FIXTURES_DIR) + "/" + std::string(name) +
                           ".config.json");
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  auto s = ShapeFromConfig(*c);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return *s;
}

ResourceEstimate Est(const ModelShape& s, EstimateOptions o) {
  auto e = Estimate(s, o);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return *e;
}

double GiB(uint64_t b) { return static_cast<double>(b) / static_cast<double>(kGiB); }

TEST(ModelShapeTest, WeightsOfFixtures) {
  // bf16 checkpoints: 2 bytes a parameter; published sizes of the safetensors shards.
  EXPECT_NEAR(Shape("Llama-3.1-8B").weight_bytes / kGB, 16.06, 0.1);
  EXPECT_NEAR(Shape("Llama-3.1-70B").weight_bytes / kGB, 141.1, 1.0);
  EXPECT_NEAR(Shape("Mixtral-8x7B-v0.1").weight_bytes / kGB, 93.4, 0.5);
  EXPECT_NEAR(Shape("Qwen2.5-7B-Instruct").weight_bytes / kGB, 15.23, 0.15);
  EXPECT_NEAR(Shape("Qwen2.5-72B-Instruct").weight_bytes / kGB, 145.4, 1.5);
  EXPECT_NEAR(Shape("bge-m3").weight_bytes / kGB, 2.27, 0.03);  // float32 checkpoint
}

TEST(ModelShapeTest, LayerSplitAddsUp) {
  for (const char* name : {"Llama-3.1-8B", "Mixtral-8x7B-v0.1", "bge-m3"}) {
    ModelShape s = Shape(name);
    const double parts = static_cast<double>(s.input_embedding_bytes + s.output_head_bytes +
                                             s.layer_weight_bytes * s.n_layers);
    EXPECT_NEAR(parts / static_cast<double>(s.weight_bytes), 1.0, 1e-6) << name;
  }
}

TEST(ModelShapeTest, KvCachePerToken) {
  // 2 (K and V) × 32 layers × 8 KV heads × 128 head_dim × 2 bytes = 128 KiB.
  EXPECT_EQ(Shape("Llama-3.1-8B").KvBytesPerToken(2), 128u * 1024);
  EXPECT_EQ(Shape("Llama-3.1-70B").KvBytesPerToken(2), 320u * 1024);
  EXPECT_EQ(Shape("Qwen2.5-7B-Instruct").KvBytesPerToken(2), 56u * 1024);
  EXPECT_EQ(Shape("Mixtral-8x7B-v0.1").KvBytesPerToken(2), 128u * 1024);
  EXPECT_EQ(Shape("bge-m3").KvBytesPerToken(2), 0u);
}

TEST(ModelShapeTest, FromParamsB) {
  for (double p : {0.01, 0.5, 1.0, 8.0, 13.0, 70.0, 405.0}) {
    auto s = FromParamsB(p);
    ASSERT_TRUE(s.ok()) << p;
    EXPECT_EQ(s->parameter_count, static_cast<uint64_t>(std::llround(p * 1e9)));
    EXPECT_EQ(s->weight_bytes, 2 * s->parameter_count);
    const double parts = static_cast<double>(s->input_embedding_bytes + s->output_head_bytes +
                                             s->layer_weight_bytes * s->n_layers);
    EXPECT_NEAR(parts / static_cast<double>(s->weight_bytes), 1.0, 1e-3) << p;
  }
  auto s8 = FromParamsB(8);
  EXPECT_EQ(s8->hidden_size, 4096);
  EXPECT_EQ(s8->n_layers, 32);  // Llama-3.1-8B itself
  EXPECT_NEAR(FromParamsB(70.6)->n_layers, 80, 1);
  EXPECT_EQ(FromParamsB(405)->n_layers, 126);  // Llama-3.1-405B
  for (double bad : {0.0, -1.0, 1e9, std::nan("")}) EXPECT_FALSE(FromParamsB(bad).ok()) << bad;
}

TEST(EstimatorTest, LlamaCppKvAndComputeMatchItsLogs) {
  // llama.cpp logs for Llama-3-8B at -c 8192: "KV self size = 1024.00 MiB" (f16 K and V), and a
  // CUDA compute buffer of ~258.5 MiB with flash attention (512-token ubatch, f32 logits).
  ResourceEstimate e = Est(Shape("Llama-3.1-8B"), {.engine = Engine::kLlamaCpp});
  EXPECT_EQ(e.context_length, 8192);
  EXPECT_EQ(e.kv_cache_bytes, 1024 * kMiB);
  EXPECT_NEAR(e.compute_bytes / static_cast<double>(kMiB), 258.5, 258.5 * 0.15);
  // q8_0 cache: 34/32 bytes an element; q4_0: 18/32.
  EXPECT_EQ(Est(Shape("Llama-3.1-8B"), {.kv_cache_type = "q8_0"}).kv_cache_bytes, 544 * kMiB);
  EXPECT_EQ(Est(Shape("Llama-3.1-8B"), {.kv_cache_type = "q4_0"}).kv_cache_bytes, 288 * kMiB);
  // Token embeddings stay in RAM; everything else is on the GPU.
  EXPECT_GT(e.ram_bytes, e.input_embedding_bytes);
  const uint64_t gpu_weights = e.weight_bytes - e.input_embedding_bytes;
  EXPECT_EQ(e.vram_per_gpu(1), gpu_weights + e.kv_cache_bytes + e.compute_bytes + e.overhead_bytes);
  // Parallel sequences multiply the cache.
  EXPECT_EQ(Est(Shape("Llama-3.1-8B"), {.parallel = 4}).kv_cache_bytes, 4096 * kMiB);
  // Without flash attention the KQ matrix over the cache dominates.
  EXPECT_GT(
      Est(Shape("Llama-3.1-8B"), {.context_length = 32768, .flash_attention = false}).compute_bytes,
      2 * kGiB);
}

TEST(EstimatorTest, LlamaCppPartialOffload) {
  ResourceEstimate e = Est(Shape("Llama-3.1-8B"), {.engine = Engine::kLlamaCpp});
  EXPECT_EQ(e.VramWithGpuLayers(0), 0u);
  EXPECT_EQ(e.VramWithGpuLayers(33), e.vram_per_gpu(1));
  EXPECT_EQ(e.VramWithGpuLayers(99), e.vram_per_gpu(1));
  EXPECT_EQ(e.RamWithGpuLayers(33), e.ram_bytes);
  uint64_t prev_vram = e.VramWithGpuLayers(0);
  uint64_t prev_ram = e.RamWithGpuLayers(0);
  for (int64_t n = 1; n <= 33; ++n) {
    EXPECT_GT(e.VramWithGpuLayers(n), prev_vram) << n;
    EXPECT_LT(e.RamWithGpuLayers(n), prev_ram) << n;
    prev_vram = e.VramWithGpuLayers(n);
    prev_ram = e.RamWithGpuLayers(n);
  }
  // llama.cpp's own count (llama-model.cpp load_tensors): -ngl 1 is the output layer alone,
  // each further layer one more block, -ngl 32 leaves one block (and its cache) on the CPU.
  const uint64_t block = e.layer_weight_bytes + e.kv_cache_bytes / 32;
  EXPECT_EQ(e.VramWithGpuLayers(1), e.output_head_bytes + e.compute_bytes + e.overhead_bytes);
  EXPECT_EQ(e.VramWithGpuLayers(33) - e.VramWithGpuLayers(32), block);
  // A block left on the CPU brings the CPU's compute buffer; CPU only, the output layer too.
  EXPECT_EQ(e.RamWithGpuLayers(32), e.ram_bytes + block + e.compute_bytes);
  EXPECT_EQ(e.RamWithGpuLayers(0), e.RamWithGpuLayers(1) + e.output_head_bytes);
  // bf16 8B on an 8 GiB card: about a third of the layers (each ~0.44 GB + 32 MiB of KV).
  const int64_t n = e.MaxGpuLayers(8 * kGiB);
  EXPECT_GE(n, 10);
  EXPECT_LE(n, 18);
  EXPECT_LE(e.VramWithGpuLayers(n), 8 * kGiB);
  EXPECT_GT(e.VramWithGpuLayers(n + 1), 8 * kGiB);
  EXPECT_EQ(e.MaxGpuLayers(80 * kGiB), 33);
  EXPECT_EQ(e.MaxGpuLayers(100 * kMiB), 0);
}

TEST(EstimatorTest, VllmLlama8BMatchesItsStartupLog) {
  // vLLM on one H100 80GB (79.2 GiB visible), gpu_memory_utilization 0.9, max_model_len 131072:
  // "Loading model weights took 14.99 GiB", KV cache ~54-56 GiB, "Maximum concurrency for
  // 131072 tokens per request: ~3.4x".
  ResourceEstimate e = Est(Shape("Llama-3.1-8B"), {.engine = Engine::kVllm});
  EXPECT_EQ(e.context_length, 131072);
  EXPECT_NEAR(GiB(e.weight_bytes), 14.96, 0.05);
  EXPECT_EQ(e.kv_cache_bytes, 16 * kGiB);
  const uint64_t h100 = static_cast<uint64_t>(79.2 * kGiB);
  EXPECT_TRUE(e.Fits(1, h100));
  EXPECT_EQ(e.ClaimPerGpu(1, h100), static_cast<uint64_t>(std::llround(0.9 * h100)));
  const double kv_pool = 0.9 * GiB(h100) - GiB(e.weight_bytes + e.compute_bytes + e.overhead_bytes);
  EXPECT_NEAR(kv_pool / 16.0, 3.4, 0.25);  // concurrency at 131072 tokens
  // The familiar failure on 24 GB cards: the KV cache for one 128k sequence does not fit.
  EXPECT_FALSE(e.Fits(1, 24 * kGiB));
  EXPECT_TRUE(Est(Shape("Llama-3.1-8B"), {.engine = Engine::kVllm, .context_length = 8192})
                  .Fits(1, 24 * kGiB));
  // Lowering gpu_memory_utilization lowers the claim until the need no longer fits (#4262).
  ResourceEstimate low =
      Est(Shape("Llama-3.1-8B"),
          {.engine = Engine::kVllm, .context_length = 8192, .gpu_memory_fraction = 0.3});
  EXPECT_TRUE(low.Fits(1, h100));
  EXPECT_FALSE(low.Fits(1, 40 * kGiB));
}

TEST(EstimatorTest, TensorParallel) {
  // 70B bf16 (65.7 GiB of weights a GPU at tp 2): 2 × 80 GB only with a short context, the full
  // 128k context needs 4 × 80 GB.
  ResourceEstimate e =
      Est(Shape("Llama-3.1-70B"), {.engine = Engine::kVllm, .context_length = 8192});
  const uint64_t h100 = static_cast<uint64_t>(79.2 * kGiB);
  EXPECT_FALSE(e.Fits(1, h100));
  EXPECT_TRUE(e.Fits(2, h100));
  EXPECT_TRUE(e.Fits(4, h100));
  ResourceEstimate full = Est(Shape("Llama-3.1-70B"), {.engine = Engine::kVllm});
  EXPECT_FALSE(full.Fits(2, h100));
  EXPECT_TRUE(full.Fits(4, h100));
  EXPECT_NEAR(GiB(e.vram_per_gpu(4) - e.compute_bytes - e.overhead_bytes),
              GiB(e.weight_bytes) / 4 + GiB(e.kv_cache_bytes) / 4, 0.01);
  // 8 KV heads over 16 GPUs: each GPU keeps one whole head, so KV stops shrinking at tp 8.
  const uint64_t kv16 =
      e.vram_per_gpu(16) - e.weight_bytes / 16 - e.compute_bytes - e.overhead_bytes;
  EXPECT_NEAR(static_cast<double>(kv16), static_cast<double>(e.kv_cache_bytes) / 8, 16.0);
  EXPECT_EQ(e.vram_per_gpu(0), e.vram_per_gpu(1));
  // Mixtral bf16 needs 2 × 80 GB.
  ResourceEstimate m =
      Est(Shape("Mixtral-8x7B-v0.1"), {.engine = Engine::kVllm, .context_length = 8192});
  EXPECT_FALSE(m.Fits(1, h100));
  EXPECT_TRUE(m.Fits(2, h100));
}

TEST(EstimatorTest, EnginesDiffer) {
  ModelShape s = Shape("Qwen2.5-7B-Instruct");
  const uint64_t h100 = static_cast<uint64_t>(79.2 * kGiB);
  ResourceEstimate sg = Est(s, {.engine = Engine::kSglang});
  EXPECT_DOUBLE_EQ(sg.gpu_memory_fraction, 0.88);
  EXPECT_EQ(sg.ClaimPerGpu(1, h100), static_cast<uint64_t>(std::llround(0.88 * h100)));
  ResourceEstimate trt = Est(s, {.engine = Engine::kTensorRtLlm});
  EXPECT_GT(trt.ClaimPerGpu(1, h100), trt.vram_per_gpu(1));
  EXPECT_LT(trt.ClaimPerGpu(1, h100), h100);
  ResourceEstimate sim = Est(s, {.engine = Engine::kSimulator});
  EXPECT_EQ(sim.ClaimPerGpu(1, h100), sim.vram_per_gpu(1));
  EXPECT_EQ(sim.compute_bytes, 0u);
  ResourceEstimate llama = Est(s, {.engine = Engine::kLlamaCpp});
  EXPECT_EQ(llama.ClaimPerGpu(1, h100), llama.vram_per_gpu(1));
  EXPECT_EQ(llama.gpu_memory_fraction, 0.0);
  // vLLM loads the float32 bge-m3 checkpoint as fp16 and keeps no KV cache.
  ResourceEstimate bge = Est(Shape("bge-m3"), {.engine = Engine::kVllm});
  EXPECT_NEAR(bge.weight_bytes / kGB, 1.135, 0.02);
  EXPECT_EQ(bge.kv_cache_bytes, 0u);
}

TEST(EstimatorTest, RejectsBadOptions) {
  ModelShape s = Shape("Llama-3.1-8B");
  EXPECT_FALSE(Estimate(s, {.parallel = 0}).ok());
  EXPECT_FALSE(Estimate(s, {.context_length = -1}).ok());
  EXPECT_FALSE(Estimate(s, {.kv_cache_type = "q3_k"}).ok());
  EXPECT_FALSE(Estimate(s, {.gpu_memory_fraction = 1.5}).ok());
  EXPECT_FALSE(Estimate(s, {.engine = Engine::kVllm, .context_length = 262144}).ok());
  EXPECT_TRUE(Estimate(s, {.engine = Engine::kLlamaCpp, .context_length = 262144}).ok());
  EXPECT_FALSE(Estimate(ModelShape{}, {}).ok());
  EXPECT_EQ(*ParseEngine("llama.cpp"), Engine::kLlamaCpp);
  EXPECT_EQ(*ParseEngine("tensorrt-llm"), Engine::kTensorRtLlm);
  EXPECT_FALSE(ParseEngine("custom").ok());
  for (Engine e : {Engine::kLlamaCpp, Engine::kVllm, Engine::kSglang, Engine::kTensorRtLlm,
                   Engine::kSimulator}) {
    EXPECT_EQ(*ParseEngine(EngineName(e)), e);
  }
}

TEST(EstimatorTest, SafetensorsWeightsOverrideTheFormula) {
  auto c = ReadModelConfig(std::string(SEGMA_ESTIMATE_FIXTURES_DIR) + "/Llama-3.1-8B.config.json");
  ASSERT_TRUE(c.ok());
  SafetensorsHeader h;
  h.parameter_count = 8030261248;
  h.data_bytes = 8030261248;  // an fp8 checkpoint
  h.bytes_per_dtype["F8_E4M3"] = h.data_bytes;
  auto s = ShapeFromConfig(*c, &h);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->source, "safetensors");
  EXPECT_EQ(s->weight_bytes, 8030261248u);
  EXPECT_DOUBLE_EQ(s->weight_bytes_per_param, 1.0);
  EXPECT_NEAR(static_cast<double>(s->layer_weight_bytes), 218112000.0, 1.0);
}

}  // namespace
}  // namespace segma::estimate
