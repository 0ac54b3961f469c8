#include "types/json_codec.h"

#include <gtest/gtest.h>

#include "types/model.h"
#include "types/model_file.h"

namespace segma::types {
namespace {

TEST(ParseByNameTest, EveryEnumNameParsesBackAndOthersDoNot) {
  for (SourceType t : {SourceType::kLocalPath, SourceType::kHuggingFace, SourceType::kModelScope,
                       SourceType::kSimulated}) {
    EXPECT_EQ(ParseSourceType(SourceTypeName(t)), t);
  }
  for (ModelCategory c : {ModelCategory::kLlm, ModelCategory::kEmbedding, ModelCategory::kReranker,
                          ModelCategory::kSpeechToText}) {
    EXPECT_EQ(ParseModelCategory(ModelCategoryName(c)), c);
  }
  for (PlacementStrategy p : {PlacementStrategy::kSpread, PlacementStrategy::kBinpack}) {
    EXPECT_EQ(ParsePlacementStrategy(PlacementStrategyName(p)), p);
  }
  for (ModelFileState s : {ModelFileState::kDownloading, ModelFileState::kReady,
                           ModelFileState::kError, ModelFileState::kDeleting}) {
    EXPECT_EQ(ParseModelFileState(ModelFileStateName(s)), s);
  }
  // Names match exactly: no case folding, no prefixes, nothing for the empty string.
  EXPECT_EQ(ParseSourceType("HuggingFace"), std::nullopt);
  EXPECT_EQ(ParseModelCategory("speech"), std::nullopt);
  EXPECT_EQ(ParsePlacementStrategy(""), std::nullopt);
  EXPECT_EQ(ParseModelFileState("ready "), std::nullopt);
}

// A small type read with the shared codec helpers.
struct Pair {
  std::string name;
  int64_t size = 1;
};

void ReadPairFields(JsonReader& r, Pair& p, bool is_patch) {
  if (auto name = r.OptionalString("name")) p.name = *name;
  if (auto size = r.OptionalInt("size")) p.size = *size;
  (void)is_patch;
}

Status ValidatePair(const Pair& p) {
  if (p.size < 1) return InvalidArgumentError("size must be >= 1");
  return OkStatus();
}

json::object Obj(std::string_view text) { return ParseJson(text)->as_object(); }

TEST(NewFromJsonTest, RequiresKeysThenReadsThenValidates) {
  Result<Pair> p = NewFromJson<Pair>(Obj(R"({"name":"a","size":3})"), {"name", "size"},
                                     ReadPairFields, ValidatePair);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->name, "a");
  EXPECT_EQ(p->size, 3);

  // The first missing key is the one reported.
  EXPECT_EQ(NewFromJson<Pair>(Obj("{}"), {"name", "size"}, ReadPairFields, ValidatePair)
                .status()
                .message(),
            "name is required");
  EXPECT_EQ(
      NewFromJson<Pair>(Obj(R"({"name":"a","sise":2})"), {"name"}, ReadPairFields, ValidatePair)
          .status()
          .message(),
      "unknown field 'sise'");
  Result<Pair> invalid =
      NewFromJson<Pair>(Obj(R"({"name":"a","size":0})"), {"name"}, ReadPairFields, ValidatePair);
  EXPECT_EQ(invalid.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(invalid.status().message(), "size must be >= 1");
}

TEST(PatchedFromJsonTest, KeepsAbsentFieldsAndValidatesTheResult) {
  Pair current{"a", 5};
  Result<Pair> p = PatchedFromJson(current, Obj(R"({"size":7})"), ReadPairFields, ValidatePair);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->name, "a");
  EXPECT_EQ(p->size, 7);
  EXPECT_EQ(PatchedFromJson(current, Obj(R"({"size":0})"), ReadPairFields, ValidatePair)
                .status()
                .message(),
            "size must be >= 1");
  EXPECT_EQ(
      PatchedFromJson(current, Obj(R"({"x":1})"), ReadPairFields, ValidatePair).status().message(),
      "unknown field 'x'");
}

}  // namespace
}  // namespace segma::types
