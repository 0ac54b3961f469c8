// Issue 4 end to end: a tiny random-weight GGUF written by `segma model make-test` is deployed
// through the REST API onto the embedded worker, llama.cpp's llama-server runs it (RUNNING), real
// tokens stream from it; a killed engine is restarted; replicas 0 stops the process; a restarted
// worker adopts its engine instead of starting a second one. Also a simulated model on
// `segma engine-sim`. Skipped when llama-server has not been built (scripts/build-llama).

#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

using boost::beast::http::verb;

const char kLlamaBin[] = "/var/cache/segma/llama.cpp-3.21.1/build/bin/llama-server";

class DeployTest : public ::testing::Test {
 protected:
  // --keep-engines: a SIGTERM'd segma start leaves its engines for the next start to adopt.
  void StartServer() {
    ASSERT_EQ(StartSegma(dir_.path() + "/data", port_, "deploy-admin-pw",
                         dir_.path() + "/server-" + std::to_string(++starts_) + ".log", server_,
                         api_, {"--keep-engines"}),
              "");
  }

  void SetUp() override {
    port_ = FreePort();
    StartServer();
    auto p = api_.Post("/v2/projects", json::object{{"name", "deploy"}});
    ASSERT_EQ(p.status, 201u) << p.body;
    project_id_ = Api::Obj(p).at("id").as_int64();
  }

  // Engines run in their own process groups and outlive segma by design (a restarted worker
  // adopts them): whatever a test left running is killed here.
  void TearDown() override {
    if (server_) server_->Signal(SIGKILL);
    KillEngines(dir_.path() + "/data/worker/engines");
  }

  json::object Instance(int64_t model_id) { return FirstInstance(api_, model_id); }

  std::string State(int64_t model_id) { return InstanceState(api_, model_id); }

  // The engine's pid from the supervisor's state file.
  int EnginePid(int64_t instance_id) {
    return StateFilePid(dir_.path() + "/data/worker/engines/instance-" +
                        std::to_string(instance_id) + ".json");
  }

  TempDir dir_;
  uint16_t port_ = 0;
  int starts_ = 0;
  std::unique_ptr<Process> server_;
  Api api_;
  int64_t project_id_ = 0;
};

TEST_F(DeployTest, TinyGgufOnLlamaServerStreamsRestartsStopsAndIsAdopted) {
  if (!std::filesystem::exists(kLlamaBin)) GTEST_SKIP() << "llama-server not built";
  const std::string model_path = dir_.path() + "/tiny.gguf";
  const std::string make = SegmaBinary() + " model make-test --shape tiny --out " + model_path +
                           " > " + dir_.path() + "/make.log 2>&1";
  ASSERT_EQ(std::system(make.c_str()), 0) << ReadFile(dir_.path() + "/make.log");

  auto created =
      api_.Post("/v2/models",
                json::object{{"name", "tiny"},
                             {"project_id", project_id_},
                             {"backend", "llama.cpp"},
                             {"source", json::object{{"type", "local_path"}, {"path", model_path}}},
                             {"replicas", 1},
                             {"context_length", 256}});
  ASSERT_EQ(created.status, 201u) << created.body;
  const int64_t model_id = Api::Obj(created).at("id").as_int64();

  ASSERT_TRUE(WaitUntil([&] { return State(model_id) == "RUNNING"; }, std::chrono::seconds(90)))
      << json::serialize(Instance(model_id)) << server_->Log();
  json::object inst = Instance(model_id);
  const int64_t instance_id = inst.at("id").as_int64();
  const int engine_port = static_cast<int>(inst.at("port").as_int64());
  ASSERT_GT(engine_port, 0);

  // What llama.cpp itself did with segma's -ngl: the tiny model's 2 blocks and its output layer
  // are 3 layers in llama.cpp's count, and all of them were asked for (-ngl 2 would have left
  // a block on the CPU; issue 14).
  const std::string engine_log =
      ReadFile(dir_.path() + "/data/worker/logs/instance-" + std::to_string(instance_id) + ".log");
  EXPECT_NE(engine_log.find("offloaded 3/3 layers to GPU"), std::string::npos) << engine_log;

  // Real streamed tokens from the engine.
  http::ClientRequest req;
  req.method = verb::post;
  req.url = "http://127.0.0.1:" + std::to_string(engine_port) + "/v1/chat/completions";
  req.Bearer(EngineSecret(dir_.path() + "/data/worker/engines", instance_id));
  req.JsonBody(json::object{
      {"model", "tiny"},
      {"stream", true},
      {"max_tokens", 8},
      {"messages", json::array{json::object{{"role", "user"}, {"content", "Hello"}}}}});
  std::string streamed;
  auto r = http::StreamSync(std::move(req), [&](std::string_view d) {
    streamed.append(d);
    return true;
  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200u);
  EXPECT_NE(streamed.find("\"delta\""), std::string::npos) << streamed;
  EXPECT_NE(streamed.find("data: [DONE]"), std::string::npos) << streamed;

  // Kill the engine: the supervisor restarts it and counts the restart.
  const int pid = EnginePid(instance_id);
  ASSERT_GT(pid, 0);
  ::kill(-pid, SIGKILL);
  ASSERT_TRUE(WaitUntil(
      [&] {
        json::object i = Instance(model_id);
        return i.contains("restart_count") && i.at("restart_count").as_int64() >= 1 &&
               i.at("state").as_string() == "RUNNING";
      },
      std::chrono::seconds(60)))
      << json::serialize(Instance(model_id));
  const int restarted_pid = EnginePid(instance_id);
  EXPECT_NE(restarted_pid, pid);

  // Restart segma itself (--keep-engines): the engine is adopted (same process), not duplicated
  // or orphaned.
  server_->Signal(SIGTERM);
  ASSERT_TRUE(server_->Wait(std::chrono::seconds(30)).has_value());
  EXPECT_EQ(::kill(restarted_pid, 0), 0) << "the engine outlives the worker process";
  StartServer();
  ASSERT_TRUE(WaitUntil([&] { return State(model_id) == "RUNNING"; }, std::chrono::seconds(60)))
      << json::serialize(Instance(model_id)) << server_->Log();
  EXPECT_EQ(EnginePid(instance_id), restarted_pid) << "adopted, not restarted";

  // Replicas 0: the engine process is gone.
  auto scaled = api_.Call(verb::patch, "/v2/models/" + std::to_string(model_id),
                          json::object{{"replicas", 0}});
  ASSERT_EQ(scaled.status, 200u) << scaled.body;
  ASSERT_TRUE(WaitUntil([&] { return ::kill(restarted_pid, 0) != 0; }, std::chrono::seconds(30)))
      << "engine still running after replicas=0";
  EXPECT_TRUE(Instance(model_id).empty());
}

TEST_F(DeployTest, SimulatedModelRunsOnEngineSim) {
  auto created = api_.Post(
      "/v2/models", json::object{{"name", "chat"},
                                 {"project_id", project_id_},
                                 {"source", json::object{{"type", "simulated"}, {"params_b", 8}}},
                                 {"replicas", 1}});
  ASSERT_EQ(created.status, 201u) << created.body;
  const int64_t model_id = Api::Obj(created).at("id").as_int64();
  ASSERT_TRUE(WaitUntil([&] { return State(model_id) == "RUNNING"; }, std::chrono::seconds(60)))
      << json::serialize(Instance(model_id)) << server_->Log();
  const int engine_port = static_cast<int>(Instance(model_id).at("port").as_int64());
  http::ClientRequest req;
  req.method = verb::post;
  req.url = "http://127.0.0.1:" + std::to_string(engine_port) + "/v1/chat/completions";
  req.Bearer(
      EngineSecret(dir_.path() + "/data/worker/engines", Instance(model_id).at("id").as_int64()));
  req.JsonBody(
      json::object{{"model", "chat"},
                   {"max_tokens", 4},
                   {"messages", json::array{json::object{{"role", "user"}, {"content", "Hi"}}}}});
  auto r = http::FetchSync(std::move(req));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200u) << r->body;
  EXPECT_NE(r->body.find("\"usage\""), std::string::npos);

  // Through the gateway with an inference key: /v1/models, a streamed chat, refusals, usage.
  auto key = api_.Post("/v2/api-keys", json::object{{"name", "app"},
                                                    {"project_id", project_id_},
                                                    {"scope", "inference"},
                                                    {"allowed_models", json::array{"chat"}}});
  ASSERT_EQ(key.status, 201u) << key.body;
  Api gw{api_.base, std::string(Api::Obj(key).at("secret").as_string())};
  auto chat_body = [](const std::string& model, bool stream) {
    return json::value(json::object{
        {"model", model},
        {"stream", stream},
        {"max_tokens", 5},
        {"messages", json::array{json::object{{"role", "user"}, {"content", "Hello there"}}}}});
  };
  // The route table follows instance events: wait until the replica is routable.
  ASSERT_TRUE(WaitUntil(
      [&] { return gw.Post("/v1/chat/completions", chat_body("chat", false)).status == 200; },
      std::chrono::seconds(20)));
  auto models = gw.Get("/v1/models");
  EXPECT_EQ(models.status, 200u);
  EXPECT_NE(models.body.find("\"id\":\"chat\""), std::string::npos) << models.body;

  http::ClientRequest sreq;
  sreq.method = verb::post;
  sreq.url = api_.base + "/v1/chat/completions";
  sreq.Bearer(gw.token);
  sreq.JsonBody(chat_body("chat", true));
  std::string streamed;
  auto sr = http::StreamSync(std::move(sreq), [&](std::string_view d) {
    streamed.append(d);
    return true;
  });
  ASSERT_TRUE(sr.ok());
  EXPECT_EQ(sr->status, 200u);
  EXPECT_NE(sr->Header("x-segma-overhead-us"), "");
  EXPECT_NE(streamed.find("\"delta\""), std::string::npos) << streamed;
  EXPECT_NE(streamed.find("data: [DONE]"), std::string::npos) << streamed;
  EXPECT_EQ(streamed.find("\"usage\":{"), std::string::npos) << "usage chunk not asked for";

  auto not_allowed = gw.Post("/v1/chat/completions", chat_body("other", false));
  EXPECT_TRUE(not_allowed.status == 403u || not_allowed.status == 404u) << not_allowed.body;
  auto no_key =
      Api{api_.base, "sk-segma-nope"}.Post("/v1/chat/completions", chat_body("chat", false));
  EXPECT_EQ(no_key.status, 401u);
  EXPECT_NE(no_key.body.find("\"type\""), std::string::npos) << "OpenAI error format";

  // Usage rows arrive in batches off the request path.
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto u = Api::Obj(
            api_.Get("/v2/usage?group_by=model&project_id=" + std::to_string(project_id_)));
        if (!u.contains("items") || u.at("items").as_array().empty()) return false;
        return u.at("items").as_array()[0].at("requests").as_int64() >= 2;
      },
      std::chrono::seconds(20)))
      << api_.Get("/v2/usage?group_by=model").body;
  auto csv = api_.Get("/v2/usage?group_by=model&format=csv");
  EXPECT_EQ(csv.status, 200u);
  EXPECT_EQ(csv.body.rfind("model,requests,errors,prompt_tokens,completion_tokens", 0), 0u)
      << csv.body;

  // Stop the engine before the test ends, and wait until it is gone: an engine left listening
  // would answer the next test's readiness probe on the same port.
  const int sim_pid = EnginePid(Instance(model_id).at("id").as_int64());
  auto scaled = api_.Call(verb::patch, "/v2/models/" + std::to_string(model_id),
                          json::object{{"replicas", 0}});
  EXPECT_EQ(scaled.status, 200u);
  if (sim_pid > 0) {
    EXPECT_TRUE(WaitUntil([&] { return ::kill(sim_pid, 0) != 0; }, std::chrono::seconds(30)));
  }
}

// A backend defined through the API (not built in) whose template starts segma's simulator: the
// worker receives the definition with the model, renders the template and runs it.
TEST_F(DeployTest, CustomBackendDefinedThroughTheApiRuns) {
  auto backend = api_.Post(
      "/v2/backends",
      json::object{
          {"name", "my-sim"},
          {"health_path", "/health"},
          {"versions",
           json::object{
               {"1.0",
                json::object{
                    {"command", json::array{SegmaBinary(), "engine-sim", "--host", "{{host}}",
                                            "--port", "{{port}}", "--model", "{{model_name}}",
                                            json::object{{"when", "ctx_size"},
                                                         {"args", json::array{"--max-model-len",
                                                                              "{{ctx_size}}"}}}}},
                    {"env", json::object{{"MY_SIM_INSTANCE", "{{instance_name}}"}}}}}}}});
  ASSERT_EQ(backend.status, 201u) << backend.body;
  auto created = api_.Post(
      "/v2/models", json::object{{"name", "custom-chat"},
                                 {"project_id", project_id_},
                                 {"backend", "my-sim"},
                                 {"context_length", 2048},
                                 {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                                 {"replicas", 1}});
  ASSERT_EQ(created.status, 201u) << created.body;
  const int64_t model_id = Api::Obj(created).at("id").as_int64();
  ASSERT_TRUE(WaitUntil([&] { return State(model_id) == "RUNNING"; }, std::chrono::seconds(60)))
      << json::serialize(Instance(model_id)) << server_->Log();
  json::object inst = Instance(model_id);
  const int64_t instance_id = inst.at("id").as_int64();
  const int pid = EnginePid(instance_id);
  ASSERT_GT(pid, 0);
  // The process is the one the template describes, with the rendered flags and env.
  std::string cmdline = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
  std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
  EXPECT_NE(cmdline.find("engine-sim"), std::string::npos) << cmdline;
  EXPECT_NE(cmdline.find("--model custom-chat"), std::string::npos) << cmdline;
  EXPECT_NE(cmdline.find("--max-model-len 2048"), std::string::npos) << cmdline;
  std::string environ = ReadFile("/proc/" + std::to_string(pid) + "/environ");
  EXPECT_NE(environ.find("MY_SIM_INSTANCE=" + std::string(inst.at("name").as_string())),
            std::string::npos);

  http::ClientRequest req;
  req.method = verb::post;
  req.url =
      "http://127.0.0.1:" + std::to_string(inst.at("port").as_int64()) + "/v1/chat/completions";
  req.Bearer(EngineSecret(dir_.path() + "/data/worker/engines", inst.at("id").as_int64()));
  req.JsonBody(
      json::object{{"model", "custom-chat"},
                   {"max_tokens", 4},
                   {"messages", json::array{json::object{{"role", "user"}, {"content", "Hi"}}}}});
  auto r = http::FetchSync(std::move(req));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200u) << r->body;
  EXPECT_NE(r->body.find("\"choices\""), std::string::npos) << r->body;

  // In use: the backend cannot be deleted; after the model is gone it can, and the engine is too.
  auto refused = api_.Call(verb::delete_, "/v2/backends/my-sim");
  EXPECT_EQ(refused.status, 409u) << refused.body;
  ASSERT_EQ(api_.Call(verb::delete_, "/v2/models/" + std::to_string(model_id)).status, 204u);
  EXPECT_TRUE(WaitUntil([&] { return ::kill(pid, 0) != 0; }, std::chrono::seconds(30)))
      << "engine still running after its model was deleted";
  EXPECT_EQ(api_.Call(verb::delete_, "/v2/backends/my-sim").status, 204u);
}

}  // namespace
}  // namespace segma::testing
