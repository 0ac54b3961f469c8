// One llama.cpp instance split across two workers (docs/adr/0014-rpc-server-split.md): `segma
// server` and two `segma worker` processes with one simulated GPU each; a model that asks for two
// GPUs per replica with distributed_inference_across_workers can only be placed across both. The
// second worker runs ggml-rpc-server and reports its port; the first starts llama-server with
// `--rpc` to it; tokens stream through the gateway. A killed rpc-server comes back and llama-server
// is started again against it; deleting the model leaves no process behind. The cached llama.cpp
// build is CPU only: the rpc-server serves its layers from RAM. Skipped when llama.cpp has not been
// built (scripts/build-llama).

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

using boost::beast::http::verb;

const char kLlamaDir[] = "/var/cache/segma/llama.cpp-3.21.1/build/bin";

// The argv of a running process (empty when it is gone).
std::vector<std::string> Cmdline(int pid) {
  std::string raw = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
  std::vector<std::string> out;
  size_t start = 0;
  while (start < raw.size()) {
    size_t end = raw.find('\0', start);
    if (end == std::string::npos) end = raw.size();
    out.push_back(raw.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

bool Alive(int pid) { return pid > 0 && ::kill(pid, 0) == 0; }

class RpcSplitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    server_ = std::make_unique<Process>(
        std::vector<std::string>{SegmaBinary(), "server", "--data-dir", dir_.path() + "/server",
                                 "--address", "127.0.0.1", "--port", std::to_string(port_)},
        std::map<std::string, std::string>{{"SEGMA_BOOTSTRAP_PASSWORD", "rpc-admin-pw"}},
        dir_.path() + "/server.log");
    api_.base = "http://127.0.0.1:" + std::to_string(port_);
    ASSERT_TRUE(
        WaitUntil([&] { return api_.Get("/healthz").status == 200; }, std::chrono::seconds(30)))
        << server_->Log();
    auto login = api_.Post("/v2/auth/login",
                           json::object{{"username", "admin"}, {"password", "rpc-admin-pw"}});
    ASSERT_EQ(login.status, 200u) << login.body;
    api_.token = std::string(Api::Obj(login).at("token").as_string());
    auto clusters = Api::Obj(api_.Get("/v2/clusters"));
    ASSERT_FALSE(clusters.at("items").as_array().empty());
    token_ = std::string(clusters.at("items").as_array()[0].at("registration_token").as_string());
    for (const char* name : {"worker-a", "worker-b"}) StartWorker(name);
    ASSERT_TRUE(WaitUntil(
        [&] {
          auto w = Api::Obj(api_.Get("/v2/workers"));
          if (!w.contains("items")) return false;
          int ready = 0;
          for (const auto& item : w.at("items").as_array()) {
            ready += item.at("state").as_string() == "READY" ? 1 : 0;
          }
          return ready == 2;
        },
        std::chrono::seconds(30)))
        << api_.Get("/v2/workers").body;
    auto p = api_.Post("/v2/projects", json::object{{"name", "split"}});
    ASSERT_EQ(p.status, 201u) << p.body;
    project_id_ = Api::Obj(p).at("id").as_int64();
  }

  // Starts (or starts again) worker `name`, with one simulated 80 GiB H100.
  void StartWorker(const std::string& name) {
    std::vector<std::string> args = {SegmaBinary(), "worker", "--server", api_.base};
    for (const std::string& a : {std::string("--token"), token_, std::string("--name"), name}) {
      args.push_back(a);
    }
    for (const char* a : {"--port", "0", "--address", "127.0.0.1", "--advertise-address",
                          "127.0.0.1", "--fake-gpus", "1xH100:80", "--heartbeat-interval", "0.2"}) {
      args.push_back(a);
    }
    args.push_back("--data-dir");
    args.push_back(WorkerDir(name));
    workers_[name] = std::make_unique<Process>(
        std::move(args), std::map<std::string, std::string>{},
        dir_.path() + "/" + name + "-" + std::to_string(++starts_) + ".log");
  }

  // Engines outlive segma by design (a restarted worker adopts them): kill what is left.
  void TearDown() override {
    for (auto& [name, w] : workers_) w->Signal(SIGKILL);
    if (server_) server_->Signal(SIGKILL);
    for (const char* name : {"worker-a", "worker-b"}) KillEngines(WorkerDir(name) + "/engines");
  }

  std::string WorkerDir(const std::string& name) const { return dir_.path() + "/" + name; }

  json::object Instance(int64_t model_id) { return FirstInstance(api_, model_id); }

  std::string State(int64_t model_id) { return InstanceState(api_, model_id); }

  // pid from a supervisor state file ("instance-<id>" or "rpc-server-<id>") of a worker.
  int StatePid(const std::string& worker, const std::string& file) {
    return StateFilePid(WorkerDir(worker) + "/engines/" + file + ".json");
  }

  std::string Logs() {
    std::string out = "\n--- server\n" + server_->Log();
    for (const auto& [name, w] : workers_) out += "\n--- " + name + "\n" + w->Log();
    return out;
  }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> server_;
  std::string token_;  // the cluster's registration token
  int starts_ = 0;
  std::map<std::string, std::unique_ptr<Process>> workers_;
  Api api_;
  int64_t project_id_ = 0;
};

TEST_F(RpcSplitTest, LlamaCppSpansTwoWorkersThroughRpcServer) {
  if (!std::filesystem::exists(std::string(kLlamaDir) + "/ggml-rpc-server")) {
    GTEST_SKIP() << "llama.cpp not built";
  }
  const std::string model_path = dir_.path() + "/tiny.gguf";
  const std::string make = SegmaBinary() + " model make-test --shape tiny --out " + model_path +
                           " > " + dir_.path() + "/make.log 2>&1";
  ASSERT_EQ(std::system(make.c_str()), 0) << ReadFile(dir_.path() + "/make.log");

  const auto created_at = std::chrono::steady_clock::now();
  auto created =
      api_.Post("/v2/models",
                json::object{{"name", "split"},
                             {"project_id", project_id_},
                             {"backend", "llama.cpp"},
                             {"source", json::object{{"type", "local_path"}, {"path", model_path}}},
                             {"replicas", 1},
                             {"context_length", 256},
                             {"gpu_selector", json::object{{"gpus_per_replica", 2}}},
                             {"distributed_inference_across_workers", true}});
  ASSERT_EQ(created.status, 201u) << created.body;
  const int64_t model_id = Api::Obj(created).at("id").as_int64();

  ASSERT_TRUE(WaitUntil([&] { return State(model_id) == "RUNNING"; }, std::chrono::seconds(120)))
      << json::serialize(Instance(model_id)) << Logs();
  const double seconds_to_running =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - created_at).count();
  RecordProperty("seconds_to_running", std::to_string(seconds_to_running));
  std::cout << "time to RUNNING: " << seconds_to_running << " s\n";

  json::object inst = Instance(model_id);
  const int64_t instance_id = inst.at("id").as_int64();
  const std::string primary(inst.at("worker_name").as_string());
  const json::array& servers = inst.at("distributed_servers").as_array();
  ASSERT_EQ(servers.size(), 1u) << json::serialize(inst);
  const json::object& server = servers[0].as_object();
  const std::string subordinate(server.at("worker_name").as_string());
  EXPECT_NE(primary, subordinate);
  EXPECT_EQ(server.at("state").as_string(), "RUNNING");
  EXPECT_EQ(server.at("address").as_string(), "127.0.0.1");
  const int rpc_port = static_cast<int>(server.at("port").as_int64());
  ASSERT_GT(rpc_port, 0);

  // ggml-rpc-server runs on the subordinate, in its own process group, on the reported port.
  const std::string rpc_file = "rpc-server-" + std::to_string(instance_id);
  const int rpc_pid = StatePid(subordinate, rpc_file);
  ASSERT_TRUE(Alive(rpc_pid)) << Logs();
  EXPECT_EQ(::getpgid(rpc_pid), rpc_pid);
  std::vector<std::string> rpc_argv = Cmdline(rpc_pid);
  ASSERT_FALSE(rpc_argv.empty());
  EXPECT_EQ(rpc_argv[0], std::string(kLlamaDir) + "/ggml-rpc-server");
  EXPECT_NE(std::find(rpc_argv.begin(), rpc_argv.end(), std::to_string(rpc_port)), rpc_argv.end());
  EXPECT_EQ(StatePid(primary, rpc_file), 0) << "no rpc-server on the main worker";

  // llama-server runs on the main worker with --rpc to it.
  const std::string engine_file = "instance-" + std::to_string(instance_id);
  const int engine_pid = StatePid(primary, engine_file);
  ASSERT_TRUE(Alive(engine_pid));
  std::vector<std::string> argv = Cmdline(engine_pid);
  auto rpc_flag = std::find(argv.begin(), argv.end(), "--rpc");
  ASSERT_NE(rpc_flag, argv.end()) << "no --rpc in llama-server's command line";
  ASSERT_NE(rpc_flag + 1, argv.end());
  EXPECT_EQ(*(rpc_flag + 1), "127.0.0.1:" + std::to_string(rpc_port));
  EXPECT_EQ(StatePid(subordinate, engine_file), 0) << "no llama-server on the subordinate";

  // Streamed tokens through the gateway.
  auto key = api_.Post("/v2/api-keys", json::object{{"name", "app"},
                                                    {"project_id", project_id_},
                                                    {"scope", "inference"},
                                                    {"allowed_models", json::array{"split"}}});
  ASSERT_EQ(key.status, 201u) << key.body;
  const std::string secret(Api::Obj(key).at("secret").as_string());
  auto stream_chat = [&](std::string& streamed) {
    http::ClientRequest req;
    req.method = verb::post;
    req.url = api_.base + "/v1/chat/completions";
    req.Bearer(secret);
    req.timeout = std::chrono::seconds(60);
    req.JsonBody(json::object{
        {"model", "split"},
        {"stream", true},
        {"max_tokens", 16},
        {"messages", json::array{json::object{{"role", "user"}, {"content", "Hello"}}}}});
    streamed.clear();
    auto r = http::StreamSync(std::move(req), [&](std::string_view d) {
      streamed.append(d);
      return true;
    });
    return r.ok() && r->status == 200 && streamed.find("\"delta\"") != std::string::npos &&
           streamed.find("data: [DONE]") != std::string::npos;
  };
  std::string streamed;
  ASSERT_TRUE(WaitUntil([&] { return stream_chat(streamed); }, std::chrono::seconds(30)))
      << streamed << Logs();
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(stream_chat(streamed)) << streamed;
  size_t chunks = 0;
  for (size_t pos = 0; (pos = streamed.find("\"delta\"", pos)) != std::string::npos; ++pos)
    ++chunks;
  std::cout << "split: " << chunks << " streamed chunks in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
            << " s\n";

  // The subordinate worker restarts: it adopts its rpc-server (same process, same port), and
  // llama-server, still connected to that process, is left alone.
  workers_[subordinate]->Signal(SIGTERM);
  ASSERT_TRUE(workers_[subordinate]->Wait(std::chrono::seconds(30)).has_value());
  ASSERT_TRUE(Alive(rpc_pid)) << "the rpc-server outlives its worker process";
  StartWorker(subordinate);
  ASSERT_TRUE(WaitUntil(
      [&] {
        return workers_[subordinate]->Log().find("adopted the running rpc-server of instance") !=
               std::string::npos;
      },
      std::chrono::seconds(30)))
      << Logs();
  ASSERT_TRUE(WaitUntil(
      [&] {
        json::object i = Instance(model_id);
        return i.contains("distributed_servers") &&
               i.at("distributed_servers").as_array()[0].at("state") == json::value("RUNNING");
      },
      std::chrono::seconds(30)));
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the main worker has seen the reports
  EXPECT_EQ(StatePid(subordinate, rpc_file), rpc_pid) << "adopted, not restarted";
  EXPECT_EQ(StatePid(primary, engine_file), engine_pid) << "llama-server kept";
  EXPECT_EQ(State(model_id), "RUNNING");
  EXPECT_TRUE(stream_chat(streamed)) << streamed << Logs();

  // The rpc-server dies: the subordinate starts a new one (backoff), and llama-server, which does
  // not reconnect, is started again against it.
  ASSERT_EQ(::kill(-rpc_pid, SIGKILL), 0);
  ASSERT_TRUE(WaitUntil(
      [&] {
        json::object i = Instance(model_id);
        if (!i.contains("distributed_servers") || i.at("state") != json::value("RUNNING") ||
            i.at("distributed_servers").as_array().empty()) {
          return false;
        }
        const json::object& s = i.at("distributed_servers").as_array()[0].as_object();
        return s.at("state").as_string() == "RUNNING" && s.at("restart_count").as_int64() >= 1 &&
               Alive(StatePid(primary, engine_file)) &&
               StatePid(primary, engine_file) != engine_pid;
      },
      std::chrono::seconds(90)))
      << json::serialize(Instance(model_id)) << Logs();
  EXPECT_FALSE(Alive(engine_pid)) << "the old llama-server was stopped";
  const int new_rpc_pid = StatePid(subordinate, rpc_file);
  const int new_engine_pid = StatePid(primary, engine_file);
  EXPECT_NE(new_rpc_pid, rpc_pid);
  const int new_rpc_port = static_cast<int>(
      Instance(model_id).at("distributed_servers").as_array()[0].at("port").as_int64());
  argv = Cmdline(new_engine_pid);
  rpc_flag = std::find(argv.begin(), argv.end(), "--rpc");
  ASSERT_NE(rpc_flag, argv.end());
  EXPECT_EQ(*(rpc_flag + 1), "127.0.0.1:" + std::to_string(new_rpc_port));
  EXPECT_TRUE(WaitUntil([&] { return stream_chat(streamed); }, std::chrono::seconds(30)))
      << streamed << Logs();

  // Deleting the model stops both processes; nothing is left behind.
  auto deleted = api_.Call(verb::delete_, "/v2/models/" + std::to_string(model_id));
  ASSERT_TRUE(deleted.status == 200u || deleted.status == 204u) << deleted.body;
  EXPECT_TRUE(WaitUntil([&] { return !Alive(new_rpc_pid) && !Alive(new_engine_pid); },
                        std::chrono::seconds(30)))
      << Logs();
  EXPECT_TRUE(WaitUntil(
      [&] { return StatePid(subordinate, rpc_file) == 0 && StatePid(primary, engine_file) == 0; },
      std::chrono::seconds(10)));
}

}  // namespace
}  // namespace segma::testing
