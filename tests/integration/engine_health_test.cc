// Issue 14, "engines that stay healthy or get replaced", with real processes: a hung engine
// (SIGSTOP, engine-sim's hang fault) leaves the gateway's rotation within seconds and is restarted;
// a foreground `segma start` stops its engines unless --keep-engines; the engine of a worker killed
// with SIGKILL and never restarted stops itself after the orphan grace, while a worker restarted
// in time adopts it; `segma worker --drain` stops every engine and reports each instance.

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

using boost::beast::http::verb;
using std::chrono::seconds;

// A process that runs: not a zombie, which kill(pid, 0) still finds until its reaper collects
// it (an engine left by a stopped worker is reparented to init, which may reap it late).
bool Alive(int pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
  const char state = stat[paren + 2];
  return state != 'Z' && state != 'X';
}

json::array Instances(const Api& api, int64_t model_id) {
  json::object list = Api::Obj(api.Get("/v2/model-instances?model_id=" + std::to_string(model_id)));
  if (!list.contains("items") || !list.at("items").is_array()) return {};
  return list.at("items").as_array();
}

std::string Str(const json::object& o, const char* key) {
  return o.contains(key) && o.at(key).is_string() ? std::string(o.at(key).as_string()) : "";
}

int64_t Int(const json::object& o, const char* key) {
  return o.contains(key) && o.at(key).is_int64() ? o.at(key).as_int64() : 0;
}

class EngineHealthTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (worker_) worker_->Signal(SIGKILL);
    if (server_) server_->Signal(SIGKILL);
    KillEngines(engines_dir_);
  }

  // `segma start` (embedded worker) with `flags`.
  void StartSegmaWith(const std::vector<std::string>& flags) {
    if (port_ == 0) port_ = FreePort();
    engines_dir_ = dir_.path() + "/data/worker/engines";
    ASSERT_EQ(StartSegma(dir_.path() + "/data", port_, "health-admin-pw",
                         dir_.path() + "/start-" + std::to_string(++starts_) + ".log", server_,
                         api_, flags),
              "");
    EnsureProject();
  }

  // `segma server` and one `segma worker` with `worker_flags`.
  void StartServerAndWorker(const std::vector<std::string>& worker_flags) {
    port_ = FreePort();
    server_ = std::make_unique<Process>(
        std::vector<std::string>{SegmaBinary(), "server", "--data-dir", dir_.path() + "/server",
                                 "--address", "127.0.0.1", "--port", std::to_string(port_)},
        std::map<std::string, std::string>{{"SEGMA_BOOTSTRAP_PASSWORD", "health-admin-pw"}},
        dir_.path() + "/server.log");
    api_.base = "http://127.0.0.1:" + std::to_string(port_);
    ASSERT_TRUE(WaitUntil([&] { return api_.Get("/healthz").status == 200; }, seconds(30)))
        << server_->Log();
    auto login = api_.Post("/v2/auth/login",
                           json::object{{"username", "admin"}, {"password", "health-admin-pw"}});
    ASSERT_EQ(login.status, 200u) << login.body;
    api_.token = std::string(Api::Obj(login).at("token").as_string());
    auto clusters = Api::Obj(api_.Get("/v2/clusters"));
    token_ = std::string(clusters.at("items").as_array()[0].at("registration_token").as_string());
    worker_flags_ = worker_flags;
    engines_dir_ = dir_.path() + "/worker/engines";
    StartWorker();
    ASSERT_TRUE(WaitUntil(
        [&] {
          auto w = Api::Obj(api_.Get("/v2/workers"));
          return w.contains("items") && !w.at("items").as_array().empty() &&
                 w.at("items").as_array()[0].at("state").as_string() == "READY";
        },
        seconds(30)))
        << api_.Get("/v2/workers").body << worker_->Log();
    EnsureProject();
  }

  std::vector<std::string> WorkerArgs() {
    std::vector<std::string> args = {SegmaBinary(),
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
                                     "--data-dir",
                                     dir_.path() + "/worker"};
    return args;
  }

  void StartWorker() {
    std::vector<std::string> args = WorkerArgs();
    args.insert(args.end(), worker_flags_.begin(), worker_flags_.end());
    worker_ =
        std::make_unique<Process>(std::move(args), std::map<std::string, std::string>{},
                                  dir_.path() + "/worker-" + std::to_string(++starts_) + ".log");
  }

  void EnsureProject() {
    if (project_id_ != 0) return;
    auto p = api_.Post("/v2/projects", json::object{{"name", "health"}});
    ASSERT_EQ(p.status, 201u) << p.body;
    project_id_ = Api::Obj(p).at("id").as_int64();
  }

  int64_t CreateModel(const std::string& name, int replicas, json::array parameters = {},
                      bool restart_on_error = true) {
    json::object body{{"name", name},
                      {"project_id", project_id_},
                      {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                      {"replicas", replicas},
                      {"restart_on_error", restart_on_error}};
    if (!parameters.empty()) body["backend_parameters"] = std::move(parameters);
    auto r = api_.Post("/v2/models", body);
    EXPECT_EQ(r.status, 201u) << r.body;
    return Api::Obj(r).contains("id") ? Api::Obj(r).at("id").as_int64() : 0;
  }

  bool AllRunning(int64_t model_id, size_t n) {
    json::array items = Instances(api_, model_id);
    return items.size() == n && std::all_of(items.begin(), items.end(), [](const json::value& v) {
             return Str(v.as_object(), "state") == "RUNNING";
           });
  }

  // The port in the engine's state file, 0 if none.
  int EnginePort(int64_t instance_id) {
    Result<json::value> v =
        ParseJson(ReadFile(engines_dir_ + "/instance-" + std::to_string(instance_id) + ".json"));
    return v.ok() && v->is_object() ? static_cast<int>(Int(v->as_object(), "port")) : 0;
  }

  int EnginePid(int64_t instance_id) {
    return StateFilePid(engines_dir_ + "/instance-" + std::to_string(instance_id) + ".json");
  }

  std::string Logs() {
    std::string out = server_ ? "\n--- server\n" + server_->Log() : "";
    if (worker_) out += "\n--- worker\n" + worker_->Log();
    return out;
  }

  TempDir dir_;
  uint16_t port_ = 0;
  int starts_ = 0;
  std::unique_ptr<Process> server_;
  std::unique_ptr<Process> worker_;
  std::vector<std::string> worker_flags_;
  std::string token_;
  std::string engines_dir_;
  Api api_;
  int64_t project_id_ = 0;
};

TEST_F(EngineHealthTest, StoppedEngineLeavesTheRotationAndIsRestarted) {
  StartSegmaWith({"--engine-liveness-period", "0.2", "--engine-liveness-timeout", "1",
                  "--engine-liveness-failures", "2"});
  const int64_t model = CreateModel("chat", 2);
  ASSERT_TRUE(WaitUntil([&] { return AllRunning(model, 2); }, seconds(60)))
      << json::serialize(Instances(api_, model)) << Logs();
  auto key =
      api_.Post("/v2/api-keys",
                json::object{{"name", "app"}, {"project_id", project_id_}, {"scope", "inference"}});
  ASSERT_EQ(key.status, 201u) << key.body;
  Api gw{api_.base, std::string(Api::Obj(key).at("secret").as_string())};
  const json::value chat =
      json::object{{"model", "chat"},
                   {"max_tokens", 3},
                   {"messages", json::array{json::object{{"role", "user"}, {"content", "Hi"}}}}};
  ASSERT_TRUE(
      WaitUntil([&] { return gw.Post("/v1/chat/completions", chat).status == 200; }, seconds(20)));

  const json::object victim = Instances(api_, model)[0].as_object();
  const int64_t victim_id = Int(victim, "id");
  const int pid = EnginePid(victim_id);
  ASSERT_GT(pid, 0);
  ::kill(pid, SIGSTOP);
  const auto t0 = std::chrono::steady_clock::now();

  // Requests sent meanwhile, some to the stopped engine: each is answered, by the other replica
  // when its first one never answered (failover before the first byte).
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&] { ok += gw.Post("/v1/chat/completions", chat).status == 200; });
  }

  json::object seen;
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (const json::value& v : Instances(api_, model)) {
          if (Int(v.as_object(), "id") == victim_id) seen = v.as_object();
        }
        return Str(seen, "state") != "RUNNING";
      },
      seconds(30)))
      << Logs();
  const auto detected = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(Str(seen, "state"), "ERROR");
  EXPECT_TRUE(Str(seen, "state_message").starts_with("liveness check failed: GET /health: "))
      << Str(seen, "state_message");
  EXPECT_LT(detected, seconds(10)) << "found hung within seconds";
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(ok.load(), 4);
  // Out of rotation: every request now goes to the healthy replica.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(gw.Post("/v1/chat/completions", chat).status, 200u);

  // Stopped (SIGTERM reaches it through SIGCONT), then restarted after the backoff (10 s).
  ASSERT_TRUE(WaitUntil([&] { return !Alive(pid); }, seconds(30)));
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (const json::value& v : Instances(api_, model)) {
          const json::object& o = v.as_object();
          if (Int(o, "id") == victim_id)
            return Str(o, "state") == "RUNNING" && Int(o, "restart_count") == 1;
        }
        return false;
      },
      seconds(60)))
      << json::serialize(Instances(api_, model)) << Logs();
  EXPECT_NE(EnginePid(victim_id), pid);
}

TEST_F(EngineHealthTest, EngineSimHangIsFoundByTheRealRequest) {
  StartSegmaWith({"--engine-liveness-period", "0.2", "--engine-liveness-timeout", "1",
                  "--engine-liveness-failures", "2"});
  // /health keeps answering: only the liveness check's real request (GET /v1/models) sees it.
  const int64_t model =
      CreateModel("stuck", 1, json::array{"--hang-after-ms=1500", "--hang-scope=inference"}, false);
  ASSERT_TRUE(WaitUntil(
      [&] {
        json::array items = Instances(api_, model);
        return !items.empty() && Str(items[0].as_object(), "state") == "ERROR";
      },
      seconds(60)))
      << json::serialize(Instances(api_, model)) << Logs();
  const std::string message = Str(Instances(api_, model)[0].as_object(), "state_message");
  EXPECT_TRUE(
      message.starts_with("liveness check failed: GET /v1/models: no answer within 1000 ms"))
      << message;
}

TEST_F(EngineHealthTest, StoppingSegmaStartStopsItsEnginesUnlessKept) {
  StartSegmaWith({});
  const int64_t model = CreateModel("chat", 1);
  ASSERT_TRUE(WaitUntil([&] { return AllRunning(model, 1); }, seconds(60))) << Logs();
  const int64_t id = Int(Instances(api_, model)[0].as_object(), "id");
  const int pid = EnginePid(id);
  ASSERT_GT(pid, 0);
  server_->Signal(SIGINT);  // Ctrl-C after `make run`
  ASSERT_TRUE(server_->Wait(seconds(40)).has_value());
  EXPECT_FALSE(Alive(pid)) << "stopped with segma start";
  EXPECT_EQ(EnginePid(id), 0) << "no state file left";

  // --keep-engines (an upgrade): the engine outlives segma start and the next start adopts it.
  // (The instance still reads RUNNING from before: wait for the new engine's own report.)
  StartSegmaWith({"--keep-engines"});
  ASSERT_TRUE(WaitUntil(
      [&] {
        return server_->Log().find("engine for instance " + std::to_string(id) + " (") !=
                   std::string::npos &&
               server_->Log().find("is healthy on port") != std::string::npos &&
               AllRunning(model, 1) &&
               Int(Instances(api_, model)[0].as_object(), "port") == EnginePort(id);
      },
      seconds(60)))
      << Logs();
  const int kept = EnginePid(id);
  ASSERT_GT(kept, 0);
  server_->Signal(SIGTERM);
  ASSERT_TRUE(server_->Wait(seconds(40)).has_value());
  EXPECT_TRUE(Alive(kept)) << "kept for the next start";
  StartSegmaWith({});
  ASSERT_TRUE(WaitUntil(
      [&] {
        return server_->Log().find("adopted the running engine of instance " +
                                   std::to_string(id)) != std::string::npos;
      },
      seconds(60)))
      << Logs();
  ASSERT_TRUE(WaitUntil([&] { return AllRunning(model, 1); }, seconds(60))) << Logs();
  EXPECT_EQ(EnginePid(id), kept) << "adopted, not started again";
  EXPECT_TRUE(Alive(kept));
}

TEST_F(EngineHealthTest, EngineOfAWorkerKilledForGoodStopsAfterTheGrace) {
  StartServerAndWorker({"--engine-orphan-grace", "2"});
  const int64_t model = CreateModel("chat", 1);
  ASSERT_TRUE(WaitUntil([&] { return AllRunning(model, 1); }, seconds(60))) << Logs();
  const int64_t id = Int(Instances(api_, model)[0].as_object(), "id");
  const int pid = EnginePid(id);
  ASSERT_GT(pid, 0);

  worker_->Signal(SIGKILL);  // and never started again
  ASSERT_TRUE(worker_->Wait(seconds(10)).has_value());
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(Alive(pid)) << "engines outlive their worker, for a while";
  ASSERT_TRUE(WaitUntil([&] { return !Alive(pid); }, seconds(30))) << "orphan still running";
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1500))
      << "not before the grace";
  const std::string log =
      ReadFile(dir_.path() + "/worker/logs/instance-" + std::to_string(id) + ".log");
  EXPECT_NE(log.find("segma engine-guard: "), std::string::npos) << log;
  EXPECT_NE(log.find("no worker adopted engine " + std::to_string(pid) + " within 2 s"),
            std::string::npos)
      << log;
  // The guard removes the state file at its next look (every second), then ends.
  EXPECT_TRUE(WaitUntil([&] { return EnginePid(id) == 0; }, seconds(10)))
      << "its state file is gone too";
}

TEST_F(EngineHealthTest, WorkerRestartedWithinTheGraceAdoptsItsEngine) {
  StartServerAndWorker({"--engine-orphan-grace", "60"});
  const int64_t model = CreateModel("chat", 1);
  ASSERT_TRUE(WaitUntil([&] { return AllRunning(model, 1); }, seconds(60))) << Logs();
  const int64_t id = Int(Instances(api_, model)[0].as_object(), "id");
  const int pid = EnginePid(id);
  const std::string log_path = dir_.path() + "/worker/logs/instance-" + std::to_string(id) + ".log";

  worker_->Signal(SIGKILL);
  ASSERT_TRUE(worker_->Wait(seconds(10)).has_value());
  ASSERT_TRUE(WaitUntil(
      [&] { return ReadFile(log_path).find("no worker owns engine") != std::string::npos; },
      seconds(30)))
      << ReadFile(log_path);
  StartWorker();
  ASSERT_TRUE(WaitUntil(
      [&] {
        return ReadFile(log_path).find("a worker owns engine " + std::to_string(pid) + " again") !=
               std::string::npos;
      },
      seconds(30)))
      << ReadFile(log_path) << Logs();
  ASSERT_TRUE(WaitUntil([&] { return AllRunning(model, 1); }, seconds(30))) << Logs();
  EXPECT_EQ(EnginePid(id), pid) << "adopted";
  EXPECT_TRUE(Alive(pid));
}

TEST_F(EngineHealthTest, DrainStopsEveryEngineAndReportsEachInstance) {
  StartServerAndWorker({});
  const int64_t model = CreateModel("chat", 2);
  ASSERT_TRUE(WaitUntil([&] { return AllRunning(model, 2); }, seconds(60))) << Logs();
  std::map<int64_t, int> pids;
  for (const json::value& v : Instances(api_, model)) {
    const int64_t id = Int(v.as_object(), "id");
    pids[id] = EnginePid(id);
    ASSERT_GT(pids[id], 0);
  }
  auto drain = [&](const std::string& log) {
    std::vector<std::string> args = WorkerArgs();
    args.push_back("--drain");
    Process p(std::move(args), {}, dir_.path() + "/" + log);
    std::optional<int> rc = p.Wait(seconds(60));
    return std::make_pair(rc.value_or(-1000), p.Log());
  };

  // Not while a worker runs there: it would restart what the drain stops.
  auto [refused_rc, refused] = drain("drain-1.log");
  EXPECT_EQ(refused_rc, 1) << refused;
  EXPECT_NE(refused.find("stop it first"), std::string::npos) << refused;
  for (const auto& [id, pid] : pids) EXPECT_TRUE(Alive(pid));

  worker_->Signal(SIGTERM);  // a worker's SIGTERM leaves its engines running
  ASSERT_TRUE(worker_->Wait(seconds(30)).has_value());
  for (const auto& [id, pid] : pids) ASSERT_TRUE(Alive(pid));
  auto [rc, out] = drain("drain-2.log");
  EXPECT_EQ(rc, 0) << out;
  for (const auto& [id, pid] : pids) {
    EXPECT_FALSE(Alive(pid));
    EXPECT_NE(out.find("instance " + std::to_string(id) + " ("), std::string::npos) << out;
    EXPECT_NE(out.find("engine pid " + std::to_string(pid) + " on port "), std::string::npos)
        << out;
  }
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n') >= 2, true) << out;
  EXPECT_NE(out.find("stopped; server told (ERROR: stopped by segma worker --drain)"),
            std::string::npos)
      << out;
  for (const json::value& v : Instances(api_, model)) {
    EXPECT_EQ(Str(v.as_object(), "state"), "ERROR");
    EXPECT_EQ(Str(v.as_object(), "state_message"), "stopped by segma worker --drain");
  }
  auto [again_rc, again] = drain("drain-3.log");
  EXPECT_EQ(again_rc, 0) << again;
  EXPECT_NE(again.find("no engines running in"), std::string::npos) << again;
}

}  // namespace
}  // namespace segma::testing
