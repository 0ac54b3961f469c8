#include "common/json.h"

#include <gtest/gtest.h>

namespace segma {
namespace {

TEST(JsonReaderTest, ReadsKnownFields) {
  json::object storage;
  JsonReader r = JsonReader::FromBody(R"({"name":"ci","project_id":1,"tags":["a"],"on":true})",
                                      storage);
  EXPECT_EQ(r.String("name"), "ci");
  EXPECT_EQ(r.Int("project_id"), 1);
  EXPECT_EQ(r.OptionalStringArray("tags")->at(0), "a");
  EXPECT_EQ(r.OptionalBool("on"), true);
  EXPECT_EQ(r.OptionalString("missing"), std::nullopt);
  EXPECT_TRUE(r.Finish().ok());
}

TEST(JsonReaderTest, RejectsUnknownFieldsWrongTypesAndMissing) {
  json::object storage;
  JsonReader unknown = JsonReader::FromBody(R"({"name":"x","nmae":"y"})", storage);
  unknown.String("name");
  EXPECT_EQ(unknown.Finish().message(), "unknown field 'nmae'");

  JsonReader wrong = JsonReader::FromBody(R"({"project_id":"1"})", storage);
  wrong.Int("project_id");
  EXPECT_EQ(wrong.Finish().message(), "project_id must be an integer");

  JsonReader missing = JsonReader::FromBody(R"({})", storage);
  missing.String("name");
  EXPECT_EQ(missing.Finish().message(), "name is required");
}

TEST(JsonReaderTest, RejectsNonObjectsAndBrokenJson) {
  json::object storage;
  for (const char* body : {"", "[1]", "{\"a\":", "nul", "\"x\""}) {
    JsonReader r = JsonReader::FromBody(body, storage);
    Status s = r.Finish();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << body;
  }
}

TEST(JsonReaderTest, DeepNestingIsRefused) {
  std::string deep(10000, '[');
  EXPECT_FALSE(ParseJson(deep).ok());
}

}  // namespace
}  // namespace segma
