// Issue 21, "Engines are not open doors" (docs/adr/0035-engine-secrets.md), with real processes:
// every engine a worker starts requires its own secret. The engine port without it: 401; with
// it: served; through the gateway (the server's own and a stand-alone replica): served; the
// worker's readiness probe and metrics scraper use it; after a worker restart that adopts the
// engine the gateway still gets through. The secret never appears in a /v2 answer, in the logs,
// or anywhere in the data directories but its own file and the server's database.
// Once on engine-sim (`segma server` + `segma worker`, restarted), once on a real llama-server
// (skipped when scripts/build-llama has not built it).

#include <signal.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

using boost::beast::http::verb;
using std::chrono::seconds;

const char kLlamaBin[] = "/var/cache/segma/llama.cpp-3.21.1/build/bin/llama-server";

std::string Str(const json::object& o, const char* key) {
  return o.contains(key) && o.at(key).is_string() ? std::string(o.at(key).as_string()) : "";
}

int64_t Int(const json::object& o, const char* key) {
  return o.contains(key) && o.at(key).is_int64() ? o.at(key).as_int64() : 0;
}

json::value Chat(const std::string& model) {
  return json::object{{"model", model},
                      {"max_tokens", 3},
                      {"messages", json::array{json::object{{"role", "user"}, {"content", "Hi"}}}}};
}

// Every file under `dir` (recursively) that contains `needle`, except the engines' own secret
// files and the server's database, which hold it by design.
std::vector<std::string> FilesContaining(const std::string& dir, const std::string& needle) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    const std::string name = it->path().filename().string();
    if (it->path().extension() == ".key" || name.starts_with("segma.db")) continue;
    if (ReadFile(it->path().string()).find(needle) != std::string::npos) {
      out.push_back(it->path().string());
    }
  }
  return out;
}

class EngineSecretTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (replica_) replica_->Signal(SIGKILL);
    if (worker_) worker_->Signal(SIGKILL);
    if (server_) server_->Signal(SIGKILL);
    KillEngines(engines_dir_);
  }

  std::string WorkerDir() const { return dir_.path() + "/worker"; }

  // `segma server` and one `segma worker` (which the test restarts).
  void StartServerAndWorker() {
    port_ = FreePort();
    ASSERT_EQ(StartServer(dir_.path() + "/server", port_, "secret-admin-pw",
                          dir_.path() + "/server.log", server_, api_),
              "");
    token_ = RegistrationToken(api_);
    ASSERT_FALSE(token_.empty());
    engines_dir_ = WorkerDir() + "/engines";
    StartWorker();
    ASSERT_TRUE(WaitForReadyWorkers(api_, 1, seconds(30))) << Logs();
    auto p = api_.Post("/v2/projects", json::object{{"name", "secrets"}});
    ASSERT_EQ(p.status, 201u) << p.body;
    project_id_ = Api::Obj(p).at("id").as_int64();
  }

  void StartWorker() {
    worker_ = std::make_unique<Process>(
        std::vector<std::string>{SegmaBinary(),
                                 "worker",
                                 "--server",
                                 api_.base,
                                 "--token",
                                 token_,
                                 "--name",
                                 "w1",
                                 "--port",
                                 "0",
                                 "--address",
                                 "127.0.0.1",
                                 "--advertise-address",
                                 "127.0.0.1",
                                 "--fake-gpus",
                                 "1xH100:80",
                                 "--heartbeat-interval",
                                 "0.2",
                                 "--engine-metrics-interval",
                                 "0.2",
                                 "--engine-orphan-grace",
                                 "120",
                                 "--data-dir",
                                 WorkerDir()},
        std::map<std::string, std::string>{},
        dir_.path() + "/worker-" + std::to_string(++worker_starts_) + ".log");
  }

  std::string InferenceKey() {
    auto key = api_.Post(
        "/v2/api-keys",
        json::object{{"name", "app"}, {"project_id", project_id_}, {"scope", "inference"}});
    EXPECT_EQ(key.status, 201u) << key.body;
    return key.status == 201u ? std::string(Api::Obj(key).at("secret").as_string()) : "";
  }

  json::object Instance(int64_t model_id) { return FirstInstance(api_, model_id); }

  // A model's one instance once RUNNING, and its engine's secret.
  struct Running {
    int64_t model_id = 0;
    int64_t id = 0;      // the instance's
    std::string engine;  // the engine's base URL
    std::string secret;  // read from the worker's key file
  };
  // Creates the model `body` and waits until its instance is RUNNING: the worker's readiness
  // probe got through with the secret. Call with ASSERT_NO_FATAL_FAILURE.
  void Deploy(const json::object& body, seconds timeout, Running* out) {
    auto created = api_.Post("/v2/models", body);
    ASSERT_EQ(created.status, 201u) << created.body;
    out->model_id = Api::Obj(created).at("id").as_int64();
    ASSERT_TRUE(
        WaitUntil([&] { return Str(Instance(out->model_id), "state") == "RUNNING"; }, timeout))
        << json::serialize(Instance(out->model_id)) << Logs();
    const json::object inst = Instance(out->model_id);
    out->id = Int(inst, "id");
    out->engine = "http://127.0.0.1:" + std::to_string(Int(inst, "port"));
    out->secret = EngineSecret(engines_dir_, out->id);
    ASSERT_TRUE(out->secret.starts_with("segma_eng_")) << out->secret;
  }

  int EnginePid(int64_t instance_id) {
    return StateFilePid(engines_dir_ + "/instance-" + std::to_string(instance_id) + ".json");
  }

  // The worker's own /metrics, at the port it registered.
  std::string WorkerMetrics() {
    auto workers = Api::Obj(api_.Get("/v2/workers"));
    if (!workers.contains("items") || workers.at("items").as_array().empty()) return "";
    const json::object& w = workers.at("items").as_array()[0].as_object();
    Api worker{"http://127.0.0.1:" + std::to_string(Int(w, "port")), ""};
    return worker.Get("/metrics").body;
  }

  std::string Logs() {
    std::string out = server_ ? "\n--- server\n" + server_->Log() : "";
    if (worker_) out += "\n--- worker\n" + worker_->Log();
    return out;
  }

  // Every place the secret must not be: the answers of the REST API about the instance, the
  // processes' logs, and every file of the server's and the worker's data directories but the
  // secret's own file and the server's database.
  void ExpectNowhere(const std::string& secret, int64_t model_id, int64_t instance_id) {
    for (const std::string& path :
         {std::string("/v2/model-instances"),
          "/v2/model-instances?model_id=" + std::to_string(model_id),
          "/v2/model-instances/" + std::to_string(instance_id), std::string("/v2/models"),
          "/v2/models/" + std::to_string(model_id), std::string("/v2/workers"),
          std::string("/v2/audit-events?per_page=500"),
          "/v2/model-instances/" + std::to_string(instance_id) + "/logs?tail=100000"}) {
      auto r = api_.Get(path);
      EXPECT_EQ(r.status, 200u) << path << ": " << r.body;
      EXPECT_EQ(r.body.find(secret), std::string::npos) << path << ": " << r.body;
      EXPECT_EQ(r.body.find("engine_secret"), std::string::npos) << path;
    }
    EXPECT_EQ(server_->Log().find(secret), std::string::npos) << "in the server's log";
    for (int i = 1; i <= worker_starts_; ++i) {
      const std::string log = ReadFile(dir_.path() + "/worker-" + std::to_string(i) + ".log");
      EXPECT_FALSE(log.empty());
      EXPECT_EQ(log.find(secret), std::string::npos) << "in worker log " << i;
    }
    if (replica_) {
      EXPECT_EQ(replica_->Log().find(secret), std::string::npos) << "in the replica's log";
    }
    EXPECT_EQ(FilesContaining(dir_.path(), secret), std::vector<std::string>{});
  }

  TempDir dir_;
  uint16_t port_ = 0;
  int worker_starts_ = 0;
  std::unique_ptr<Process> server_;
  std::unique_ptr<Process> worker_;
  std::unique_ptr<Process> replica_;
  std::string token_;
  std::string engines_dir_;
  Api api_;
  int64_t project_id_ = 0;
};

TEST_F(EngineSecretTest, EngineSimServesOnlyWhoHoldsItsSecretAcrossAWorkerRestart) {
  StartServerAndWorker();
  Running run;
  ASSERT_NO_FATAL_FAILURE(
      Deploy(json::object{{"name", "chat"},
                          {"project_id", project_id_},
                          {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                          {"replicas", 1}},
             seconds(60), &run));
  const int64_t model_id = run.model_id;
  const int64_t id = run.id;
  const std::string& engine = run.engine;

  // Its secret: 256 random bits in a file only the worker's user reads.
  const std::string& secret = run.secret;
  struct stat st {};
  ASSERT_EQ(::stat((engines_dir_ + "/instance-" + std::to_string(id) + ".key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Not on the engine's command line (ps shows that to every user of the host).
  const int pid = EnginePid(id);
  ASSERT_GT(pid, 0);
  const std::string cmdline = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
  EXPECT_EQ(cmdline.find(secret), std::string::npos);
  EXPECT_NE(cmdline.find("--api-key-file"), std::string::npos);

  // The engine port without the secret: 401 in OpenAI's format; a client's own key is no better.
  const std::string client_key = InferenceKey();
  for (const std::string& key : {std::string(), client_key}) {
    Api direct{engine, key};
    auto refused = direct.Post("/v1/chat/completions", Chat("chat"));
    EXPECT_EQ(refused.status, 401u) << refused.body;
    EXPECT_EQ(Str(Api::Obj(refused).at("error").as_object(), "type"), "authentication_error")
        << refused.body;
    EXPECT_EQ(direct.Get("/metrics").status, 401u);
    EXPECT_EQ(direct.Get("/health").status, 200u) << "health probes stay as the engine has them";
  }
  // With it: served.
  Api keyed{engine, secret};
  EXPECT_EQ(keyed.Post("/v1/chat/completions", Chat("chat")).status, 200u);

  // Through the gateway, which sends the engine its secret and never the client's key.
  Api gw{api_.base, client_key};
  ASSERT_TRUE(WaitUntil([&] { return gw.Post("/v1/chat/completions", Chat("chat")).status == 200; },
                        seconds(20)))
      << gw.Post("/v1/chat/completions", Chat("chat")).body;
  // And through a stand-alone gateway, which learns it from the gateway-token state document.
  std::string gateway_token = ReadFile(dir_.path() + "/server/gateway_token");
  gateway_token = gateway_token.substr(0, gateway_token.find('\n'));
  const uint16_t replica_port = FreePort();
  replica_ = std::make_unique<Process>(
      std::vector<std::string>{SegmaBinary(), "gateway", "--server", api_.base, "--token",
                               gateway_token, "--address", "127.0.0.1", "--port",
                               std::to_string(replica_port), "--data-dir",
                               dir_.path() + "/replica"},
      std::map<std::string, std::string>{}, dir_.path() + "/replica.log");
  Api replica{"http://127.0.0.1:" + std::to_string(replica_port), client_key};
  ASSERT_TRUE(
      WaitUntil([&] { return replica.Post("/v1/chat/completions", Chat("chat")).status == 200; },
                seconds(30)))
      << replica_->Log();

  // The worker's metrics scraper gets through too: the engine's own series are re-exported.
  ASSERT_TRUE(WaitUntil(
      [&] {
        const std::string m = WorkerMetrics();
        return m.find("segma_engine_up{") != std::string::npos &&
               m.find("vllm:num_requests_running{") != std::string::npos;
      },
      seconds(20)))
      << WorkerMetrics();
  {
    const std::string m = WorkerMetrics();
    const size_t up = m.find("segma_engine_up{");
    ASSERT_NE(up, std::string::npos);
    const std::string line = m.substr(up, m.find('\n', up) - up);
    EXPECT_TRUE(line.ends_with(" 1")) << line;
  }

  // A worker killed and started again adopts the running engine (same process, same secret,
  // which it reads from the file), and the gateways still get through.
  worker_->Signal(SIGKILL);
  ASSERT_TRUE(worker_->Wait(seconds(10)).has_value());
  StartWorker();
  ASSERT_TRUE(WaitUntil(
      [&] {
        return worker_->Log().find("adopted the running engine of instance " +
                                   std::to_string(id)) != std::string::npos;
      },
      seconds(60)))
      << Logs();
  ASSERT_TRUE(WaitUntil(
      [&] {
        return worker_->Log().find("engine for instance " + std::to_string(id) + " (chat") !=
                   std::string::npos &&
               worker_->Log().find("is healthy on port") != std::string::npos;
      },
      seconds(60)))
      << Logs();
  EXPECT_EQ(EnginePid(id), pid) << "adopted, not started again";
  EXPECT_EQ(EngineSecret(engines_dir_, id), secret);
  ASSERT_TRUE(
      WaitUntil([&] { return Str(Instance(model_id), "state") == "RUNNING"; }, seconds(30)));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(gw.Post("/v1/chat/completions", Chat("chat")).status, 200u);
    EXPECT_EQ(replica.Post("/v1/chat/completions", Chat("chat")).status, 200u);
  }
  const Api open{engine, ""};
  EXPECT_EQ(open.Post("/v1/chat/completions", Chat("chat")).status, 401u);

  ExpectNowhere(secret, model_id, id);
}

TEST_F(EngineSecretTest, RealLlamaServerServesOnlyWhoHoldsItsSecret) {
  if (!std::filesystem::exists(kLlamaBin)) GTEST_SKIP() << "llama-server not built";
  StartServerAndWorker();
  const std::string model_path = dir_.path() + "/tiny.gguf";
  const std::string make = SegmaBinary() + " model make-test --shape tiny --out " + model_path +
                           " > " + dir_.path() + "/make.log 2>&1";
  ASSERT_EQ(std::system(make.c_str()), 0) << ReadFile(dir_.path() + "/make.log");
  Running run;
  ASSERT_NO_FATAL_FAILURE(
      Deploy(json::object{{"name", "tiny"},
                          {"project_id", project_id_},
                          {"backend", "llama.cpp"},
                          {"source", json::object{{"type", "local_path"}, {"path", model_path}}},
                          {"replicas", 1},
                          {"context_length", 256}},
             seconds(120), &run));
  const int64_t model_id = run.model_id;
  const int64_t id = run.id;
  const std::string& engine = run.engine;
  const std::string& secret = run.secret;
  const std::string cmdline = ReadFile("/proc/" + std::to_string(EnginePid(id)) + "/cmdline");
  EXPECT_EQ(cmdline.find(secret), std::string::npos);

  // llama-server itself: 401 without its secret (its /health stays open, which the probes use).
  Api open{engine, ""};
  auto refused = open.Post("/v1/chat/completions", Chat("tiny"));
  EXPECT_EQ(refused.status, 401u) << refused.body;
  EXPECT_EQ(open.Get("/metrics").status, 401u);
  EXPECT_EQ(open.Get("/health").status, 200u);
  Api keyed{engine, secret};
  auto served = keyed.Post("/v1/chat/completions", Chat("tiny"));
  EXPECT_EQ(served.status, 200u) << served.body;

  const std::string client_key = InferenceKey();
  Api gw{api_.base, client_key};
  ASSERT_TRUE(WaitUntil([&] { return gw.Post("/v1/chat/completions", Chat("tiny")).status == 200; },
                        seconds(30)))
      << gw.Post("/v1/chat/completions", Chat("tiny")).body;
  // The worker scrapes its /metrics with the secret.
  ASSERT_TRUE(WaitUntil([&] { return WorkerMetrics().find("llamacpp:") != std::string::npos; },
                        seconds(20)))
      << WorkerMetrics();

  ExpectNowhere(secret, model_id, id);
}

}  // namespace
}  // namespace segma::testing
