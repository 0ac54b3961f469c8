#include "loadgen/loadgen.h"

#include <algorithm>
#include <set>

#include <gtest/gtest.h>

#include "fakes/fake_model_server.h"

namespace segma::loadgen {
namespace {

TEST(SummarizeTest, NearestRankPercentiles) {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);
  const Distribution d = Summarize(v);
  EXPECT_EQ(d.count, 100);
  EXPECT_DOUBLE_EQ(d.min, 1);
  EXPECT_DOUBLE_EQ(d.p50, 50);
  EXPECT_DOUBLE_EQ(d.p95, 95);
  EXPECT_DOUBLE_EQ(d.p99, 99);
  EXPECT_DOUBLE_EQ(d.max, 100);
  EXPECT_DOUBLE_EQ(d.mean, 50.5);
  std::vector<double> none;
  EXPECT_EQ(Summarize(none).count, 0);
}

TEST(PromptTest, DistinctUnlessPrefixesAreShared) {
  Options o;
  o.prompt_words = 8;
  std::set<std::string> prompts;
  for (int64_t i = 0; i < 1000; ++i) prompts.insert(PromptFor(o, i));
  EXPECT_EQ(prompts.size(), 1000u);

  o.prefix_groups = 3;
  o.prefix_words = 50;
  std::set<std::string> prefixes;
  for (int64_t i = 0; i < 300; ++i) {
    const std::string p = PromptFor(o, i);
    prefixes.insert(p.substr(0, p.find("Request")));
  }
  EXPECT_EQ(prefixes.size(), 3u);
}

TEST(RunTest, RefusesBadOptions) {
  Options o;
  o.model = "m";
  o.requests = 1;
  o.url = "ftp://x";
  EXPECT_FALSE(loadgen::Run(o).ok());
  o.url = "http://127.0.0.1:1";
  o.concurrency = 0;
  EXPECT_FALSE(loadgen::Run(o).ok());
  o.concurrency = 1;
  o.model = "";
  EXPECT_FALSE(loadgen::Run(o).ok());
}

TEST(RunTest, MeasuresStreamsAgainstAFakeEngine) {
  testing::FakeModelServer engine({.chunks = 5,
                                   .chunk_delay = std::chrono::milliseconds(2),
                                   .first_chunk_delay = std::chrono::milliseconds(20),
                                   .completion_tokens = 5});
  Options o;
  o.url = engine.base_url();
  o.model = "fake";
  o.concurrency = 4;
  o.requests = 20;
  o.warmup_requests = 4;
  Result<Report> r = loadgen::Run(o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->requests, 20);
  EXPECT_EQ(r->ok, 20);
  EXPECT_EQ(r->errors, 0);
  EXPECT_EQ(engine.requests(), 24);
  EXPECT_EQ(r->missing_done, 0);
  EXPECT_EQ(r->token_event_mismatch, 0);
  EXPECT_EQ(r->completion_tokens, 20 * 5);
  // The first token waits 20 ms; the four gaps after it 2 ms each.
  EXPECT_GE(r->ttft.p50, 0.019);
  EXPECT_LT(r->ttft.p50, r->latency.p50);
  EXPECT_EQ(r->itl.count, 20 * 4);
  EXPECT_GE(r->itl.p50, 0.0015);
  EXPECT_GT(r->tokens_per_s_per_user.p50, 0);
  // The raw values behind the percentiles, one per answered request.
  ASSERT_EQ(r->latency_values.size(), 20u);
  ASSERT_EQ(r->ttft_values.size(), 20u);
  for (size_t i = 0; i < 20; ++i) {
    EXPECT_GE(r->ttft_values[i], 0.019);
    EXPECT_LT(r->ttft_values[i], r->latency_values[i]);
  }
  EXPECT_EQ(*std::max_element(r->latency_values.begin(), r->latency_values.end()), r->latency.max);
}

TEST(RunTest, CountsRefusalsAndUnreachableEngines) {
  testing::FakeModelServer engine;
  engine.set_fail_status(429);
  Options o;
  o.url = engine.base_url();
  o.model = "fake";
  o.requests = 3;
  o.stream = false;
  Result<Report> r = loadgen::Run(o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->errors, 3);
  EXPECT_EQ(r->by_status["429"], 3);

  o.url = "http://127.0.0.1:1";
  r = loadgen::Run(o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->by_status["connect"], 3);
}

}  // namespace
}  // namespace segma::loadgen
