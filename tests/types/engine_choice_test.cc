#include "types/engine_choice.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <gtest/gtest.h>

namespace segma::types {
namespace {

// The built-in backends as engines::ProfileOf describes them (tests/worker/engines checks that
// the real ones match these).
BackendProfile Profile(std::string name, std::vector<std::string> formats,
                       std::vector<std::string> vendors, std::string cc, bool cpu,
                       bool distributed) {
  BackendProfile p;
  p.name = std::move(name);
  p.default_version = "1";
  p.versions = {"1", "2"};
  if (distributed) p.distributed_versions = {"1"};
  p.model_formats = std::move(formats);
  p.gpu_vendors = std::move(vendors);
  p.min_compute_capability = std::move(cc);
  p.cpu_supported = cpu;
  p.partial_offload = cpu;
  return p;
}

class TestCatalog final : public BackendCatalog {
 public:
  TestCatalog() {
    for (BackendProfile p :
         {Profile("llama.cpp", {"gguf"}, {}, "", true, true),
          Profile("vllm", {"safetensors", "gguf"}, {"nvidia", "amd"}, "7.0", false, false),
          Profile("sglang", {"safetensors"}, {"nvidia", "amd"}, "7.5", false, false),
          Profile("tensorrt-llm", {"safetensors"}, {"nvidia"}, "8.0", false, false),
          Profile("simulator", {}, {}, "", true, false)}) {
      profiles_[p.name] = p;
    }
  }
  Result<BackendProfile> Find(const std::string& name) const override {
    auto it = profiles_.find(name);
    if (it == profiles_.end()) return NotFoundError("no " + name);
    return it->second;
  }

 private:
  std::map<std::string, BackendProfile> profiles_;
};

Model LocalModel(std::string path, std::string backend = "") {
  Model m;
  m.name = "m";
  m.source.type = SourceType::kLocalPath;
  m.source.path = std::move(path);
  m.backend = std::move(backend);
  return m;
}

Model HubModel(std::string repo, std::string file = "") {
  Model m;
  m.name = "m";
  m.source.type = SourceType::kHuggingFace;
  m.source.repo = std::move(repo);
  m.source.file = std::move(file);
  return m;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/engine_choice_testXXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string Touch(const std::string& name) const {
    std::filesystem::create_directories(std::filesystem::path(path_ + "/" + name).parent_path());
    std::ofstream(path_ + "/" + name) << "x";
    return path_ + "/" + name;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ModelFormatTest, FromTheFilesOnDisk) {
  TempDir d;
  const std::string gguf = d.Touch("q8/model-Q8_0.gguf");
  d.Touch("ckpt/config.json");
  d.Touch("ckpt/model.safetensors");
  d.Touch("engine/config.json");
  d.Touch("engine/rank0.engine");
  EXPECT_EQ(FormatOfLocalFiles(gguf), ModelFormat::kGguf);
  EXPECT_EQ(FormatOfLocalFiles(d.path() + "/ckpt"), ModelFormat::kSafetensors);
  EXPECT_EQ(FormatOfLocalFiles(d.path() + "/engine"), ModelFormat::kTensorRtEngine);
  EXPECT_EQ(FormatOfLocalFiles(d.path() + "/q8"), ModelFormat::kUnknown);  // no config.json
  EXPECT_EQ(FormatOfLocalFiles(d.path() + "/missing"), ModelFormat::kUnknown);
  EXPECT_EQ(FormatOfLocalFiles(""), ModelFormat::kUnknown);
  // The files win over what the source names; without files the source decides.
  EXPECT_EQ(FormatOf(LocalModel("/elsewhere/x.gguf").source, d.path() + "/ckpt"),
            ModelFormat::kSafetensors);
  EXPECT_EQ(FormatOf(LocalModel("/elsewhere/x.gguf").source, ""), ModelFormat::kGguf);
}

TEST(ModelFormatTest, FromTheSourceAlone) {
  EXPECT_EQ(FormatFromSource(LocalModel("/m/Llama-3.1-8B.Q4_K_M.GGUF").source), ModelFormat::kGguf);
  EXPECT_EQ(FormatFromSource(LocalModel("/m/Llama-3.1-8B").source), ModelFormat::kUnknown);
  // What a plain repository holds is known once it is listed (the worker's download).
  EXPECT_EQ(FormatFromSource(HubModel("Qwen/Qwen2.5-7B-Instruct").source), ModelFormat::kUnknown);
  EXPECT_EQ(FormatFromSource(HubModel("bartowski/Llama-3.2-1B-Instruct-GGUF").source),
            ModelFormat::kGguf);
  EXPECT_EQ(FormatFromSource(HubModel("org/any", "*Q4_K_M.gguf").source), ModelFormat::kGguf);
  EXPECT_EQ(FormatFromSource(HubModel("org/any-GGUF", "*.safetensors").source),
            ModelFormat::kSafetensors);
  Model sim;
  sim.source.type = SourceType::kSimulated;
  EXPECT_EQ(FormatFromSource(sim.source), ModelFormat::kUnknown);
  EXPECT_EQ(ParseModelFormat("tensorrt-engine"), ModelFormat::kTensorRtEngine);
  EXPECT_EQ(ParseModelFormat("unknown"), std::nullopt);
}

// The automatic choice is a function of the format alone, so the server (before placement) and
// the worker (with the files) reach the same backend, and say why.
TEST(ChooseEngineTest, AutomaticChoiceFollowsTheFormat) {
  TestCatalog catalog;
  Result<EngineChoice> gguf = ChooseEngine(LocalModel("/m/x.gguf"), ModelFormat::kGguf, catalog);
  ASSERT_TRUE(gguf.ok()) << gguf.status().ToString();
  EXPECT_EQ(gguf->backend, "llama.cpp");
  EXPECT_EQ(gguf->version, "1");
  EXPECT_TRUE(gguf->automatic);
  EXPECT_EQ(gguf->reason,
            "automatic: the model is a GGUF file, which llama.cpp reads; it serves on GPUs and on "
            "CPUs, and can keep layers in RAM when the GPU is too small");
  EXPECT_EQ(gguf->profile.name, "llama.cpp");

  Result<EngineChoice> dir = ChooseEngine(LocalModel("/m/x"), ModelFormat::kSafetensors, catalog);
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(dir->backend, "vllm");
  EXPECT_NE(dir->reason.find("safetensors checkpoint"), std::string::npos) << dir->reason;

  Result<EngineChoice> unknown = ChooseEngine(LocalModel("/m/x"), ModelFormat::kUnknown, catalog);
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->backend, "vllm");

  Model sim;
  sim.source.type = SourceType::kSimulated;
  sim.source.params_b = 8;
  EXPECT_EQ(ChooseEngine(sim, ModelFormat::kUnknown, catalog)->backend, "simulator");

  Result<EngineChoice> engine =
      ChooseEngine(LocalModel("/m/engine"), ModelFormat::kTensorRtEngine, catalog);
  EXPECT_EQ(engine.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(engine.status().message().find("no built-in backend serves a TensorRT engine"),
            std::string::npos)
      << engine.status().message();
}

TEST(ChooseEngineTest, TheUsersChoiceIsKeptAndResolved) {
  TestCatalog catalog;
  Model m = LocalModel("/m/x.gguf", "sglang");
  Result<EngineChoice> c = ChooseEngine(m, ModelFormat::kGguf, catalog);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->backend, "sglang");
  EXPECT_FALSE(c->automatic);
  EXPECT_EQ(c->reason, "backend sglang as the model asks");
  m.backend_version = "2";
  EXPECT_EQ(ChooseEngine(m, ModelFormat::kGguf, catalog)->version, "2");
  m.backend_version = "9";
  EXPECT_EQ(ChooseEngine(m, ModelFormat::kGguf, catalog).status().message(),
            "backend 'sglang' has no version '9' (versions: 1, 2)");
  m.backend = "tgi";
  m.backend_version = "";
  EXPECT_EQ(ChooseEngine(m, ModelFormat::kGguf, catalog).status().message(),
            "backend 'tgi' does not exist (GET /v2/backends lists the backends)");
}

TEST(ChooseEngineTest, HardwareMustSuitTheBackend) {
  TestCatalog catalog;
  Model m = LocalModel("/m/ckpt");
  EngineHardware cpu;
  Result<EngineChoice> c = ChooseEngine(m, ModelFormat::kSafetensors, catalog, cpu);
  EXPECT_EQ(c.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.status().message(),
            "vllm cannot run on a CPU only: it needs an NVIDIA GPU with compute capability >= "
            "7.0 or an AMD GPU");
  EngineHardware pascal;
  GpuDevice g;
  g.index = 1;
  g.name = "Tesla P100";
  g.compute_capability = "6.0";
  pascal.gpus.push_back(g);
  c = ChooseEngine(m, ModelFormat::kSafetensors, catalog, pascal);
  EXPECT_EQ(c.status().message(),
            "vllm cannot run on GPU 1 (NVIDIA Tesla P100, compute capability 6.0): it needs an "
            "NVIDIA GPU with compute capability >= 7.0 or an AMD GPU");
  pascal.gpus[0].compute_capability = "9.0";
  EXPECT_TRUE(ChooseEngine(m, ModelFormat::kSafetensors, catalog, pascal).ok());
  EXPECT_TRUE(ChooseEngine(LocalModel("/m/x.gguf"), ModelFormat::kGguf, catalog, cpu).ok());
}

TEST(CheckEngineFitsTest, FormatAndAcrossWorkersNameTheirFields) {
  TestCatalog catalog;
  Model m = LocalModel("/m/x.gguf", "sglang");
  EngineChoice c = ChooseEngine(m, ModelFormat::kGguf, catalog).value();
  Status s = CheckEngineFits(m, c);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "source: backend sglang cannot serve a GGUF file (sglang reads safetensors, not "
            "gguf): use backend llama.cpp, or leave backend empty");

  m = LocalModel("/m/ckpt", "vllm");
  m.distributed_inference_across_workers = true;
  c = ChooseEngine(m, ModelFormat::kSafetensors, catalog).value();
  EXPECT_EQ(CheckEngineFits(m, c).message(),
            "distributed_inference_across_workers: backend vllm (version 1) cannot run across "
            "workers: it has no distributed_server_command");
  m.backend = "";
  c = ChooseEngine(m, ModelFormat::kSafetensors, catalog).value();
  EXPECT_EQ(CheckEngineFits(m, c).message(),
            "distributed_inference_across_workers: backend vllm (version 1, chosen "
            "automatically) cannot run across workers: it has no distributed_server_command");

  // llama.cpp's version 1 has a distributed command, its version 2 does not.
  m = LocalModel("/m/x.gguf", "llama.cpp");
  m.distributed_inference_across_workers = true;
  EXPECT_TRUE(CheckEngineFits(m, ChooseEngine(m, ModelFormat::kGguf, catalog).value()).ok());
  m.backend_version = "2";
  EXPECT_FALSE(CheckEngineFits(m, ChooseEngine(m, ModelFormat::kGguf, catalog).value()).ok());
  // A format not known yet is checked once it is.
  m = LocalModel("/m/unseen", "sglang");
  EXPECT_TRUE(CheckEngineFits(m, ChooseEngine(m, ModelFormat::kUnknown, catalog).value()).ok());
}

TEST(HardwareNeedsTest, ReadsLikeASentence) {
  EXPECT_EQ(HardwareNeeds(Profile("x", {}, {}, "", true, false)), "a GPU or an x86_64/aarch64 CPU");
  EXPECT_EQ(HardwareNeeds(Profile("x", {}, {"nvidia"}, "8.0", false, false)),
            "an NVIDIA GPU with compute capability >= 8.0");
  EXPECT_EQ(HardwareNeeds(Profile("x", {}, {}, "5.0", false, false)),
            "a GPU (NVIDIA: compute capability >= 5.0)");
  EXPECT_EQ(ComputeCapability10("8.6"), 86);
  EXPECT_EQ(ComputeCapability10("x"), -1);
}

}  // namespace
}  // namespace segma::types
