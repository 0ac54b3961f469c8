#include "controllers/estimate_adapter.h"

#include <gtest/gtest.h>

#include "controllers/cluster_state.h"

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

// The engine choice the controllers make for `m` (the built-in backends' names; the profile is
// not read by the estimator).
types::EngineChoice Chosen(const types::Model& m) {
  types::EngineChoice c;
  c.format = FormatOnServer(m);
  c.backend = !m.backend.empty()                               ? m.backend
              : m.source.type == types::SourceType::kSimulated ? "simulator"
              : c.format == types::ModelFormat::kGguf          ? "llama.cpp"
                                                               : "vllm";
  return c;
}

Result<std::unique_ptr<EstimateAdapter>> Estimate(const types::Model& m) {
  return EstimatorForModel(m, Chosen(m));
}

TEST(EstimateAdapterTest, SimulatedModelFromParameterCount) {
  auto est = Estimate(Simulated(8));
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
  auto est = Estimate(m);
  ASSERT_TRUE(est.ok()) << est.status().ToString();
  EXPECT_EQ((*est)->sequences(), 2);
  EXPECT_EQ((*est)->context_length(), 4096);
  EXPECT_EQ((*est)->kv_bytes_per_sequence(2), kGiB / 4);  // 4096 × 128 KiB over two GPUs
}

TEST(EstimateAdapterTest, VllmTakesItsFraction) {
  auto est = Estimate(Simulated(8, "vllm"));
  ASSERT_TRUE(est.ok()) << est.status().ToString();
  auto r = (*est)->ForGpus(1);
  ASSERT_TRUE(r.ok());
  EXPECT_GT(r->gpu_memory_fraction, 0.5);
}

TEST(EstimateAdapterTest, PartialOffloadIsClampedToTheLayers) {
  auto est = Estimate(Simulated(8, "llama.cpp"));
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
  auto est = Estimate(m);
  EXPECT_EQ(est.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(est.status().message(),
            "cannot estimate resources before the model files are available");
}

TEST(EstimateAdapterTest, MissingLocalFileIsAnError) {
  types::Model m = Simulated(1);
  m.source = {};
  m.source.type = types::SourceType::kLocalPath;
  m.source.path = "/nonexistent/model.gguf";
  EXPECT_FALSE(Estimate(m).ok());
}

// The launch inputs the worker renders from (LaunchContext::kv_cache_bytes and
// weight_bytes_per_gpu) come with the placement.
TEST(SetLaunchInputsTest, FractionEnginesFillTheirShareWithKvCache) {
  auto est = Estimate(Simulated(8, "vllm"));
  ASSERT_TRUE(est.ok());
  const estimate::ResourceEstimate& e = (*est)->resource_estimate();
  ASSERT_GT(e.kv_cache_bytes, 0u);
  scheduler::Placement p;
  p.kind = scheduler::PlacementKind::kMultiGpu;
  p.gpu_indexes = {0, 1};
  p.tensor_parallel_size = 2;
  const int64_t need = static_cast<int64_t>(e.vram_per_gpu(2));
  p.vram = {{0, need + 10 * kGiB}, {1, need + 10 * kGiB}};  // what 0.9 of the GPU leaves
  SetLaunchInputs(e, p);
  EXPECT_EQ(p.weight_bytes_per_gpu, static_cast<int64_t>(e.weight_bytes) / 2);
  EXPECT_EQ(p.kv_cache_bytes, static_cast<int64_t>(e.kv_cache_bytes) + 20 * kGiB);

  types::ModelInstance i;
  scheduler::ApplyToInstance(p, i);
  EXPECT_EQ(i.claim.kv_cache_bytes, p.kv_cache_bytes);
  EXPECT_EQ(i.claim.weight_bytes_per_gpu, p.weight_bytes_per_gpu);
}

TEST(SetLaunchInputsTest, EnginesThatAllocateWhatTheyNeed) {
  auto est = Estimate(Simulated(8, "llama.cpp"));
  ASSERT_TRUE(est.ok());
  const estimate::ResourceEstimate& e = (*est)->resource_estimate();
  scheduler::Placement p;
  p.kind = scheduler::PlacementKind::kSingleGpu;
  p.gpu_indexes = {0};
  p.tensor_parallel_size = 1;
  p.vram = {{0, 60 * kGiB}};  // more than the need: not KV cache for llama.cpp
  SetLaunchInputs(e, p);
  EXPECT_EQ(p.kv_cache_bytes, static_cast<int64_t>(e.kv_cache_bytes));
  EXPECT_EQ(p.weight_bytes_per_gpu, static_cast<int64_t>(e.weight_bytes));

  p.kind = scheduler::PlacementKind::kPartialOffload;
  p.offload_layers = 10;
  SetLaunchInputs(e, p);
  EXPECT_EQ(p.weight_bytes_per_gpu, static_cast<int64_t>(e.layer_weight_bytes) * 10);

  p = {};
  p.kind = scheduler::PlacementKind::kCpuOnly;
  SetLaunchInputs(e, p);
  EXPECT_EQ(p.weight_bytes_per_gpu, 0);
  EXPECT_EQ(p.kv_cache_bytes, static_cast<int64_t>(e.kv_cache_bytes));
}

}  // namespace
}  // namespace segma::controllers
