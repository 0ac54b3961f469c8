#include "common/logging.h"

#include <gtest/gtest.h>

#include "common/json.h"

namespace segma {
namespace {

json::object Parse(const std::string& line) {
  boost::system::error_code ec;
  json::value v = json::parse(line, ec);
  EXPECT_FALSE(ec) << line;
  return v.is_object() ? v.as_object() : json::object{};
}

const auto kTime = std::chrono::system_clock::time_point(std::chrono::milliseconds(1764790625123));

TEST(JsonLogLineTest, HasTimeLevelComponentMessageAndTheRequestId) {
  const json::object o = Parse(
      JsonLogLine(kTime, "info", "gateway", "[req=abc123] POST /v1/chat/completions 200 1.2ms"));
  EXPECT_EQ(o.at("time").as_string(), "2025-12-03T19:37:05.123Z");
  EXPECT_EQ(o.at("level").as_string(), "info");
  EXPECT_EQ(o.at("component").as_string(), "gateway");
  EXPECT_EQ(o.at("message").as_string(), "POST /v1/chat/completions 200 1.2ms");
  EXPECT_EQ(o.at("request_id").as_string(), "abc123");
}

TEST(JsonLogLineTest, TakesIdsFromTagsAndText) {
  json::object o = Parse(JsonLogLine(kTime, "warning", "worker",
                                     "started the engine of instance 42 (chat-x7) on port 40001"));
  EXPECT_EQ(o.at("instance_id").as_string(), "42");
  EXPECT_FALSE(o.contains("worker_id"));
  o = Parse(JsonLogLine(kTime, "info", "worker",
                        "registered with http://s:8080 as worker 3 (gpu-1); GPU inventory: nvml"));
  EXPECT_EQ(o.at("worker_id").as_string(), "3");
  o = Parse(JsonLogLine(kTime, "info", "x", "[model=chat] [project=7] reloaded"));
  EXPECT_EQ(o.at("model").as_string(), "chat");
  EXPECT_EQ(o.at("project_id").as_string(), "7");
  // Not an id: "instances 5", "subinstance 5", "instance 5x".
  o = Parse(JsonLogLine(kTime, "info", "x", "instances 5 subinstance 6 instance 7x"));
  EXPECT_FALSE(o.contains("instance_id"));
}

TEST(JsonLogLineTest, EscapesWhatJsonMust) {
  const std::string line =
      JsonLogLine(kTime, "error", "server", "quote \" backslash \\ newline \n tab \t bell \a");
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(Parse(line).at("message").as_string(),
            "quote \" backslash \\ newline \n tab \t bell \a");
}

TEST(SetLogFormatTest, RefusesUnknownFormats) {
  EXPECT_EQ(SetLogFormat("xml").code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(SetLogFormat("json").ok());
  EXPECT_TRUE(SetLogFormat("text").ok());
}

}  // namespace
}  // namespace segma
