#include "metrics/exposition.h"

#include <cmath>

#include <gtest/gtest.h>
#include <prometheus/counter.h>

#include "metrics/registry.h"

namespace segma::metrics {
namespace {

TEST(ExpositionTest, ParsesFamiliesLabelsAndHistograms) {
  const std::string text =
      "# HELP vllm:num_requests_running Number of requests.\n"
      "# TYPE vllm:num_requests_running gauge\n"
      "vllm:num_requests_running{model_name=\"a \\\"b\\\"\",engine=\"0\"} 3\n"
      "# TYPE vllm:time_to_first_token_seconds histogram\n"
      "vllm:time_to_first_token_seconds_bucket{le=\"0.1\"} 2\n"
      "vllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 5\n"
      "vllm:time_to_first_token_seconds_sum 1.5\n"
      "vllm:time_to_first_token_seconds_count 5 1700000000000\n"
      "garbage line {\n"
      "untyped_thing 7\n";
  const std::vector<ParsedFamily> f = ParseText(text);
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].name, "vllm:num_requests_running");
  EXPECT_EQ(f[0].type, "gauge");
  EXPECT_EQ(f[0].help, "Number of requests.");
  ASSERT_EQ(f[0].samples.size(), 1u);
  EXPECT_EQ(f[0].samples[0].labels, (LabelPairs{{"model_name", "a \"b\""}, {"engine", "0"}}));
  EXPECT_EQ(f[0].samples[0].value, 3);
  EXPECT_EQ(f[1].type, "histogram");
  ASSERT_EQ(f[1].samples.size(), 4u);
  EXPECT_EQ(f[1].samples[1].labels, (LabelPairs{{"le", "+Inf"}}));
  EXPECT_EQ(f[1].samples[3].name, "vllm:time_to_first_token_seconds_count");
  EXPECT_EQ(f[1].samples[3].value, 5);  // the timestamp is not the value
  EXPECT_EQ(f[2].name, "untyped_thing");
  EXPECT_EQ(f[2].type, "untyped");
}

TEST(ExpositionTest, WritesWhatItParses) {
  std::string out;
  TextWriter w(out);
  w.Family("x_total", "counter", "Things");
  w.Sample("x_total", {{"a", "q\"uo\\te\nnl"}}, 12);
  w.Sample("x_total", {}, 0.25);
  w.Family("y", "gauge", "");
  w.Sample("y", {}, HUGE_VAL);
  EXPECT_EQ(out,
            "# HELP x_total Things\n# TYPE x_total counter\n"
            "x_total{a=\"q\\\"uo\\\\te\\nnl\"} 12\nx_total 0.25\n# TYPE y gauge\ny +Inf\n");
  const std::vector<ParsedFamily> f = ParseText(out);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0].samples[0].labels[0].second, "q\"uo\\te\nnl");
  EXPECT_TRUE(std::isinf(f[1].samples[0].value));
}

TEST(RegistryTest, CollectorsFollowTheRegistrysOwnFamilies) {
  Registry r;
  prometheus::BuildCounter().Name("own_total").Help("h").Register(r.prometheus()).Add({});
  r.AddCollector([](std::string& out) { out += "# TYPE extra gauge\nextra 1\n"; });
  const std::string text = r.Serialize();
  ASSERT_NE(text.find("own_total"), std::string::npos);
  EXPECT_GT(text.find("extra 1"), text.find("own_total"));
}

}  // namespace
}  // namespace segma::metrics
