#include "worker/models/model_hub.h"

#include <gtest/gtest.h>

namespace segma::worker::models {
namespace {

TEST(ModelHubTest, UrlLayoutsOfBothHubs) {
  EXPECT_EQ(ListingUrl(Hub::kHuggingFace, "https://huggingface.co", "org/name", "main"),
            "https://huggingface.co/api/models/org/name/revision/main?blobs=true");
  EXPECT_EQ(
      FileUrl(Hub::kHuggingFace, "https://hf.mirror", "org/name", "refs/pr/1", "sub/a b.gguf"),
      "https://hf.mirror/org/name/resolve/refs%2Fpr%2F1/sub/a%20b.gguf");
  EXPECT_EQ(ListingUrl(Hub::kModelScope, "https://www.modelscope.cn", "qwen/Qwen2", "master"),
            "https://www.modelscope.cn/api/v1/models/qwen/Qwen2/repo/files?Revision=master"
            "&Recursive=true");
  EXPECT_EQ(
      FileUrl(Hub::kModelScope, "https://ms", "qwen/Qwen2", "v1.0", "sub/model.safetensors"),
      "https://ms/api/v1/models/qwen/Qwen2/repo?Revision=v1.0&FilePath=sub%2Fmodel.safetensors");
}

TEST(ModelHubTest, ParsesHuggingFaceSiblingsWithLfs) {
  auto files = ParseListing(Hub::kHuggingFace, R"({"id":"o/n","sha":"abc","siblings":[
      {"rfilename":"config.json","blobId":"x","size":12},
      {"rfilename":"m.gguf","blobId":"y","size":134,
       "lfs":{"sha256":"ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789","size":999,"pointerSize":134}}]})");
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  ASSERT_EQ(files->size(), 2u);
  EXPECT_EQ((*files)[0].path, "config.json");
  EXPECT_EQ((*files)[0].size, 12);
  EXPECT_EQ((*files)[0].sha256, "");
  EXPECT_EQ((*files)[1].size, 999);  // the LFS object's size, not the pointer's
  EXPECT_EQ((*files)[1].sha256, "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
}

TEST(ModelHubTest, ParsesModelScopeFilesAndSkipsTrees) {
  auto files = ParseListing(Hub::kModelScope, R"({"Code":200,"Success":true,"Data":{"Files":[
      {"Name":"sub","Path":"sub","Type":"tree","Size":0},
      {"Name":"model.safetensors","Path":"model.safetensors","Type":"blob","Size":42,"Sha256":"aa"}]}})");
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  ASSERT_EQ(files->size(), 1u);
  EXPECT_EQ((*files)[0].size, 42);
  EXPECT_EQ((*files)[0].sha256, "aa");
  auto failed = ParseListing(Hub::kModelScope,
                             R"({"Code":10010205001,"Message":"no such model","Success":false})");
  EXPECT_EQ(failed.status().code(), StatusCode::kNotFound);
  EXPECT_NE(failed.status().message().find("no such model"), std::string::npos);
}

TEST(ModelHubTest, RejectsPathsThatEscapeTheCache) {
  for (const char* bad : {"../x", "/etc/passwd", "a/../../b", "a//b"}) {
    std::string body = std::string(R"({"siblings":[{"rfilename":")") + bad + R"("}]})";
    EXPECT_EQ(ParseListing(Hub::kHuggingFace, body).status().code(), StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_EQ(ParseListing(Hub::kHuggingFace, "not json").status().code(),
            StatusCode::kInvalidArgument);
}

std::vector<RemoteFile> Files(std::initializer_list<const char*> paths) {
  std::vector<RemoteFile> out;
  for (const char* p : paths) out.push_back(RemoteFile{p, 1, ""});
  return out;
}

TEST(ModelHubTest, LlamaCppTakesTheOneGgufAndAsksWhenThereAreSeveral) {
  auto one = SelectFiles(Files({"README.md", "config.json", "m-Q4_K_M.gguf"}), "", "");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->format, "gguf");
  EXPECT_EQ(one->model_file, "m-Q4_K_M.gguf");
  ASSERT_EQ(one->files.size(), 1u);

  auto many = SelectFiles(Files({"m-Q4_K_M.gguf", "m-Q8_0.gguf"}), "", "llama.cpp");
  EXPECT_EQ(many.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(many.status().message().find("source.file"), std::string::npos);

  auto chosen = SelectFiles(Files({"m-Q4_K_M.gguf", "m-Q8_0.gguf"}), "*Q8_0.gguf", "");
  ASSERT_TRUE(chosen.ok());
  EXPECT_EQ(chosen->model_file, "m-Q8_0.gguf");
  ASSERT_EQ(chosen->files.size(), 1u);

  auto shards = SelectFiles(Files({"m-00002-of-00002.gguf", "m-00001-of-00002.gguf", "other.gguf"}),
                            "m-*-of-*.gguf", "");
  ASSERT_TRUE(shards.ok());
  EXPECT_EQ(shards->files.size(), 2u);
  EXPECT_EQ(shards->model_file, "m-00001-of-00002.gguf");

  EXPECT_EQ(SelectFiles(Files({"model.safetensors"}), "", "llama.cpp").status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(SelectFiles(Files({"a.gguf"}), "*.bin", "").status().code(), StatusCode::kNotFound);
}

TEST(ModelHubTest, DirectoryEnginesTakeWeightsAndConfigNotEverything) {
  auto sel =
      SelectFiles(Files({"README.md", "config.json", "generation_config.json",
                         "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                         "model.safetensors.index.json", "tokenizer.json", "tokenizer.model",
                         "pytorch_model.bin", "m-Q4.gguf", "onnx/model.onnx", "images/x.png"}),
                  "", "vllm");
  ASSERT_TRUE(sel.ok()) << sel.status().ToString();
  EXPECT_EQ(sel->format, "safetensors");
  EXPECT_EQ(sel->model_file, "");
  std::vector<std::string> paths;
  for (const auto& f : sel->files) paths.push_back(f.path);
  EXPECT_EQ(paths, (std::vector<std::string>{
                       "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                       "config.json", "generation_config.json", "model.safetensors.index.json",
                       "tokenizer.json", "tokenizer.model"}));

  auto bin = SelectFiles(Files({"config.json", "pytorch_model.bin"}), "", "vllm");
  ASSERT_TRUE(bin.ok());
  EXPECT_EQ(bin->files.size(), 2u);
}

}  // namespace
}  // namespace segma::worker::models
