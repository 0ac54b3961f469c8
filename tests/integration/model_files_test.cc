// Model files end to end: a deployment whose source is a Hugging Face repository, served over
// HTTPS by tests/fakes/fake_hub (the worker trusts its certificate through --ca-file and finds it
// through --hf-endpoint, as with an internal mirror), holding a tiny GGUF written by
// `segma model make-test`. The instance shows DOWNLOADING with progress, then runs on llama-server;
// /v2/model-files lists the file, and deleting it (once the model is gone) removes it from the
// worker's cache. A worker whose file size limit stops the download (as a full disk would) puts
// the instance in ERROR with a clear message, keeps no half file as ready, and keeps serving.

#include <signal.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "fakes/fake_hub.h"
#include "integration/harness.h"

namespace segma::testing {
namespace {

using boost::beast::http::verb;
namespace fs = std::filesystem;

const char kLlamaBin[] = "/var/cache/segma/llama.cpp-3.21.1/build/bin/llama-server";

class ModelFilesTest : public ::testing::Test {
 protected:
  void StartServer(const std::vector<std::string>& prefix = {}) {
    std::vector<std::string> args = prefix;
    for (const std::string& a :
         {SegmaBinary(), std::string("start"), std::string("--no-demo"), std::string("--data-dir"),
          dir_.path() + "/data", std::string("--address"), std::string("127.0.0.1"),
          std::string("--port"), std::to_string(port_), std::string("--fake-gpus"),
          std::string("1xH100:80"), std::string("--heartbeat-interval"), std::string("0.2"),
          std::string("--hf-endpoint"), hub_->url() + "/", std::string("--ca-file"),
          hub_->ca_file()}) {
      args.push_back(a);
    }
    server_ = std::make_unique<Process>(
        args, std::map<std::string, std::string>{{"SEGMA_BOOTSTRAP_PASSWORD", "files-admin-pw"}},
        dir_.path() + "/server.log");
    api_.base = "http://127.0.0.1:" + std::to_string(port_);
    ASSERT_TRUE(
        WaitUntil([&] { return api_.Get("/healthz").status == 200; }, std::chrono::seconds(30)))
        << server_->Log();
    auto login = api_.Post("/v2/auth/login",
                           json::object{{"username", "admin"}, {"password", "files-admin-pw"}});
    ASSERT_EQ(login.status, 200u) << login.body;
    api_.token = std::string(Api::Obj(login).at("token").as_string());
    auto p = api_.Post("/v2/projects", json::object{{"name", "files"}});
    ASSERT_EQ(p.status, 201u) << p.body;
    project_id_ = Api::Obj(p).at("id").as_int64();
  }

  void SetUp() override {
    port_ = FreePort();
    hub_ = std::make_unique<FakeHub>(dir_.path());
  }

  void TearDown() override {
    if (server_) server_->Signal(SIGKILL);
    KillEngines(dir_.path() + "/data/worker/engines");
  }

  std::string MakeTinyGguf() {
    const std::string path = dir_.path() + "/tiny.gguf";
    const std::string make = SegmaBinary() + " model make-test --shape tiny --out " + path + " > " +
                             dir_.path() + "/make.log 2>&1";
    EXPECT_EQ(std::system(make.c_str()), 0) << ReadFile(dir_.path() + "/make.log");
    return ReadFile(path);
  }

  int64_t Deploy(const std::string& name, const json::object& source, const std::string& backend) {
    json::object body{{"name", name},
                      {"project_id", project_id_},
                      {"source", source},
                      {"replicas", 1},
                      {"context_length", 256}};
    if (!backend.empty()) body["backend"] = backend;
    auto created = api_.Post("/v2/models", body);
    EXPECT_EQ(created.status, 201u) << created.body;
    return Api::Obj(created).contains("id") ? Api::Obj(created).at("id").as_int64() : 0;
  }

  json::object Instance(int64_t model_id) { return FirstInstance(api_, model_id); }

  std::string State(int64_t model_id) { return InstanceState(api_, model_id); }

  json::array Files() {
    auto list = Api::Obj(api_.Get("/v2/model-files"));
    return list.contains("items") ? list.at("items").as_array() : json::array();
  }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<FakeHub> hub_;
  std::unique_ptr<Process> server_;
  Api api_;
  int64_t project_id_ = 0;
};

TEST_F(ModelFilesTest, HuggingFaceGgufDownloadsThenRunsOnLlamaServer) {
  if (!fs::exists(kLlamaBin)) GTEST_SKIP() << "llama-server not built";
  const std::string gguf = MakeTinyGguf();
  ASSERT_GT(gguf.size(), 0u);
  hub_->AddFile("huggingface", "org/tiny", "main", "tiny-f32.gguf", gguf);
  hub_->AddFile("huggingface", "org/tiny", "main", "README.md", "# tiny\n", /*lfs=*/false);
  // About three seconds of download, so that DOWNLOADING can be watched.
  hub_->SetChunkDelayMs(static_cast<int>(std::max<size_t>(1, 3000 / (gguf.size() / 16384 + 1))));
  StartServer();

  const int64_t model_id =
      Deploy("tiny", json::object{{"type", "huggingface"}, {"repo", "org/tiny"}, {"params_b", 0.1}},
             "llama.cpp");
  std::set<std::string> seen;
  std::string progress_message;
  ASSERT_TRUE(WaitUntil(
      [&] {
        json::object i = Instance(model_id);
        if (!i.contains("state")) return false;
        const std::string state(i.at("state").as_string());
        seen.insert(state);
        const std::string msg(i.at("state_message").as_string());
        if (state == "DOWNLOADING" && msg.find('%') != std::string::npos) progress_message = msg;
        return state == "RUNNING" || state == "ERROR";
      },
      std::chrono::seconds(120)))
      << json::serialize(Instance(model_id)) << server_->Log();
  ASSERT_EQ(State(model_id), "RUNNING") << json::serialize(Instance(model_id)) << server_->Log();
  EXPECT_TRUE(seen.count("DOWNLOADING")) << "states seen: " << seen.size();
  EXPECT_NE(progress_message.find("downloading org/tiny:"), std::string::npos) << progress_message;

  // The file is listed as ready on the worker, complete, and nothing else was fetched.
  json::array files = Files();
  ASSERT_EQ(files.size(), 1u) << json::serialize(files);
  const json::object f = files[0].as_object();
  EXPECT_EQ(f.at("state").as_string(), "ready");
  EXPECT_EQ(f.at("size_bytes").as_int64(), static_cast<int64_t>(gguf.size()));
  EXPECT_EQ(f.at("progress").as_double(), 100.0);
  const std::string local(f.at("local_path").as_string());
  EXPECT_EQ(ReadFile(local), gguf);
  EXPECT_EQ(local.rfind(dir_.path() + "/data/worker/models/huggingface/org/tiny/main/", 0), 0u)
      << local;
  for (const auto& r : hub_->requests()) {
    EXPECT_EQ(r.target.find("README.md"), std::string::npos) << "fetched " << r.target;
  }

  // Real tokens from the engine.
  const int engine_port = static_cast<int>(Instance(model_id).at("port").as_int64());
  http::ClientRequest req;
  req.method = verb::post;
  req.url = "http://127.0.0.1:" + std::to_string(engine_port) + "/v1/completions";
  req.Bearer(
      EngineSecret(dir_.path() + "/data/worker/engines", Instance(model_id).at("id").as_int64()));
  req.JsonBody(json::object{{"model", "tiny"}, {"prompt", "Hello"}, {"max_tokens", 4}});
  auto r = http::FetchSync(std::move(req));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200u) << r->body;

  // Deleting the files is refused while the model runs, then removes them from the cache.
  const int64_t file_id = f.at("id").as_int64();
  auto refused = api_.Call(verb::delete_, "/v2/model-files/" + std::to_string(file_id));
  EXPECT_EQ(refused.status, 409u) << refused.body;
  ASSERT_EQ(api_.Call(verb::delete_, "/v2/models/" + std::to_string(model_id)).status, 204u);
  ASSERT_TRUE(WaitUntil(
      [&] {
        return api_.Call(verb::delete_, "/v2/model-files/" + std::to_string(file_id)).status ==
               202u;
      },
      std::chrono::seconds(30)));
  ASSERT_TRUE(WaitUntil(
      [&] { return api_.Get("/v2/model-files/" + std::to_string(file_id)).status == 404u; },
      std::chrono::seconds(30)))
      << server_->Log();
  EXPECT_FALSE(fs::exists(local));
}

TEST_F(ModelFilesTest, DiskFullDuringDownloadIsAnErrorAndTheWorkerKeepsServing) {
  // 24 MiB of weights against an 8 MiB file size limit (prlimit --fsize): write() fails with EFBIG
  // as it fails with ENOSPC on a full disk. The server's own files stay far below the limit.
  std::string weights(24 << 20, 'w');
  hub_->AddFile("huggingface", "org/big", "main", "big.gguf", weights);
  StartServer({"/usr/bin/prlimit", "--fsize=8388608"});

  const int64_t big =
      Deploy("big", json::object{{"type", "huggingface"}, {"repo", "org/big"}, {"params_b", 0.1}},
             "llama.cpp");
  ASSERT_TRUE(WaitUntil([&] { return State(big) == "ERROR"; }, std::chrono::seconds(60)))
      << json::serialize(Instance(big)) << server_->Log();
  const std::string message(Instance(big).at("state_message").as_string());
  EXPECT_NE(message.find("no space left for model files"), std::string::npos) << message;
  json::array files = Files();
  ASSERT_EQ(files.size(), 1u) << json::serialize(files);
  EXPECT_EQ(files[0].at("state").as_string(), "error");
  const std::string dir = dir_.path() + "/data/worker/models/huggingface/org/big/main";
  EXPECT_FALSE(fs::exists(dir + "/big.gguf"));
  EXPECT_FALSE(fs::exists(dir + "/big.gguf.part"));

  // The worker still serves: a simulated model next to it runs.
  const int64_t sim = Deploy("sim", json::object{{"type", "simulated"}, {"params_b", 1}}, "");
  ASSERT_TRUE(WaitUntil([&] { return State(sim) == "RUNNING"; }, std::chrono::seconds(60)))
      << json::serialize(Instance(sim)) << server_->Log();
  // (The failed download is retried after 30 s; whatever its state, no complete file appeared.)
  EXPECT_FALSE(fs::exists(dir + "/big.gguf"));
  api_.Call(verb::patch, "/v2/models/" + std::to_string(sim), json::object{{"replicas", 0}});
}

TEST_F(ModelFilesTest, MissingRepositoryIsAnErrorNamingIt) {
  StartServer();
  const int64_t id = Deploy(
      "ghost", json::object{{"type", "huggingface"}, {"repo", "org/ghost"}, {"params_b", 0.1}},
      "llama.cpp");
  ASSERT_TRUE(WaitUntil([&] { return State(id) == "ERROR"; }, std::chrono::seconds(60)))
      << json::serialize(Instance(id)) << server_->Log();
  const std::string message(Instance(id).at("state_message").as_string());
  EXPECT_NE(message.find("repository org/ghost (revision main) not found"), std::string::npos)
      << message;
}

}  // namespace
}  // namespace segma::testing
