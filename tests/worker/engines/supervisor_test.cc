#include "worker/engines/supervisor.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "fakes/test_ports.h"
#include "scheduler/estimate/test_model.h"
#include "worker/engines/engine_secret.h"
#include "worker/engines/engine_test_util.h"

namespace segma::engines {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr char kLlamaBin[] = "/var/cache/segma/llama.cpp-3.21.1/build/bin";
constexpr char kVocab[] = "/var/cache/segma/llama.cpp-3.21.1/src/models/ggml-vocab-llama-spm.gguf";

bool Alive(pid_t pid) { return ProcessStartTicks(pid).has_value(); }

// Children of this test process that are zombies (exited, never reaped).
std::vector<pid_t> Zombies() {
  std::vector<pid_t> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = ReadFile("/proc/" + name + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == getpid() && state == 'Z') out.push_back(std::stoi(name));
  }
  return out;
}

// Processes of process group `pgid`.
std::vector<pid_t> GroupMembers(pid_t pgid) {
  std::vector<pid_t> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = ReadFile("/proc/" + name + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    char state = 0;
    pid_t ppid = 0, pgrp = 0;
    rest >> state >> ppid >> pgrp;
    if (pgrp == pgid && state != 'Z') out.push_back(std::stoi(name));
  }
  return out;
}

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/segma-engines-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    // 20 ports of this test process's own (fakes/test_ports.h).
    options_.port_min = testing::ReservePorts(20);
    options_.port_max = options_.port_min + 19;
    options_.data_dir = dir_;
    options_.poll_interval = 50ms;
    options_.probe_timeout = 500ms;
    options_.backoff_base = 100ms;
    options_.stop_grace = 2s;
  }

  void TearDown() override {
    for (auto& s : supervisors_) s->StopAll();
    supervisors_.clear();
    EXPECT_TRUE(Zombies().empty());
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  Supervisor& Make(Clock& clock = SystemClock::Get()) {
    auto s = Supervisor::Create(options_, clock, [this](const EngineStatus& st) {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(st);
    });
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    supervisors_.push_back(std::move(*s));
    return *supervisors_.back();
  }

  EngineSpec FakeSpec(Supervisor& s, int64_t id, std::vector<std::string> extra = {}) {
    EngineSpec spec;
    spec.instance_id = id;
    spec.name = "fake-" + std::to_string(id);
    Result<int> port = s.AllocatePort(id);
    EXPECT_TRUE(port.ok()) << port.status().ToString();
    spec.port = *port;
    spec.launch.argv = {FAKE_ENGINE_PATH, "--port", std::to_string(spec.port)};
    for (std::string& a : extra) spec.launch.argv.push_back(std::move(a));
    spec.launch.health_path = "/health";
    spec.launch.env["CUDA_VISIBLE_DEVICES"] = "1";
    return spec;
  }

  std::vector<std::string> StatesOf(int64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const EngineStatus& e : events_) {
      if (e.instance_id == id) out.emplace_back(EngineStateName(e.state));
    }
    return out;
  }

  static bool InState(Supervisor& s, int64_t id, EngineState state) {
    std::optional<EngineStatus> st = s.Get(id);
    return st && st->state == state;
  }

  std::string dir_;
  SupervisorOptions options_;
  FakeClock fake_clock_;  // outlives the supervisors that use it
  std::vector<std::unique_ptr<Supervisor>> supervisors_;
  std::mutex mu_;
  std::vector<EngineStatus> events_;
};

TEST_F(SupervisorTest, StartsRunsAndStops) {
  Supervisor& s = Make();
  EngineSpec spec = FakeSpec(s, 1, {"--print-env", "CUDA_VISIBLE_DEVICES"});
  const int port = spec.port;
  ASSERT_TRUE(s.Start(spec).ok());
  EXPECT_EQ(s.Start(spec).code(), StatusCode::kAlreadyExists);
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 1, EngineState::kRunning); }));
  const EngineStatus st = *s.Get(1);
  EXPECT_GT(st.pid, 0);
  EXPECT_EQ(st.port, port);
  EXPECT_EQ(st.restart_count, 0);
  EXPECT_EQ(s.ManagedPids(), std::vector<pid_t>{st.pid});
  EXPECT_EQ(GroupMembers(st.pid), std::vector<pid_t>{st.pid}) << "own process group";
  EXPECT_TRUE(fs::exists(dir_ + "/engines/instance-1.json"));
  const std::string log = ReadFile(st.log_path);
  EXPECT_NE(log.find("--- segma: start #1 at "), std::string::npos) << log;
  EXPECT_NE(log.find("CUDA_VISIBLE_DEVICES=1"), std::string::npos) << log;
  EXPECT_NE(log.find("fake engine: listening on " + std::to_string(port)), std::string::npos);

  ASSERT_TRUE(s.Stop(1).ok());
  ASSERT_TRUE(WaitUntil([&] { return !s.Get(1).has_value(); }));
  EXPECT_FALSE(Alive(st.pid));
  EXPECT_FALSE(fs::exists(dir_ + "/engines/instance-1.json"));
  EXPECT_EQ(StatesOf(1), (std::vector<std::string>{"STARTING", "RUNNING", "STOPPED"}));
  EXPECT_EQ(s.Stop(1).code(), StatusCode::kNotFound);
  EXPECT_TRUE(Zombies().empty());
}

TEST_F(SupervisorTest, EngineThatExitsAtOnceIsAnErrorWithItsLogTail) {
  Supervisor& s = Make();
  EngineSpec spec = FakeSpec(s, 2, {"--exit", "1"});
  spec.restart_on_error = false;
  ASSERT_TRUE(s.Start(spec).ok());
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 2, EngineState::kError); }));
  const EngineStatus st = *s.Get(2);
  EXPECT_TRUE(st.message.starts_with("engine exited with status 1: ")) << st.message;
  EXPECT_NE(st.message.find("fake engine: fatal error: out of memory"), std::string::npos);
  EXPECT_NE(st.message.find("fake engine: loading model"), std::string::npos);
  EXPECT_EQ(st.message.find("--- segma"), std::string::npos) << "our marker is not quoted";
  EXPECT_EQ(st.pid, 0);
  EXPECT_FALSE(st.next_restart_at.has_value());
  EXPECT_TRUE(Zombies().empty());
}

TEST_F(SupervisorTest, EngineThatNeverBecomesHealthyIsKilledAfterTheTimeout) {
  Supervisor& s = Make();
  EngineSpec spec = FakeSpec(s, 3, {"--health-status", "503", "--child"});
  spec.restart_on_error = false;
  spec.ready_timeout = 1s;
  ASSERT_TRUE(s.Start(spec).ok());
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 3, EngineState::kStarting) && s.Get(3)->pid; }));
  const pid_t pid = s.Get(3)->pid;
  ASSERT_TRUE(WaitUntil([&] { return GroupMembers(pid).size() == 2; })) << "engine + its child";
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 3, EngineState::kError); }));
  EXPECT_EQ(s.Get(3)->message, "engine did not become healthy within 1 s");
  EXPECT_FALSE(Alive(pid));
  EXPECT_TRUE(GroupMembers(pid).empty()) << "the whole group is gone";
}

TEST_F(SupervisorTest, WrongExecutableIsNotFound) {
  Supervisor& s = Make();
  EngineSpec spec = FakeSpec(s, 4);
  spec.launch.argv[0] = "/nonexistent/llama-server";
  ASSERT_TRUE(s.Start(spec).ok());
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 4, EngineState::kError); }));
  EXPECT_EQ(s.Get(4)->message, "executable not found: /nonexistent/llama-server");
  EXPECT_FALSE(s.Get(4)->next_restart_at.has_value()) << "no point retrying";

  spec = FakeSpec(s, 5);
  spec.launch.argv[0] = "segma-no-such-engine";
  ASSERT_TRUE(s.Start(spec).ok());
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 5, EngineState::kError); }));
  EXPECT_EQ(s.Get(5)->message, "executable not found: segma-no-such-engine");

  EXPECT_EQ(s.Start(EngineSpec{}).code(), StatusCode::kInvalidArgument);
}

TEST_F(SupervisorTest, KilledEngineIsRestartedWithExponentialBackoff) {
  FakeClock& clock = fake_clock_;
  options_.backoff_base = 10s;
  options_.backoff_max = 5min;
  Supervisor& s = Make(clock);
  EngineSpec spec = FakeSpec(s, 6);
  spec.restart_count = 3;  // carried over from the instance
  ASSERT_TRUE(s.Start(spec).ok());
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 6, EngineState::kRunning); }));
  pid_t pid = s.Get(6)->pid;

  ::kill(pid, SIGKILL);
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 6, EngineState::kError); }));
  EngineStatus st = *s.Get(6);
  EXPECT_TRUE(st.message.starts_with("engine was killed by signal 9 (SIGKILL): ")) << st.message;
  ASSERT_TRUE(st.next_restart_at.has_value());
  EXPECT_EQ(*st.next_restart_at, clock.Now() + 10s);
  std::this_thread::sleep_for(300ms);  // several polls: the clock has not moved, so no restart
  EXPECT_TRUE(InState(s, 6, EngineState::kError));
  EXPECT_EQ(s.Get(6)->pid, 0);

  clock.Advance(10s);
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 6, EngineState::kRunning); }));
  st = *s.Get(6);
  EXPECT_EQ(st.restart_count, 4);
  EXPECT_NE(st.pid, pid);
  pid = st.pid;

  ::kill(pid, SIGTERM);
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 6, EngineState::kError); }));
  EXPECT_EQ(*s.Get(6)->next_restart_at, clock.Now() + 20s) << "doubled";
  clock.Advance(19s);
  std::this_thread::sleep_for(200ms);
  EXPECT_TRUE(InState(s, 6, EngineState::kError));
  clock.Advance(1s);
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 6, EngineState::kRunning); }));
  EXPECT_EQ(s.Get(6)->restart_count, 5);
  EXPECT_EQ(StatesOf(6), (std::vector<std::string>{"STARTING", "RUNNING", "ERROR", "STARTING",
                                                   "RUNNING", "ERROR", "STARTING", "RUNNING"}));

  // Stopping cancels nothing pending and leaves nothing behind.
  s.StopAll();
  EXPECT_FALSE(s.Get(6).has_value());
  EXPECT_TRUE(Zombies().empty());
}

TEST_F(SupervisorTest, BackoffIsCappedAndUsesTheRealClockWhenGiven) {
  options_.backoff_base = 50ms;
  options_.backoff_max = 100ms;
  Supervisor& s = Make();
  EngineSpec spec = FakeSpec(s, 7, {"--exit", "2"});
  ASSERT_TRUE(s.Start(spec).ok());
  ASSERT_TRUE(WaitUntil(
      [&] { return s.Get(7)->restart_count >= 4 && InState(s, 7, EngineState::kError); }));
  EXPECT_EQ(s.Get(7)->message.rfind("engine exited with status 2: ", 0), 0u);
  ASSERT_TRUE(s.Stop(7).ok());
  ASSERT_TRUE(WaitUntil([&] { return !s.Get(7).has_value(); }));
}

TEST_F(SupervisorTest, StopSendsSigtermThenSigkill) {
  options_.stop_grace = 700ms;
  Supervisor& s = Make();
  ASSERT_TRUE(s.Start(FakeSpec(s, 8, {"--ignore-sigterm"})).ok());
  ASSERT_TRUE(s.Start(FakeSpec(s, 9)).ok());
  ASSERT_TRUE(WaitUntil([&] {
    return InState(s, 8, EngineState::kRunning) && InState(s, 9, EngineState::kRunning);
  }));
  const pid_t stubborn = s.Get(8)->pid;
  const pid_t polite = s.Get(9)->pid;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(s.Stop(8).ok());
  ASSERT_TRUE(s.Stop(9).ok());
  ASSERT_TRUE(WaitUntil([&] { return !Alive(polite); }));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 600ms) << "SIGTERM is enough for this one";
  EXPECT_TRUE(Alive(stubborn));
  ASSERT_TRUE(WaitUntil([&] { return !s.Get(8).has_value(); }));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 650ms) << "SIGKILL only after the grace";
  EXPECT_FALSE(Alive(stubborn));
  EXPECT_TRUE(Zombies().empty());
}

TEST_F(SupervisorTest, AllocatesPortsFromTheRangeSkippingPortsInUse) {
  Supervisor& s = Make();
  // Occupy the first port of the range.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;  // the port may be in TIME_WAIT after an earlier test's engine
  ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(options_.port_min));
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  Result<int> a = s.AllocatePort(100);
  Result<int> b = s.AllocatePort(101);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, options_.port_min);
  EXPECT_NE(*a, *b);
  EXPECT_GE(*a, options_.port_min);
  EXPECT_LE(*b, options_.port_max);
  EXPECT_EQ(*s.AllocatePort(100), *a) << "an instance keeps its port";
  for (int id = 102; id < 102 + 17; ++id) ASSERT_TRUE(s.AllocatePort(id).ok()) << id;
  EXPECT_EQ(s.AllocatePort(200).status().code(), StatusCode::kResourceExhausted);
  s.ReleasePort(101);
  EXPECT_EQ(*s.AllocatePort(200), *b);
  ::close(fd);
}

TEST_F(SupervisorTest, RotatesTheLog) {
  options_.log_max_bytes = 200;
  options_.log_files = 3;
  Supervisor& s = Make();
  const std::string log = dir_ + "/logs/instance-10.log";
  {
    std::ofstream(log) << std::string(300, 'a') << "\n";
    std::ofstream(log + ".1") << "older\n";
  }
  ASSERT_TRUE(s.Start(FakeSpec(s, 10)).ok());
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 10, EngineState::kRunning); }));
  EXPECT_EQ(ReadFile(log + ".2"), "older\n");
  EXPECT_EQ(ReadFile(log + ".1"), std::string(300, 'a') + "\n");
  EXPECT_TRUE(ReadFile(log).starts_with("--- segma: start #1")) << ReadFile(log);
}

TEST_F(SupervisorTest, RestartedWorkerAdoptsWhatItExpectsAndStopsTheRest) {
  std::map<int64_t, EngineSpec> specs;
  pid_t keep_pid = 0, drop_pid = 0, changed_pid = 0;
  {
    auto first = Supervisor::Create(options_, SystemClock::Get(), nullptr);
    ASSERT_TRUE(first.ok());
    Supervisor& s = **first;
    for (int64_t id : {11, 12, 13}) {
      specs[id] = FakeSpec(s, id);
      ASSERT_TRUE(s.Start(specs[id]).ok());
    }
    ASSERT_TRUE(WaitUntil([&] {
      return InState(s, 11, EngineState::kRunning) && InState(s, 12, EngineState::kRunning) &&
             InState(s, 13, EngineState::kRunning);
    }));
    keep_pid = s.Get(11)->pid;
    drop_pid = s.Get(12)->pid;
    changed_pid = s.Get(13)->pid;
  }  // the worker "restarts": its supervisor goes away, the engines keep running
  ASSERT_TRUE(Alive(keep_pid) && Alive(drop_pid) && Alive(changed_pid));
  // A state file whose process is long gone.
  std::ofstream(dir_ + "/engines/instance-14.json")
      << R"({"instance_id":14,"name":"old","pid":999999,"pgid":999999,"port":1,"start_ticks":1,)"
      << R"("started_at":"2026-01-01T00:00:00.000Z","fingerprint":"x","restart_count":0})";

  Supervisor& s = Make();
  std::map<int64_t, EngineSpec> expected{{11, specs[11]}, {13, specs[13]}};
  expected[13].launch.argv.push_back("--ready-after-ms");  // the deployment changed meanwhile
  expected[13].launch.argv.push_back("0");
  Supervisor::RecoverReport r = s.Recover(expected);
  EXPECT_EQ(r.adopted, std::vector<int64_t>{11});
  EXPECT_EQ(r.stopped, (std::vector<int64_t>{12, 13}));
  EXPECT_EQ(r.stale, std::vector<int64_t>{14});
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 11, EngineState::kRunning); }));
  EXPECT_TRUE(s.Get(11)->adopted);
  EXPECT_EQ(s.Get(11)->pid, keep_pid);
  ASSERT_TRUE(WaitUntil([&] { return !Alive(drop_pid) && !Alive(changed_pid); }));
  ASSERT_TRUE(WaitUntil([&] { return !s.Get(12).has_value() && !s.Get(13).has_value(); }));
  EXPECT_FALSE(fs::exists(dir_ + "/engines/instance-12.json"));
  EXPECT_FALSE(fs::exists(dir_ + "/engines/instance-14.json"));
  EXPECT_EQ(*s.AllocatePort(11), specs[11].port) << "the adopted engine keeps its port";

  // Adopted engines are supervised like any other: a crash restarts them.
  ::kill(keep_pid, SIGKILL);
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 11, EngineState::kError); }));
  ASSERT_TRUE(WaitUntil(
      [&] { return InState(s, 11, EngineState::kRunning) && s.Get(11)->pid != keep_pid; }));
  EXPECT_EQ(s.Get(11)->restart_count, 1);
  EXPECT_FALSE(s.Get(11)->adopted);

  // Starting 13 afresh with its new command works.
  ASSERT_TRUE(s.Start(expected[13]).ok());
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 13, EngineState::kRunning); }));
  s.StopAll();
  EXPECT_TRUE(s.List().empty());
  EXPECT_TRUE(fs::is_empty(dir_ + "/engines"));
}

// A process of its own (not in a supervisor's group), reaped by the destructor.
class Stranger {
 public:
  explicit Stranger(std::vector<std::string> args) {
    pid_ = fork();
    if (pid_ == 0) {
      setpgid(0, 0);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~Stranger() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = 0;
};

TEST_F(SupervisorTest, StoppedEngineFailsItsLivenessAndIsRestarted) {
  options_.liveness_period = 100ms;
  options_.liveness_timeout = 200ms;
  options_.liveness_failures = 2;
  options_.hung_stop_grace = 1s;
  Supervisor& s = Make();
  ASSERT_TRUE(s.Start(FakeSpec(s, 30)).ok());
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 30, EngineState::kRunning); }));
  const pid_t pid = s.Get(30)->pid;

  ::kill(pid, SIGSTOP);  // hung: the kernel still accepts connections, nothing answers
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 30, EngineState::kError); }));
  const auto detected = std::chrono::steady_clock::now() - t0;
  const EngineStatus st = *s.Get(30);
  EXPECT_EQ(st.message,
            "liveness check failed: GET /health: no answer within 200 ms (2 checks in a row)");
  EXPECT_TRUE(st.next_restart_at.has_value()) << "restarted with the backoff";
  // Two checks of 100 ms period and 200 ms timeout each, with a generous margin for a loaded
  // machine: seconds, not the engine's stop grace or ready timeout.
  EXPECT_LT(detected, 3s);
  // SIGTERM reaches the stopped process (SIGCONT): it exits, and a new one serves.
  ASSERT_TRUE(
      WaitUntil([&] { return InState(s, 30, EngineState::kRunning) && s.Get(30)->pid != pid; }));
  EXPECT_FALSE(Alive(pid));
  EXPECT_EQ(s.Get(30)->restart_count, 1);
  EXPECT_EQ(StatesOf(30),
            (std::vector<std::string>{"STARTING", "RUNNING", "ERROR", "STARTING", "RUNNING"}))
      << "one ERROR for the hang, none more for the exit it caused";
  EXPECT_TRUE(Zombies().empty());
}

TEST_F(SupervisorTest, LivenessAsksForARealAnswerBesidesTheHealthPath) {
  options_.liveness_period = 100ms;
  options_.liveness_timeout = 200ms;
  options_.liveness_failures = 3;
  Supervisor& s = Make();
  // /health answers, the model list never does: an engine whose inference side is stuck.
  EngineSpec spec = FakeSpec(s, 31, {"--hang-path", "/v1/models"});
  spec.liveness_path = "/v1/models";
  spec.restart_on_error = false;
  ASSERT_TRUE(s.Start(spec).ok());
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 31, EngineState::kError); }));
  EXPECT_EQ(StatesOf(31), (std::vector<std::string>{"STARTING", "RUNNING", "ERROR"}))
      << "ready through its health path, then found hung";
  EXPECT_EQ(s.Get(31)->message,
            "liveness check failed: GET /v1/models: no answer within 200 ms (3 checks in a row)");
  ASSERT_TRUE(WaitUntil([&] { return s.Get(31)->pid == 0; })) << "stopped";

  // A healthy engine that answers both keeps RUNNING through many checks.
  EngineSpec fine = FakeSpec(s, 32);
  fine.liveness_path = "/v1/models";
  ASSERT_TRUE(s.Start(fine).ok());
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 32, EngineState::kRunning); }));
  const pid_t pid = s.Get(32)->pid;
  std::this_thread::sleep_for(1s);  // ten liveness periods: nothing may happen
  EXPECT_TRUE(InState(s, 32, EngineState::kRunning));
  EXPECT_EQ(s.Get(32)->pid, pid);
}

TEST_F(SupervisorTest, AStrangerOnThePortIsNotTheEngine) {
  Supervisor& s = Make();
  // Before the engine listens, another process answers 200 on its port.
  EngineSpec spec = FakeSpec(s, 33, {"--no-listen"});
  spec.restart_on_error = false;
  spec.ready_timeout = 2s;
  Stranger stranger({FAKE_ENGINE_PATH, "--port", std::to_string(spec.port)});
  ASSERT_TRUE(WaitUntil([&] { return ProbeHttp(spec.port, "/health", 500ms) == 200; }));
  ASSERT_TRUE(s.Start(spec).ok());
  const std::string held = "port " + std::to_string(spec.port) +
                           " is held by another process (pid " + std::to_string(stranger.pid()) +
                           ", engines_fake_en), not by the engine";
  ASSERT_TRUE(WaitUntil([&] {
    std::optional<EngineStatus> st = s.Get(33);
    return st && st->state == EngineState::kStarting && st->message.starts_with(held);
  })) << s.Get(33)->message;
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 33, EngineState::kError); }));
  EXPECT_TRUE(s.Get(33)->message.starts_with("engine did not become healthy within 2 s: " + held))
      << s.Get(33)->message;
  EXPECT_EQ(StatesOf(33), (std::vector<std::string>{"STARTING", "STARTING", "ERROR"}))
      << "never RUNNING";
}

TEST_F(SupervisorTest, AStrangerSharingThePortFailsTheLivenessCheck) {
  options_.liveness_period = 100ms;
  options_.liveness_timeout = 500ms;
  options_.liveness_failures = 2;
  Supervisor& s = Make();
  EngineSpec spec = FakeSpec(s, 34, {"--reuse-port"});
  spec.restart_on_error = false;
  ASSERT_TRUE(s.Start(spec).ok());
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 34, EngineState::kRunning); }));
  const pid_t engine = s.Get(34)->pid;
  EXPECT_TRUE(CheckPortOwner(spec.port, engine).ok());
  // SO_REUSEPORT: the kernel now spreads connections over both listeners.
  Stranger stranger({FAKE_ENGINE_PATH, "--port", std::to_string(spec.port), "--reuse-port"});
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 34, EngineState::kError); }));
  EXPECT_EQ(s.Get(34)->message, "liveness check failed: port " + std::to_string(spec.port) +
                                    " is held by another process (pid " +
                                    std::to_string(stranger.pid()) +
                                    ", engines_fake_en), not by the engine (process group " +
                                    std::to_string(engine) + ") (2 checks in a row)");
}

// The engine's secret (docs/adr/0035-engine-secrets.md): the probes send it, and the command
// line the supervisor logs (its own log, the engine log's start line) never shows it.
TEST_F(SupervisorTest, ProbesSendTheEnginesSecretAndLogsMaskIt) {
  const std::string secret = "segma_eng_probe-secret-0123456789abcdef";
  Supervisor& s = Make();
  // An engine that takes its secret on the command line, as SGLang does.
  EngineSpec spec = FakeSpec(s, 36, {"--require-key", secret});
  spec.launch.api_key = secret;
  ASSERT_TRUE(s.Start(spec).ok());
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 36, EngineState::kRunning); }))
      << (s.Get(36) ? s.Get(36)->message : "");
  EXPECT_EQ(ProbeHttp(spec.port, "/health", 500ms), 401) << "the engine does require it";
  EXPECT_EQ(ProbeHttp(spec.port, "/health", 500ms, nullptr, secret), 200);
  const std::string log = ReadFile(s.Get(36)->log_path);
  EXPECT_EQ(log.find(secret), std::string::npos) << log;
  EXPECT_NE(log.find("--require-key <redacted>"), std::string::npos) << log;

  // Without it the engine never answers the readiness probe.
  EngineSpec wrong = FakeSpec(s, 37, {"--require-key", secret});
  wrong.launch.api_key = "segma_eng_not-the-one-0123456789abcdef";
  wrong.restart_on_error = false;
  wrong.ready_timeout = std::chrono::seconds(1);
  ASSERT_TRUE(s.Start(wrong).ok());
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 37, EngineState::kError); }));
  EXPECT_TRUE(s.Get(37)->message.starts_with("engine did not become healthy within 1 s"))
      << s.Get(37)->message;
}

// HTTP/1.0 POST on 127.0.0.1, whole response.
std::string Post(int port, const std::string& path, const std::string& body,
                 const std::string& bearer = "") {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  timeval tv{60, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  const std::string auth = bearer.empty() ? "" : "Authorization: Bearer " + bearer + "\r\n";
  const std::string req =
      "POST " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + auth +
      "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  (void)!::write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;) out.append(buf, n);
  ::close(fd);
  return out;
}

TEST_F(SupervisorTest, RealLlamaServer) {
  const std::string bin = std::string(kLlamaBin) + "/llama-server";
  if (!fs::exists(bin) || !fs::exists(kVocab)) {
    GTEST_SKIP() << "no llama-server at " << bin << " (scripts/build-llama builds it)";
  }
  estimate::TestModelOptions mo;
  mo.path = dir_ + "/tiny.gguf";
  mo.vocab_path = kVocab;
  ASSERT_TRUE(estimate::WriteTestModel(mo).ok());

  options_.liveness_period = 200ms;
  options_.liveness_timeout = 1s;
  options_.liveness_failures = 2;
  Supervisor& s = Make();
  types::Model model;
  model.name = "tiny";
  model.context_length = 512;
  model.max_concurrent_sequences = 2;
  model.backend_parameters = {"--threads", "2"};
  types::ModelInstance instance;
  instance.id = 20;
  instance.name = "tiny-x1";
  LaunchContext ctx;
  ctx.model_path = mo.path;
  ctx.host = "127.0.0.1";
  ctx.binary_dir = kLlamaBin;
  // The engine's secret as the worker passes it: from its 0600 file.
  Result<std::string> secret = LoadOrCreateEngineSecret(dir_, instance.id);
  ASSERT_TRUE(secret.ok()) << secret.status().ToString();
  ctx.api_key = *secret;
  ctx.api_key_file = EngineSecretPath(dir_, instance.id);
  Result<int> port = s.AllocatePort(instance.id);
  ASSERT_TRUE(port.ok());
  ctx.port = *port;
  Result<LaunchSpec> launch =
      RenderLaunch(*FindBuiltInBackend("llama.cpp"), "", model, instance, ctx);
  ASSERT_TRUE(launch.ok()) << launch.status().ToString();
  EngineSpec spec;
  spec.instance_id = instance.id;
  spec.name = instance.name;
  spec.port = *port;
  spec.launch = *launch;
  spec.liveness_path = "/v1/models";
  spec.restart_on_error = false;
  spec.ready_timeout = 120s;
  ASSERT_TRUE(s.Start(spec).ok());
  ASSERT_TRUE(WaitUntil([&] { return !InState(s, 20, EngineState::kStarting); }, 120s));
  ASSERT_TRUE(InState(s, 20, EngineState::kRunning)) << s.Get(20)->message;
  const pid_t pid = s.Get(20)->pid;

  const std::string chat =
      R"({"model":"tiny","messages":[{"role":"user","content":"Hello"}],"max_tokens":8})";
  // Without the secret llama-server refuses everything but /health: the model list (the
  // liveness check's request, which passed: the probes send the secret) and /metrics too.
  const std::string refused = Post(*port, "/v1/chat/completions", chat);
  EXPECT_TRUE(refused.starts_with("HTTP/1.1 401")) << refused;
  EXPECT_EQ(ProbeHttp(*port, "/health", 2s), 200);
  EXPECT_EQ(ProbeHttp(*port, "/v1/models", 2s), 401);
  EXPECT_EQ(ProbeHttp(*port, "/v1/models", 2s, nullptr, *secret), 200);
  EXPECT_EQ(ProbeHttp(*port, "/metrics", 2s), 401);
  EXPECT_EQ(ProbeHttp(*port, "/metrics", 2s, nullptr, *secret), 200);
  const std::string res = Post(*port, "/v1/chat/completions", chat, *secret);
  EXPECT_TRUE(res.starts_with("HTTP/1.1 200")) << res;
  EXPECT_NE(res.find("\"choices\""), std::string::npos) << res;
  EXPECT_NE(res.find("\"completion_tokens\""), std::string::npos) << res;
  // Its HTTP threads answer the liveness check (health and model list) between requests.
  EXPECT_TRUE(InState(s, 20, EngineState::kRunning));

  // A stopped llama-server is found hung and stopped.
  ::kill(pid, SIGSTOP);
  ASSERT_TRUE(WaitUntil([&] { return InState(s, 20, EngineState::kError); }, 30s));
  EXPECT_TRUE(s.Get(20)->message.starts_with("liveness check failed: GET /health: "))
      << s.Get(20)->message;
  ASSERT_TRUE(WaitUntil([&] { return !Alive(pid); }, 30s));

  s.StopAll();
  EXPECT_FALSE(Alive(pid));
  EXPECT_TRUE(GroupMembers(pid).empty());
}

}  // namespace
}  // namespace segma::engines
