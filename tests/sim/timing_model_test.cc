#include "sim/timing_model.h"

#include <string>

#include <gtest/gtest.h>

namespace segma::sim {
namespace {

using std::chrono::milliseconds;

double Ms(Micros d) { return static_cast<double>(d.count()) / 1000.0; }

TimingParams Small() {
  TimingParams p;
  p.overhead_ms = 20;
  p.prefill_us_per_token = 100;
  p.decode_ms_per_token = 10;
  p.max_concurrency = 4;
  p.load_slowdown = 2.0;
  p.block_tokens = 16;
  p.kv_capacity_blocks = 1000;
  return p;
}

TEST(DefaultTimingTest, EightBOnH100MatchesPublishedProfile) {
  // llm-d-inference-sim's latency profiles: 7-8B on H100, bs=1, 256-token prompt: TTFT 60-120 ms,
  // ITL 10-15 ms; on A100 100-180 ms and 15-25 ms.
  Result<TimingParams> h100 = DefaultTiming(8, GpuType::kH100);
  ASSERT_TRUE(h100.ok());
  EXPECT_GE(Ms(PrefillTime(*h100, 256, 1)), 60);
  EXPECT_LE(Ms(PrefillTime(*h100, 256, 1)), 120);
  EXPECT_GE(h100->decode_ms_per_token, 10);
  EXPECT_LE(h100->decode_ms_per_token, 15);
  EXPECT_EQ(h100->max_concurrency, 256);
  // Llama-3-8B on 80 GB leaves room for roughly 400k tokens of KV cache.
  EXPECT_GT(h100->kv_capacity_blocks * h100->block_tokens, 300'000);
  EXPECT_LT(h100->kv_capacity_blocks * h100->block_tokens, 600'000);

  Result<TimingParams> a100 = DefaultTiming(8, GpuType::kA100);
  ASSERT_TRUE(a100.ok());
  EXPECT_GE(Ms(PrefillTime(*a100, 256, 1)), 100);
  EXPECT_LE(Ms(PrefillTime(*a100, 256, 1)), 180);
  EXPECT_GE(a100->decode_ms_per_token, 15);
  EXPECT_LE(a100->decode_ms_per_token, 25);
}

TEST(DefaultTimingTest, ScalesWithModelSizeGpuAndParallelism) {
  auto h100_8 = DefaultTiming(8, GpuType::kH100).value();
  auto h100_70 = DefaultTiming(70, GpuType::kH100).value();
  auto h200_8 = DefaultTiming(8, GpuType::kH200).value();
  auto h100_70_tp4 = DefaultTiming(70, GpuType::kH100, 4).value();
  auto cpu_8 = DefaultTiming(8, GpuType::kCpu).value();
  EXPECT_GT(h100_70.decode_ms_per_token, 5 * h100_8.decode_ms_per_token);
  EXPECT_LT(h200_8.decode_ms_per_token, h100_8.decode_ms_per_token);
  EXPECT_LT(h100_70_tp4.decode_ms_per_token, h100_70.decode_ms_per_token / 3);
  EXPECT_GT(cpu_8.decode_ms_per_token, 10 * h100_8.decode_ms_per_token);
  // 70B weights do not fit one 80 GB card: the KV cache falls to its floor.
  EXPECT_EQ(h100_70.kv_capacity_blocks, 256);
  EXPECT_FALSE(DefaultTiming(0, GpuType::kH100).ok());
  EXPECT_FALSE(DefaultTiming(8, GpuType::kH100, 0).ok());
}

TEST(DefaultTimingTest, ParsesGpuNames) {
  EXPECT_EQ(ParseGpuType("h100").value(), GpuType::kH100);
  EXPECT_EQ(ParseGpuType("RTX-PRO-6000").value(), GpuType::kRtxPro6000);
  EXPECT_EQ(ParseGpuType("rtx_pro_6000").value(), GpuType::kRtxPro6000);
  EXPECT_EQ(ParseGpuType("CPU").value(), GpuType::kCpu);
  EXPECT_EQ(ParseGpuType("L40S").value(), GpuType::kL40S);
  EXPECT_EQ(ParseGpuType("V100").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(GpuTypeName(GpuType::kH200), "H200");
}

TEST(TokenizationTest, FourBytesPerTokenAndChainedBlocks) {
  EXPECT_EQ(CountTokens(""), 0);
  EXPECT_EQ(CountTokens("a"), 1);
  EXPECT_EQ(CountTokens("abcd"), 1);
  EXPECT_EQ(CountTokens("abcde"), 2);
  const std::string a(64 * 3 + 10, 'x');  // 3 full blocks of 16 tokens (64 bytes)
  EXPECT_EQ(BlockHashes(a, 16).size(), 3u);
  std::string b = a;
  b[64 + 5] = 'y';  // differs in block 1: block 0 shared, blocks 1 and 2 not (chained)
  auto ha = BlockHashes(a, 16), hb = BlockHashes(b, 16);
  EXPECT_EQ(ha[0], hb[0]);
  EXPECT_NE(ha[1], hb[1]);
  EXPECT_NE(ha[2], hb[2]);
  EXPECT_TRUE(BlockHashes("short", 16).empty());
}

TEST(TimingTest, TtftGrowsWithUncachedPromptLength) {
  TimingParams p = Small();
  EXPECT_EQ(PrefillTime(p, 0, 1), Micros(20'000));
  EXPECT_EQ(PrefillTime(p, 100, 1), Micros(30'000));
  EXPECT_EQ(PrefillTime(p, 1000, 1), Micros(120'000));
  EXPECT_LT(PrefillTime(p, 100, 1), PrefillTime(p, 101, 1));
}

TEST(TimingTest, StepTimeGrowsWithRunningBatch) {
  TimingParams p = Small();  // max 4, slowdown 2: factor 1, 1.67, 2.33, 3
  EXPECT_DOUBLE_EQ(LoadFactor(p, 1), 1.0);
  EXPECT_DOUBLE_EQ(LoadFactor(p, 4), 3.0);
  EXPECT_DOUBLE_EQ(LoadFactor(p, 40), 3.0);  // capped at a full batch
  EXPECT_EQ(DecodeStepTime(p, 1), Micros(10'000));
  EXPECT_EQ(DecodeStepTime(p, 4), Micros(30'000));
  EXPECT_LT(DecodeStepTime(p, 2), DecodeStepTime(p, 3));
  EXPECT_EQ(PrefillTime(p, 100, 4), Micros(90'000));

  EngineCore core(p);
  EXPECT_EQ(core.NextDecodeStep(), Micros(0 + 10'000));
  for (uint64_t id = 1; id <= 4; ++id)
    ASSERT_EQ(core.Submit(id, 1), EngineCore::Admission::kRunning);
  EXPECT_EQ(core.NextDecodeStep(), Micros(30'000));
  core.Finish(1);
  core.Finish(2);
  core.Finish(3);
  EXPECT_EQ(core.NextDecodeStep(), Micros(10'000));
}

TEST(TimingTest, SpeedScalesAndZeroIsInstant) {
  TimingParams p = Small();
  p.speed = 2;
  EXPECT_EQ(Scaled(p, Micros(10'000)), Micros(5'000));
  p.speed = 0;
  EXPECT_EQ(Scaled(p, Micros(10'000)), Micros(0));
  EngineCore core(p);
  for (uint64_t id = 1; id <= 10; ++id) {
    EXPECT_EQ(core.Submit(id, 1), EngineCore::Admission::kRunning);  // no queue at speed 0
  }
  EXPECT_EQ(core.StartPrefill(100, {}).prefill, Micros(0));
  EXPECT_EQ(core.NextDecodeStep(), Micros(0));
}

TEST(EngineCoreTest, PrefixCacheHitsCutTtftAndAreCounted) {
  TimingParams p = Small();
  EngineCore core(p);
  const std::string system(64 * 8, 's');  // 8 blocks = 128 tokens of shared system prompt
  const std::string prompt1 = system + "first question";
  const std::string prompt2 = system + "another, different question";

  ASSERT_EQ(core.Submit(1, 10), EngineCore::Admission::kRunning);
  PrefillPlan cold = core.StartPrefill(CountTokens(prompt1), BlockHashes(prompt1, 16));
  EXPECT_EQ(cold.cached_tokens, 0);
  core.Finish(1);

  ASSERT_EQ(core.Submit(2, 10), EngineCore::Admission::kRunning);
  PrefillPlan warm = core.StartPrefill(CountTokens(prompt2), BlockHashes(prompt2, 16));
  EXPECT_EQ(warm.cached_tokens, 128);
  EXPECT_LT(warm.prefill, cold.prefill);
  EXPECT_EQ(warm.prefill, PrefillTime(p, warm.prompt_tokens - 128, 1));
  core.Finish(2);

  // The same prompt again: every full block is cached, but the last token is still computed.
  const std::string exact(64 * 4, 'e');
  ASSERT_EQ(core.Submit(3, 10), EngineCore::Admission::kRunning);
  core.StartPrefill(64, BlockHashes(exact, 16));
  core.Finish(3);
  ASSERT_EQ(core.Submit(4, 10), EngineCore::Admission::kRunning);
  PrefillPlan again = core.StartPrefill(64, BlockHashes(exact, 16));
  EXPECT_EQ(again.cached_tokens, 63);
  core.Finish(4);

  EXPECT_EQ(core.prefix_queries_tokens(), cold.prompt_tokens + warm.prompt_tokens + 64 + 64);
  EXPECT_EQ(core.prefix_hit_tokens(), 128 + 63);
}

TEST(EngineCoreTest, PrefixCachingCanBeDisabled) {
  TimingParams p = Small();
  p.prefix_caching = false;
  EngineCore core(p);
  const std::string prompt(64 * 4, 'x');
  for (uint64_t id = 1; id <= 2; ++id) {
    ASSERT_EQ(core.Submit(id, 1), EngineCore::Admission::kRunning);
    EXPECT_EQ(core.StartPrefill(64, BlockHashes(prompt, 16)).cached_tokens, 0);
    core.Finish(id);
  }
  EXPECT_EQ(core.prefix_queries_tokens(), 0);
}

TEST(EngineCoreTest, QueuesFifoBeyondMaxConcurrency) {
  TimingParams p = Small();
  p.max_concurrency = 2;
  EngineCore core(p);
  EXPECT_EQ(core.Submit(1, 1), EngineCore::Admission::kRunning);
  EXPECT_EQ(core.Submit(2, 1), EngineCore::Admission::kRunning);
  EXPECT_EQ(core.Submit(3, 1), EngineCore::Admission::kWaiting);
  EXPECT_EQ(core.Submit(4, 1), EngineCore::Admission::kWaiting);
  EXPECT_EQ(core.running(), 2);
  EXPECT_EQ(core.waiting(), 2);
  EXPECT_EQ(core.Finish(2), std::vector<uint64_t>{3});
  EXPECT_EQ(core.running(), 2);
  EXPECT_EQ(core.waiting(), 1);
  // A waiting request that goes away leaves the queue without starting anything.
  EXPECT_EQ(core.Submit(5, 1), EngineCore::Admission::kWaiting);
  EXPECT_TRUE(core.Finish(4).empty());
  EXPECT_EQ(core.Finish(1), std::vector<uint64_t>{5});
  EXPECT_EQ(core.Finish(3), std::vector<uint64_t>{});
  EXPECT_EQ(core.Finish(5), std::vector<uint64_t>{});
  EXPECT_EQ(core.running(), 0);
  EXPECT_EQ(core.waiting(), 0);
}

TEST(EngineCoreTest, BoundedWaitingQueueRejects) {
  TimingParams p = Small();
  p.max_concurrency = 1;
  p.max_waiting = 1;
  EngineCore core(p);
  EXPECT_EQ(core.Submit(1, 1), EngineCore::Admission::kRunning);
  EXPECT_EQ(core.Submit(2, 1), EngineCore::Admission::kWaiting);
  EXPECT_EQ(core.Submit(3, 1), EngineCore::Admission::kRejected);
}

TEST(EngineCoreTest, KvCapacityLimitsTheBatchAndUsage) {
  TimingParams p = Small();
  p.kv_capacity_blocks = 100;
  EngineCore core(p);
  EXPECT_EQ(core.Submit(1, 60), EngineCore::Admission::kRunning);
  EXPECT_DOUBLE_EQ(core.kv_usage(), 0.6);
  EXPECT_EQ(core.Submit(2, 60), EngineCore::Admission::kWaiting);  // would exceed 100 blocks
  EXPECT_EQ(core.Submit(3, 10), EngineCore::Admission::kWaiting);  // FIFO: no overtaking
  EXPECT_EQ(core.Finish(1), (std::vector<uint64_t>{2, 3}));
  EXPECT_DOUBLE_EQ(core.kv_usage(), 0.7);
  core.Finish(2);
  core.Finish(3);
  // A single sequence larger than the cache still runs (alone).
  EXPECT_EQ(core.Submit(4, 500), EngineCore::Admission::kRunning);
  EXPECT_DOUBLE_EQ(core.kv_usage(), 1.0);
}

TEST(PrefixCacheTest, EvictsLeastRecentlyUsed) {
  PrefixCache cache(3);
  cache.Insert({1, 2, 3});
  EXPECT_EQ(cache.Match({1, 2, 3}), 3u);  // touches 1, 2, 3 (3 most recent)
  cache.Insert({4});                      // evicts 1, the least recent
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.Match({1, 2}), 0u);  // a prefix match stops at the first miss
  EXPECT_EQ(cache.Match({2, 3, 4}), 3u);
  PrefixCache none(0);
  none.Insert({1});
  EXPECT_EQ(none.Match({1}), 0u);
}

}  // namespace
}  // namespace segma::sim
