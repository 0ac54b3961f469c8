#include "scheduler/estimate/gguf.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>

#include "scheduler/estimate/model_shape.h"
#include "scheduler/estimate/test_model.h"
#include "scheduler/estimate/test_util.h"

namespace segma::estimate {
namespace {

using testing::Bytes;
using testing::SampleGguf;
using testing::SampleWriter;

TEST(GgmlTypeTest, TableMatchesLlamaCpp) {
  EXPECT_EQ(GgmlTypeInfo(0)->type_size, 4u);
  EXPECT_EQ(GgmlTypeInfo(8)->block_size, 32u);
  EXPECT_EQ(GgmlTypeInfo(8)->type_size, 34u);
  EXPECT_EQ(GgmlTypeInfo(12)->type_size, 144u);  // q4_K: 4.5 bits per weight
  EXPECT_EQ(GgmlTypeInfo(14)->type_size, 210u);  // q6_K
  EXPECT_EQ(GgmlTypeInfo(30)->name, "bf16");
  EXPECT_EQ(GgmlTypeInfo(23)->type_size, 136u);                              // iq4_xs
  EXPECT_EQ(GgmlTypeInfo(4).status().code(), StatusCode::kInvalidArgument);  // removed Q4_2
  EXPECT_EQ(GgmlTypeInfo(31).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(GgmlTypeInfo(1000).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseGgmlType("Q8_0"), GgmlType::kQ8_0);
  EXPECT_FALSE(ParseGgmlType("q9_9").ok());
}

TEST(GgmlTypeTest, TensorBytes) {
  const uint64_t dims[] = {4096, 128256};
  EXPECT_EQ(*GgmlTensorBytes(GgmlType::kF16, dims), 4096ull * 128256 * 2);
  EXPECT_EQ(*GgmlTensorBytes(GgmlType::kQ4_K, dims), 4096ull * 128256 / 256 * 144);
  const uint64_t odd[] = {100, 2};
  EXPECT_FALSE(GgmlTensorBytes(GgmlType::kQ8_0, odd).ok());
  const uint64_t huge[] = {uint64_t{1} << 40, uint64_t{1} << 40};
  EXPECT_FALSE(GgmlTensorBytes(GgmlType::kF32, huge).ok());
  EXPECT_EQ(*GgmlTensorBytes(GgmlType::kF32, {}), 4u);  // scalar
}

TEST(GgmlTypeTest, HalfConversionRoundTrips) {
  for (float f : {0.0f, 1.0f, -2.5f, 0.02f, 65504.0f, 6.1e-5f, 1e-7f}) {
    EXPECT_NEAR(HalfToFloat(FloatToHalf(f)), f, std::fabs(f) * 1e-3 + 1e-7) << f;
  }
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(1e6f), 0x7c00);  // overflow → inf
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(NAN))));
}

TEST(GgmlTypeTest, EncodeQ8_0) {
  std::vector<float> in(32);
  for (int i = 0; i < 32; ++i) in[i] = (i - 16) / 16.0f;
  std::vector<uint8_t> out(34);
  ASSERT_TRUE(EncodeRow(in, GgmlType::kQ8_0, out).ok());
  uint16_t d = 0;
  std::memcpy(&d, out.data(), 2);
  EXPECT_NEAR(HalfToFloat(d), 1.0f / 127, 1e-4);
  EXPECT_EQ(static_cast<int8_t>(out[2]), -127);
  EXPECT_FALSE(EncodeRow(in, GgmlType::kQ4_K, out).ok());
}

TEST(GgufTest, WriterReaderRoundTrip) {
  GgufWriter w = SampleWriter();
  std::vector<uint8_t> bytes = SampleGguf();
  auto f = ParseGguf(bytes);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->version, 3u);
  EXPECT_EQ(f->alignment, 32u);
  EXPECT_EQ(f->data_offset % 32, 0u);
  EXPECT_EQ(f->file_size, bytes.size());
  // Metadata comes back bit-identical and in order.
  ASSERT_EQ(f->metadata.size(), 23u);
  EXPECT_EQ(f->metadata[0].first, "general.architecture");
  EXPECT_EQ(*f->FindString("str"), "héllo");
  EXPECT_EQ(*f->Find("i8")->AsInt(), -100);
  EXPECT_EQ(f->Find("i8")->AsUint(), std::nullopt);
  EXPECT_EQ(*f->Find("u64")->AsUint(), uint64_t{1} << 63);
  EXPECT_EQ(*f->Find("i64")->AsInt(), -(int64_t{1} << 62));
  EXPECT_EQ(*f->Find("f32")->AsDouble(), 0.5);
  EXPECT_EQ(f->Find("f32")->type(), GgufValueType::kFloat32);
  EXPECT_EQ(*f->Find("f64")->AsDouble(), -1.25);
  EXPECT_EQ(f->Find("strs")->array_strings(), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(*f->Find("ints")->ArrayInt(1), -2);
  EXPECT_EQ(f->Find("nested")->array_values().size(), 2u);
  EXPECT_EQ(f->Find("nested")->array_values()[1].array_strings()[0], "x");
  EXPECT_EQ(f->Find("missing"), nullptr);

  ASSERT_EQ(f->tensors.size(), 4u);
  for (size_t i = 0; i < f->tensors.size(); ++i) {
    const GgufTensorInfo& t = f->tensors[i];
    EXPECT_EQ(t.name, w.tensors()[i].name);
    EXPECT_EQ(t.dims, w.tensors()[i].dims);
    EXPECT_EQ(t.type, w.tensors()[i].type);
    EXPECT_EQ(t.offset % 32, 0u);
    // The data is where the header says it is.
    EXPECT_EQ(bytes[f->data_offset + t.offset], static_cast<uint8_t>(t.name.size()));
  }
  EXPECT_EQ(f->tensors[1].size_bytes, 3u * 34);

  // Writing what was read gives the same bytes.
  GgufWriter again;
  for (const auto& [k, v] : f->metadata) again.SetMetadata(k, v);
  for (const GgufTensorInfo& t : f->tensors)
    ASSERT_TRUE(again.AddTensor(t.name, t.dims, t.type).ok());
  EXPECT_EQ(*again.WriteToBuffer(testing::PatternFill), bytes);
}

TEST(GgufTest, CustomAlignment) {
  GgufWriter w = SampleWriter();
  w.SetMetadata("general.alignment", GgufValue::Uint32(64));
  auto f = ParseGguf(*w.WriteToBuffer(testing::PatternFill));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->alignment, 64u);
  for (const GgufTensorInfo& t : f->tensors) EXPECT_EQ(t.offset % 64, 0u);
}

TEST(GgufTest, WriterRejectsBadTensors) {
  GgufWriter w;
  EXPECT_FALSE(w.AddTensor("", {4}, GgmlType::kF32).ok());
  EXPECT_FALSE(w.AddTensor(std::string(64, 'x'), {4}, GgmlType::kF32).ok());
  EXPECT_FALSE(w.AddTensor("a", {1, 1, 1, 1, 1}, GgmlType::kF32).ok());
  EXPECT_FALSE(w.AddTensor("a", {33}, GgmlType::kQ8_0).ok());
  EXPECT_TRUE(w.AddTensor("a", {4}, GgmlType::kF32).ok());
  EXPECT_FALSE(w.AddTensor("a", {4}, GgmlType::kF32).ok());
}

TEST(GgufTest, EveryTruncationIsAnError) {
  const std::vector<uint8_t> bytes = SampleGguf();
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto f = ParseGguf(std::span(bytes.data(), n));
    ASSERT_FALSE(f.ok()) << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument);
  }
  // Without tensor data, any prefix that holds the whole header parses.
  auto header_only = ParseGguf(bytes, {.require_tensor_data = false});
  ASSERT_TRUE(header_only.ok());
  auto prefix =
      ParseGguf(std::span(bytes.data(), header_only->data_offset), {.require_tensor_data = false});
  EXPECT_TRUE(prefix.ok()) << prefix.status().ToString();
}

TEST(GgufTest, BitFlipsNeverCrash) {
  const std::vector<uint8_t> bytes = SampleGguf();
  int ok = 0;
  std::vector<uint8_t> m = bytes;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      m[i] ^= static_cast<uint8_t>(1 << bit);
      if (ParseGguf(m).ok()) ++ok;
      m[i] = bytes[i];
    }
  }
  EXPECT_GT(ok, 0);  // flips inside tensor data are harmless
}

Status ParseStatus(const Bytes& b) { return ParseGguf(b.data()).status(); }

TEST(GgufTest, HostileHeaders) {
  auto expect_invalid = [](const Bytes& b, std::string_view needle) {
    Status s = ParseStatus(b);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  expect_invalid(Bytes().Raw("GGML").Put<uint32_t>(3), "magic");
  expect_invalid(Bytes().Header(0, 0, 1), "version 1");
  expect_invalid(Bytes().Header(0, 0, 4), "version 4");
  expect_invalid(Bytes().Header(0, uint64_t{1} << 63), "metadata count");
  expect_invalid(Bytes().Header(~uint64_t{0}, 0), "tensor count");
  // A key whose length runs past the end.
  expect_invalid(Bytes().Header(0, 1).Put<uint64_t>(~uint64_t{0}).Pad(16), "metadata key");
  // Unknown value type.
  expect_invalid(Bytes().Header(0, 1).Str("k").Put<uint32_t>(13).Pad(16), "unknown value type");
  // An array claiming 2^60 elements.
  expect_invalid(Bytes().Header(0, 1).Str("k").Put<uint32_t>(9).Put<uint32_t>(5).Put<uint64_t>(
                     uint64_t{1} << 60),
                 "does not fit");
  // A string array claiming 2^40 strings.
  expect_invalid(Bytes().Header(0, 1).Str("k").Put<uint32_t>(9).Put<uint32_t>(8).Put<uint64_t>(
                     uint64_t{1} << 40),
                 "does not fit");
  // Arrays nested too deep.
  Bytes deep = Bytes().Header(0, 1).Str("k").Put<uint32_t>(9);
  for (int i = 0; i < 10; ++i) deep.Put<uint32_t>(9).Put<uint64_t>(1);
  deep.Pad(64);
  expect_invalid(deep, "nested deeper");
  // Bool that is not 0/1.
  expect_invalid(Bytes().Header(0, 1).Str("k").Put<uint32_t>(7).Put<uint8_t>(2).Pad(16), "bool");
  // Duplicate keys.
  expect_invalid(Bytes()
                     .Header(0, 2)
                     .Str("k")
                     .Put<uint32_t>(0)
                     .Put<uint8_t>(1)
                     .Str("k")
                     .Put<uint32_t>(0)
                     .Put<uint8_t>(1)
                     .Pad(16),
                 "duplicate metadata key");
  // Alignment that is not a power of two, or of the wrong type.
  expect_invalid(Bytes().Header(0, 1).Str("general.alignment").Put<uint32_t>(4).Put<uint32_t>(3),
                 "power of two");
  expect_invalid(Bytes().Header(0, 1).Str("general.alignment").Put<uint32_t>(4).Put<uint32_t>(0),
                 "power of two");
  expect_invalid(Bytes().Header(0, 1).Str("general.alignment").Put<uint32_t>(10).Put<uint64_t>(32),
                 "uint32");

  auto tensor = [](Bytes b, std::string_view name, std::vector<uint64_t> dims, uint32_t type,
                   uint64_t offset) {
    b.Str(name).Put<uint32_t>(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) b.Put<uint64_t>(d);
    return b.Put<uint32_t>(type).Put<uint64_t>(offset).Pad(64);
  };
  expect_invalid(tensor(Bytes().Header(1, 0), "t", {1, 1, 1, 1, 1}, 0, 0), "dims");
  expect_invalid(tensor(Bytes().Header(1, 0), "t", {uint64_t{1} << 32, uint64_t{1} << 32}, 0, 0),
                 "overflow");
  expect_invalid(tensor(Bytes().Header(1, 0), "t", {~uint64_t{0}}, 0, 0), "too large");
  expect_invalid(tensor(Bytes().Header(1, 0), "t", {4}, 4, 0), "unknown ggml type");
  expect_invalid(tensor(Bytes().Header(1, 0), "t", {33}, 8, 0), "block size");
  expect_invalid(tensor(Bytes().Header(1, 0), "t", {4}, 0, 3), "alignment");
  expect_invalid(tensor(Bytes().Header(1, 0), "t", {1024}, 0, 0), "beyond the end");
  expect_invalid(tensor(Bytes().Header(1, 0), "t", {4}, 0, ~uint64_t{0} - 31), "overflow");
  expect_invalid(tensor(Bytes().Header(1, 0), std::string(64, 'n'), {4}, 0, 0), "name");
  // Two tensors sharing data, and two with one name.
  Bytes two = Bytes().Header(2, 0);
  two.Str("a").Put<uint32_t>(1).Put<uint64_t>(8).Put<uint32_t>(0).Put<uint64_t>(0);
  two.Str("b").Put<uint32_t>(1).Put<uint64_t>(8).Put<uint32_t>(0).Put<uint64_t>(0).Pad(128);
  expect_invalid(two, "overlaps");
  Bytes dup = Bytes().Header(2, 0);
  dup.Str("a").Put<uint32_t>(1).Put<uint64_t>(8).Put<uint32_t>(0).Put<uint64_t>(0);
  dup.Str("a").Put<uint32_t>(1).Put<uint64_t>(8).Put<uint32_t>(0).Put<uint64_t>(32).Pad(128);
  expect_invalid(dup, "duplicate tensor");
}

TEST(GgufTest, AcceptsVersion2) {
  std::vector<uint8_t> bytes = SampleGguf();
  bytes[4] = 2;
  auto f = ParseGguf(bytes);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->version, 2u);
}

TEST(GgufTest, ReadFileErrors) {
  EXPECT_EQ(ReadGgufFile("/nonexistent/x.gguf").status().code(), StatusCode::kNotFound);
}

TEST(GgufTest, ReadsLlamaCppVocabFile) {
  if (!std::filesystem::exists(testing::VocabPath())) GTEST_SKIP() << "no llama.cpp vocab file";
  auto f = ReadGgufFile(testing::VocabPath().string());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(*f->FindString("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(f->Find("tokenizer.ggml.tokens")->array_size(), 32000u);
  EXPECT_TRUE(f->tensors.empty());
}

TEST(TestModelTest, WritesTinyLlamaThatReadsBack) {
  if (!std::filesystem::exists(testing::VocabPath())) GTEST_SKIP() << "no llama.cpp vocab file";
  const std::string path = ::testing::TempDir() + "/segma_tiny_q8.gguf";
  TestModelOptions o{.path = path, .vocab_path = testing::VocabPath().string()};
  o.type = GgmlType::kQ8_0;
  ASSERT_TRUE(WriteTestModel(o).ok());
  auto f = ReadGgufFile(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(*f->FindString("general.architecture"), "llama");
  EXPECT_EQ(*f->FindUint("llama.block_count"), 2u);
  EXPECT_EQ(*f->FindUint("llama.vocab_size"), 32000u);
  EXPECT_EQ(*f->FindUint("general.file_type"), 7u);
  EXPECT_EQ(f->Find("tokenizer.ggml.tokens")->array_size(), 32000u);
  EXPECT_NE(f->Find("tokenizer.ggml.scores"), nullptr);
  EXPECT_EQ(f->tensors.size(), 3u + 2 * 9);
  EXPECT_EQ(f->tensors.front().name, "token_embd.weight");
  EXPECT_EQ(f->tensors.front().dims, (std::vector<uint64_t>{256, 32000}));
  EXPECT_EQ(f->tensors[3].name, "blk.0.attn_k.weight");
  EXPECT_EQ(f->tensors[3].dims, (std::vector<uint64_t>{256, 128}));
  EXPECT_EQ(f->tensors[1].type, GgmlType::kF32);  // attn_norm
  EXPECT_EQ(f->file_size, f->data_offset + f->tensors.back().offset + f->tensors.back().size_bytes);

  auto shape = ShapeFromGguf(*f);
  ASSERT_TRUE(shape.ok()) << shape.status().ToString();
  EXPECT_EQ(shape->n_layers, 2);
  EXPECT_EQ(shape->n_kv_heads, 2);
  EXPECT_EQ(shape->head_dim, 64);
  EXPECT_EQ(shape->vocab_size, 32000);
  EXPECT_EQ(shape->max_context, 2048);
  EXPECT_FALSE(shape->tied_embeddings);
  EXPECT_EQ(shape->weight_bytes, f->TensorDataBytes());
  EXPECT_EQ(shape->input_embedding_bytes, 256u * 32000 / 32 * 34);
  EXPECT_EQ(shape->weight_bytes, shape->input_embedding_bytes + shape->output_head_bytes +
                                     2 * shape->layer_weight_bytes);
}

// The shape of the test model `o` would write, from its header alone: the sink stops the writer
// before any tensor data is generated.
Result<ModelShape> HeaderShape(const TestModelOptions& o) {
  ASSIGN_OR_RETURN(GgufWriter w, BuildTestModel(o));
  std::vector<uint8_t> header;
  Status s = w.Write(testing::PatternFill, [&](std::span<const uint8_t> b) {
    header.assign(b.begin(), b.end());
    return CancelledError("header only");
  });
  if (s.code() != StatusCode::kCancelled)
    return InternalError("writer did not stop: " + s.ToString());
  ASSIGN_OR_RETURN(GgufFile f, ParseGguf(header, {.require_tensor_data = false}));
  return ShapeFromGguf(f);
}

TEST(TestModelTest, EightBLayoutMatchesLlama31_8B) {
  const auto vocab = testing::LlamaCppDir() / "src" / "models" / "ggml-vocab-llama-bpe.gguf";
  if (!std::filesystem::exists(vocab)) GTEST_SKIP() << "no llama.cpp vocab file";
  TestModelOptions o{.path = "", .vocab_path = vocab.string(), .size = TestModelSize::k8B};
  Result<ModelShape> shape = HeaderShape(o);
  ASSERT_TRUE(shape.ok()) << shape.status().ToString();
  EXPECT_EQ(shape->n_layers, 32);
  EXPECT_EQ(shape->hidden_size, 4096);
  EXPECT_EQ(shape->n_kv_heads, 8);
  EXPECT_EQ(shape->head_dim, 128);
  EXPECT_EQ(shape->vocab_size, 128256);
  EXPECT_EQ(shape->max_context, 131072);
  EXPECT_EQ(shape->parameter_count, 8030261248u);                   // exactly Llama-3.1-8B
  EXPECT_EQ(shape->weight_bytes, 2 * 8030261248u + 2 * 4096 * 65);  // norms are f32
}

// The larger shape of the GPU benchmark (bench/gpu, issue 14): a 32B class that fits one H200 in
// q8_0 with room for its KV cache.
TEST(TestModelTest, ThirtyTwoBLayoutHasQwen25_32BDimensions) {
  const auto vocab = testing::LlamaCppDir() / "src" / "models" / "ggml-vocab-llama-bpe.gguf";
  if (!std::filesystem::exists(vocab)) GTEST_SKIP() << "no llama.cpp vocab file";
  TestModelOptions o{.path = "",
                     .vocab_path = vocab.string(),
                     .size = *ParseTestModelSize("32b"),
                     .type = GgmlType::kQ8_0};
  Result<ModelShape> shape = HeaderShape(o);
  ASSERT_TRUE(shape.ok()) << shape.status().ToString();
  EXPECT_EQ(shape->n_layers, 64);
  EXPECT_EQ(shape->hidden_size, 5120);
  EXPECT_EQ(shape->n_heads, 40);
  EXPECT_EQ(shape->n_kv_heads, 8);
  EXPECT_EQ(shape->head_dim, 128);
  EXPECT_NEAR(static_cast<double>(shape->parameter_count) / 1e9, 32.5, 0.1);
  // q8_0: 34 bytes per 32 weights; fits a 141 GB H200 with most of it left for the cache.
  EXPECT_NEAR(static_cast<double>(shape->weight_bytes) / 1e9, 34.6, 0.2);
}

TEST(TestModelTest, F16WeightsAreSmallAndFinite) {
  if (!std::filesystem::exists(testing::VocabPath())) GTEST_SKIP() << "no llama.cpp vocab file";
  const std::string path = ::testing::TempDir() + "/segma_tiny_f16.gguf";
  ASSERT_TRUE(WriteTestModel({.path = path, .vocab_path = testing::VocabPath().string()}).ok());
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  auto f = ParseGguf(bytes);
  ASSERT_TRUE(f.ok());
  const GgufTensorInfo& q = f->tensors[2];
  ASSERT_EQ(q.name, "blk.0.attn_q.weight");
  double sum_sq = 0;
  const uint64_t n = q.element_count();
  for (uint64_t i = 0; i < n; ++i) {
    uint16_t h = 0;
    std::memcpy(&h, bytes.data() + f->data_offset + q.offset + 2 * i, 2);
    const float v = HalfToFloat(h);
    ASSERT_TRUE(std::isfinite(v));
    sum_sq += v * v;
  }
  EXPECT_NEAR(std::sqrt(sum_sq / static_cast<double>(n)), 0.02, 0.002);
  EXPECT_FALSE(WriteTestModel({.path = path, .vocab_path = "/nonexistent.gguf"}).ok());
  EXPECT_FALSE(ParseTestModelSize("13b").ok());
  EXPECT_EQ(*ParseTestModelSize("7b"), TestModelSize::k8B);
}

}  // namespace
}  // namespace segma::estimate
