#include "scheduler/estimate/model_config.h"

#include <gtest/gtest.h>

#include "scheduler/estimate/model_shape.h"

namespace segma::estimate {
namespace {

std::string Fixture(std::string_view name) {
  return std::string(SEGMA_ESTIMATE_FIXTURES_DIR) + "/" + std::string(name) + ".config.json";
}

TEST(ModelConfigTest, Llama31_8B) {
  auto c = ReadModelConfig(Fixture("Llama-3.1-8B"));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->num_layers, 32);
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->num_heads, 32);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->intermediate_size, 14336);
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_EQ(c->max_position_embeddings, 131072);
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  EXPECT_EQ(c->rope_theta, 500000.0);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->IsEncoderOnly());
  // 8.03 B parameters (the model card's figure).
  EXPECT_EQ(CountParameters(*c), 8030261248u);
}

// Parameter counts of the fixtures against the published figures, within 1 %.
TEST(ModelConfigTest, ParameterCountsMatchPublishedFigures) {
  struct Case {
    const char* name;
    double params_b;
  };
  for (const Case& k : {Case{"Llama-3.1-70B", 70.55}, Case{"Qwen2.5-7B-Instruct", 7.62},
                        Case{"Qwen2.5-72B-Instruct", 72.7}, Case{"Mixtral-8x7B-v0.1", 46.7},
                        Case{"bge-m3", 0.568}}) {
    auto c = ReadModelConfig(Fixture(k.name));
    ASSERT_TRUE(c.ok()) << k.name << ": " << c.status().ToString();
    EXPECT_NEAR(static_cast<double>(CountParameters(*c)) / 1e9, k.params_b, k.params_b * 0.01)
        << k.name;
  }
}

TEST(ModelConfigTest, MoeAndEncoderFields) {
  auto m = ReadModelConfig(Fixture("Mixtral-8x7B-v0.1"));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->num_experts, 8);
  EXPECT_EQ(m->num_experts_per_token, 2);
  EXPECT_EQ(m->moe_intermediate_size, 14336);
  auto q = ReadModelConfig(Fixture("Qwen2.5-7B-Instruct"));
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(q->attention_bias);
  EXPECT_EQ(q->num_kv_heads, 4);
  auto b = ReadModelConfig(Fixture("bge-m3"));
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->IsEncoderOnly());
  EXPECT_EQ(b->num_kv_heads, 16);  // no GQA: defaults to the head count
  EXPECT_EQ(b->WeightBytesPerParam(), 4.0);
}

TEST(ModelConfigTest, LenientAboutUnknownFieldsStrictAboutKnownOnes) {
  EXPECT_TRUE(ParseModelConfig(R"({"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,
      "intermediate_size":128,"vocab_size":100,"something_new":{"x":[1,2]}})")
                  .ok());
  // Aliases (GPT-2 style names) and text_config nesting.
  auto g =
      ParseModelConfig(R"({"n_embd":64,"n_layer":2,"n_head":4,"n_inner":256,"vocab_size":10})");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->hidden_size, 64);
  auto mm = ParseModelConfig(R"({"architectures":["LlavaForConditionalGeneration"],
      "text_config":{"hidden_size":64,"num_hidden_layers":3,"num_attention_heads":4,
      "intermediate_size":128,"vocab_size":100}})");
  ASSERT_TRUE(mm.ok()) << mm.status().ToString();
  EXPECT_EQ(mm->num_layers, 3);
  EXPECT_EQ(mm->architecture, "LlavaForConditionalGeneration");

  for (
      const char* bad : {
          "",
          "[]",
          "{",
          R"({"hidden_size":64})",
          R"({"hidden_size":"64","num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":1,"vocab_size":1})",
          R"({"hidden_size":64,"num_hidden_layers":-2,"num_attention_heads":4,"intermediate_size":1,"vocab_size":1})",
          R"({"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":0,"intermediate_size":1,"vocab_size":1})",
          R"({"hidden_size":65,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":1,"vocab_size":1})",
          R"({"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":8,"intermediate_size":1,"vocab_size":1})",
          R"({"hidden_size":1e300,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":1,"vocab_size":1})",
          R"({"hidden_size":18446744073709551615,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":1,"vocab_size":1})",
          R"({"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":1})",
          R"({"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":1})",
      }) {
    auto c = ParseModelConfig(bad);
    EXPECT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ReadModelConfig("/nonexistent/config.json").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace segma::estimate
