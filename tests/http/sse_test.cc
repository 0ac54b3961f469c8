#include "http/sse.h"

#include <gtest/gtest.h>

namespace segma::http {
namespace {

TEST(SseParserTest, ParsesEventsSplitAnywhere) {
  const std::string stream =
      ": comment\n\ndata: {\"a\":1}\n\nevent: done\ndata: x\ndata: y\r\n\r\ndata: [DONE]\n\n";
  for (size_t split = 0; split <= stream.size(); ++split) {
    SseParser p;
    std::vector<SseEvent> out;
    ASSERT_TRUE(p.Feed(std::string_view(stream).substr(0, split), out));
    ASSERT_TRUE(p.Feed(std::string_view(stream).substr(split), out));
    ASSERT_EQ(out.size(), 3u) << split;
    EXPECT_EQ(out[0].data, "{\"a\":1}");
    EXPECT_EQ(out[1].event, "done");
    EXPECT_EQ(out[1].data, "x\ny");
    EXPECT_EQ(out[2].data, "[DONE]");
  }
}

TEST(SseParserTest, RefusesOversizedEvents) {
  SseParser p(64);
  std::vector<SseEvent> out;
  EXPECT_FALSE(p.Feed("data: " + std::string(100, 'x'), out));
}

TEST(SseParserTest, FormatRoundTrips) {
  SseParser p;
  std::vector<SseEvent> out;
  ASSERT_TRUE(p.Feed(FormatSse("{\"k\":2}", "update"), out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].event, "update");
  EXPECT_EQ(out[0].data, "{\"k\":2}");
}

}  // namespace
}  // namespace segma::http
