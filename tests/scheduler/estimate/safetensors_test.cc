#include "scheduler/estimate/safetensors.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "scheduler/estimate/test_util.h"

namespace segma::estimate {
namespace {

using testing::Bytes;

std::vector<uint8_t> WithHeader(std::string_view json, size_t data_bytes = 0) {
  Bytes b;
  b.Put<uint64_t>(json.size()).Raw(json).Pad(data_bytes);
  return b.data();
}

TEST(SafetensorsTest, SumsBytesPerDtype) {
  auto h = ParseSafetensorsHeader(testing::SampleSafetensors(),
                                  uint64_t{0} + testing::SampleSafetensors().size());
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->tensors.size(), 3u);
  EXPECT_EQ(h->tensors[0].name, "lm_head.weight");  // sorted
  EXPECT_EQ(h->metadata.at("format"), "pt");
  EXPECT_EQ(h->bytes_per_dtype.at("BF16"), 64u);
  EXPECT_EQ(h->bytes_per_dtype.at("F32"), 64u);
  EXPECT_EQ(h->bytes_per_dtype.at("F16"), 64u);
  EXPECT_EQ(h->parameter_count, 32u + 16 + 32);
  EXPECT_EQ(h->data_bytes, 192u);
}

TEST(SafetensorsTest, HeaderOnlyPrefixIsEnough) {
  std::vector<uint8_t> full = testing::SampleSafetensors();
  uint64_t n = 0;
  std::memcpy(&n, full.data(), 8);
  auto h = ParseSafetensorsHeader(std::span(full.data(), 8 + n));
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  // But with the file size known, data must fit in it.
  EXPECT_FALSE(ParseSafetensorsHeader(std::span(full.data(), 8 + n), 8 + n + 100).ok());
}

TEST(SafetensorsTest, HostileHeaders) {
  auto invalid = [](std::vector<uint8_t> bytes, std::string_view needle) {
    auto h = ParseSafetensorsHeader(bytes);
    ASSERT_FALSE(h.ok());
    EXPECT_EQ(h.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(h.status().message().find(needle), std::string::npos) << h.status().message();
  };
  invalid({1, 2, 3}, "shorter");
  invalid(Bytes().Put<uint64_t>(~uint64_t{0}).data(), "limit");
  invalid(Bytes().Put<uint64_t>(200'000'000).data(), "limit");
  invalid(Bytes().Put<uint64_t>(100).Raw("{}").data(), "available");
  invalid(WithHeader("{"), "malformed");
  invalid(WithHeader("[1]"), "not a JSON object");
  invalid(WithHeader(R"({"t":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})"), "dtype");
  invalid(WithHeader(R"({"t":{"dtype":"F16","shape":[2],"data_offsets":[0,2]}})"), "needs 4");
  invalid(WithHeader(R"({"t":{"dtype":"F16","shape":[-2],"data_offsets":[0,2]}})"), "bad dim");
  invalid(WithHeader(R"({"t":{"dtype":"F16","shape":[1.5],"data_offsets":[0,2]}})"), "bad dim");
  invalid(
      WithHeader(R"({"t":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]}})"),
      "overflow");
  invalid(WithHeader(R"({"t":{"dtype":"F16","shape":[1],"data_offsets":[2,0]}})"), "data_offsets");
  invalid(WithHeader(R"({"t":{"dtype":"F16","shape":[1]}})"), "data_offsets");
  invalid(WithHeader(R"({"t":3})"), "not an object");
  invalid(WithHeader(R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"F16","shape":[2],"data_offsets":[2,6]}})"),
          "overlaps");
  invalid(WithHeader(R"({"__metadata__":[]})"), "__metadata__");
  // Deeply nested JSON is refused by the parser's depth limit, not the stack.
  invalid(WithHeader(std::string(10000, '[')), "malformed");
}

TEST(SafetensorsTest, TruncationsAndBitFlipsNeverCrash) {
  const std::vector<uint8_t> bytes = testing::SampleSafetensors();
  for (size_t n = 0; n < bytes.size(); ++n) {
    (void)ParseSafetensorsHeader(std::span(bytes.data(), n), bytes.size());
  }
  std::vector<uint8_t> m = bytes;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      m[i] ^= static_cast<uint8_t>(1 << bit);
      (void)ParseSafetensorsHeader(m, m.size());
      m[i] = bytes[i];
    }
  }
}

TEST(SafetensorsIndexTest, ParsesWeightMap) {
  auto idx = SafetensorsIndex::Parse(R"({"metadata":{"total_size":16060522496},
      "weight_map":{"lm_head.weight":"model-00004-of-00004.safetensors",
                    "model.embed_tokens.weight":"model-00001-of-00004.safetensors",
                    "model.norm.weight":"model-00004-of-00004.safetensors"}})");
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ(idx->total_size, 16060522496u);
  EXPECT_EQ(idx->shards.size(), 2u);
  EXPECT_EQ(idx->weight_map.at("model.norm.weight"), "model-00004-of-00004.safetensors");

  EXPECT_FALSE(SafetensorsIndex::Parse("{}").ok());
  EXPECT_FALSE(SafetensorsIndex::Parse(R"({"weight_map":{"a":1}})").ok());
  EXPECT_FALSE(SafetensorsIndex::Parse(R"({"weight_map":{"a":"../../etc/passwd"}})").ok());
  EXPECT_FALSE(SafetensorsIndex::Parse(R"({"weight_map":{"a":".."}})").ok());
}

void WriteFile(const std::filesystem::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

TEST(SafetensorsIndexTest, ReadsShardedModel) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "segma_sharded";
  std::filesystem::create_directories(dir);
  WriteFile(dir / "a.safetensors",
            WithHeader(R"({"x":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}})", 8));
  WriteFile(dir / "b.safetensors",
            WithHeader(R"({"y":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", 12));
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"metadata":{"total_size":20},"weight_map":{"x":"a.safetensors","y":"b.safetensors"}})";
  auto all = ReadShardedSafetensors((dir / "model.safetensors.index.json").string());
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->parameter_count, 7u);
  EXPECT_EQ(all->data_bytes, 20u);
  EXPECT_EQ(all->bytes_per_dtype.at("BF16"), 8u);

  // A tensor the index places in a shard that lacks it.
  std::ofstream(dir / "bad.index.json")
      << R"({"weight_map":{"x":"b.safetensors","y":"b.safetensors"}})";
  EXPECT_FALSE(ReadShardedSafetensors((dir / "bad.index.json").string()).ok());
  // A shard that is truncated.
  WriteFile(dir / "c.safetensors",
            WithHeader(R"({"z":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", 4));
  EXPECT_FALSE(ReadSafetensorsFile((dir / "c.safetensors").string()).ok());
  EXPECT_EQ(ReadSafetensorsFile((dir / "missing").string()).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace segma::estimate
