#include "controllers/estimate_adapter.h"

#include <gtest/gtest.h>

namespace segma::controllers {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

types::Model Simulated(double params_b, std::string backend = "") {
  types::Model m;
  m.name = "m";
  m.project_id = 1;
  m.backend = std::move(backend);
  m.source.type = types::SourceType::kSimulated;
  m.source.params_b = params_b;
  return m;
}

TEST(EstimateAdapterTest, SimulatedModelFromParameterCount) {
  auto est = EstimatorForModel(Simulated(8));
  ASSERT_TRUE(est.ok()) << est.status().ToString();
  auto one = (*est)->ForGpus(1);
  ASSERT_TRUE(one.ok());
  // 16 GB of bf16 weights and the KV cache of the default target, 32 sequences of 8192 tokens
  // (128 KiB per token: 32 GiB).
  EXPECT_EQ((*est)->sequences(), 32);
  EXPECT_EQ((*est)->context_length(), 8192);
  EXPECT_EQ((*est)->kv_bytes_per_sequence(1), 1 * kGiB);
  EXPECT_GT(one->vram_per_gpu, 15 * kGiB + 32 * kGiB);
  EXPECT_LT(one->vram_per_gpu, 20 * kGiB + 32 * kGiB);
  EXPECT_EQ(one->gpu_memory_fraction, 0);  // the simulator allocates what it needs
  auto two = (*est)->ForGpus(2);
  ASSERT_TRUE(two.ok());
  EXPECT_LT(two->vram_per_gpu, one->vram_per_gpu);
  EXPECT_EQ((*est)->attention_heads(), 32);
  EXPECT_EQ((*est)->ForGpus(3).status().code(), StatusCode::kInvalidArgument);  // 3 ∤ 32
}

TEST(EstimateAdapterTest, SetConcurrencyIsKept) {
  types::Model m = Simulated(8);
  m.max_concurrent_sequences = 2;
  m.context_length = 4096;
  auto est = EstimatorForModel(m);
  ASSERT_TRUE(est.ok()) << est.status().ToString();
  EXPECT_EQ((*est)->sequences(), 2);
  EXPECT_EQ((*est)->context_length(), 4096);
  EXPECT_EQ((*est)->kv_bytes_per_sequence(2), kGiB / 4);  // 4096 × 128 KiB over two GPUs
}

TEST(EstimateAdapterTest, VllmTakesItsFraction) {
  auto est = EstimatorForModel(Simulated(8, "vllm"));
  ASSERT_TRUE(est.ok()) << est.status().ToString();
  auto r = (*est)->ForGpus(1);
  ASSERT_TRUE(r.ok());
  EXPECT_GT(r->gpu_memory_fraction, 0.5);
}

TEST(EstimateAdapterTest, PartialOffloadIsClampedToTheLayers) {
  auto est = EstimatorForModel(Simulated(8, "llama.cpp"));
  ASSERT_TRUE(est.ok());
  const int layers = (*est)->total_layers();
  ASSERT_GT(layers, 0);
  auto cpu = (*est)->ForGpuLayers(0);
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ(cpu->vram_per_gpu, 0);
  auto all = (*est)->ForGpuLayers(layers + 10);
  ASSERT_TRUE(all.ok());
  EXPECT_GT(all->vram_per_gpu, 0);
  EXPECT_LE((*est)->MaxGpuLayers(int64_t{1000} * kGiB), layers);
  EXPECT_EQ((*est)->MaxGpuLayers(0), 0);
  const int some = (*est)->MaxGpuLayers(8 * kGiB);
  EXPECT_GT(some, 0);
  EXPECT_LT(some, layers);
}

TEST(EstimateAdapterTest, HubModelBeforeDownloadCannotBeEstimated) {
  types::Model m = Simulated(1);
  m.source = {};
  m.source.type = types::SourceType::kHuggingFace;
  m.source.repo = "org/name";
  auto est = EstimatorForModel(m);
  EXPECT_EQ(est.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(est.status().message(),
            "cannot estimate resources before the model files are available");
}

TEST(EstimateAdapterTest, MissingLocalFileIsAnError) {
  types::Model m = Simulated(1);
  m.source = {};
  m.source.type = types::SourceType::kLocalPath;
  m.source.path = "/nonexistent/model.gguf";
  EXPECT_FALSE(EstimatorForModel(m).ok());
}

}  // namespace
}  // namespace segma::controllers
