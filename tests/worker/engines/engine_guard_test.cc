#include "worker/engines/engine_guard.h"

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

#include "common/json.h"
#include "fakes/test_ports.h"
#include "worker/engines/engine_test_util.h"
#include "worker/engines/supervisor.h"

namespace segma::engines {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// A real engine (the fake engine under a supervisor without a guard), and a guard on a fake
// clock looking at it: every decision is taken at a time the test sets.
class EngineGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/segma-guard-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    SupervisorOptions o;
    o.data_dir = dir_;
    o.port_min = testing::ReservePorts(2);
    o.port_max = o.port_min + 1;
    o.poll_interval = 50ms;
    o.liveness_failures = 0;
    auto s = Supervisor::Create(o, SystemClock::Get(), nullptr);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    supervisor_ = std::move(*s);
    EngineSpec spec;
    spec.instance_id = 1;
    spec.name = "guarded";
    Result<int> port = supervisor_->AllocatePort(1);
    ASSERT_TRUE(port.ok());
    spec.port = *port;
    spec.launch.argv = {FAKE_ENGINE_PATH, "--port", std::to_string(spec.port)};
    spec.launch.health_path = "/health";
    ASSERT_TRUE(supervisor_->Start(spec).ok());
    ASSERT_TRUE(WaitUntil([&] {
      std::optional<EngineStatus> st = supervisor_->Get(1);
      return st && st->state == EngineState::kRunning;
    }));
    state_file_ = dir_ + "/engines/instance-1.json";
    original_ = ReadFile(state_file_);
    Result<json::value> v = ParseJson(original_);
    ASSERT_TRUE(v.ok());
    options_.state_file = state_file_;
    options_.engine_pid = static_cast<pid_t>(v->as_object().at("pid").as_int64());
    options_.engine_start_ticks = *ProcessStartTicks(options_.engine_pid);
    options_.orphan_grace = 10s;
    options_.stop_grace = 5s;
  }

  void TearDown() override {
    supervisor_->StopAll();
    supervisor_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // The state file as a worker process that is gone would have left it: same pid as this test
  // (which runs), another start time, so a reused pid never passes for the owner.
  void OwnerGone() {
    Result<json::value> v = ParseJson(original_);
    json::object o = v->as_object();
    o["worker_start_ticks"] = o.at("worker_start_ticks").as_int64() + 1;
    std::ofstream(state_file_, std::ios::trunc) << ToJsonString(json::value(o));
  }
  void OwnerBack() { std::ofstream(state_file_, std::ios::trunc) << original_; }

  std::string dir_;
  std::string state_file_;
  std::string original_;
  std::unique_ptr<Supervisor> supervisor_;
  EngineGuardOptions options_;
  FakeClock clock_;
  std::ostringstream log_;
};

TEST_F(EngineGuardTest, StandsByWhileItsWorkerRuns) {
  EngineGuard guard(options_, clock_);
  EXPECT_EQ(guard.Check(log_), EngineGuard::Action::kWait);
  EXPECT_TRUE(guard.owned());
  clock_.Advance(1h);
  EXPECT_EQ(guard.Check(log_), EngineGuard::Action::kWait);
  EXPECT_EQ(log_.str(), "");
}

TEST_F(EngineGuardTest, StopsAnEngineNoWorkerAdoptedWithinTheGrace) {
  EngineGuard guard(options_, clock_);
  OwnerGone();
  EXPECT_EQ(guard.Check(log_), EngineGuard::Action::kWait);
  EXPECT_FALSE(guard.owned());
  EXPECT_NE(log_.str().find("no worker owns engine " + std::to_string(options_.engine_pid) +
                            " (its worker (pid " + std::to_string(getpid()) +
                            ") is gone); it stops in 10 s unless a worker adopts it"),
            std::string::npos)
      << log_.str();
  clock_.Advance(9s);
  EXPECT_EQ(guard.Check(log_), EngineGuard::Action::kWait);

  // A restarted worker adopts it just in time: the clock starts again at the next orphaning.
  OwnerBack();
  EXPECT_EQ(guard.Check(log_), EngineGuard::Action::kWait);
  EXPECT_TRUE(guard.owned());
  EXPECT_NE(log_.str().find("a worker owns engine"), std::string::npos);
  clock_.Advance(5s);
  OwnerGone();
  EXPECT_EQ(guard.Check(log_), EngineGuard::Action::kWait);
  clock_.Advance(9s);
  EXPECT_EQ(guard.Check(log_), EngineGuard::Action::kWait);
  clock_.Advance(1s);
  EXPECT_EQ(guard.Check(log_), EngineGuard::Action::kStop);
  EXPECT_TRUE(guard.stopping());

  // Stopping is not undone by a late owner; SIGKILL after the stop grace.
  OwnerBack();
  clock_.Advance(4s);
  EXPECT_EQ(guard.Check(log_), EngineGuard::Action::kWait);
  clock_.Advance(1s);
  EXPECT_EQ(guard.Check(log_), EngineGuard::Action::kKill);

  ::kill(options_.engine_pid, SIGKILL);
  ASSERT_TRUE(WaitUntil([&] { return guard.Check(log_) == EngineGuard::Action::kGone; }));
}

TEST_F(EngineGuardTest, AMissingOrForeignStateFileIsNoOwner) {
  EngineGuard guard(options_, clock_);
  fs::remove(state_file_);
  EXPECT_EQ(guard.Check(log_), EngineGuard::Action::kWait);
  EXPECT_NE(log_.str().find("its state file " + state_file_ + " is gone"), std::string::npos)
      << log_.str();
  clock_.Advance(10s);
  EXPECT_EQ(guard.Check(log_), EngineGuard::Action::kStop);

  EngineGuardOptions other = options_;
  other.engine_start_ticks += 1;  // not this process: nothing to guard
  EngineGuard stale(other, clock_);
  EXPECT_EQ(stale.Check(log_), EngineGuard::Action::kGone);
}

bool Alive(pid_t pid) { return ProcessStartTicks(pid).has_value(); }

// Real processes: a worker (fake_worker: a supervisor with a guard command) runs one engine, and
// is killed with SIGKILL.
class GuardedEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/segma-guarded-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    port_ = testing::ReservePorts(1);
  }
  void TearDown() override {
    if (worker_ > 0) {
      ::kill(worker_, SIGKILL);
      ::waitpid(worker_, nullptr, 0);
    }
    if (engine_ > 0) ::kill(-engine_, SIGKILL);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Starts the worker and returns once its engine is RUNNING (engine_ = its pid).
  void StartWorker(std::chrono::milliseconds grace) {
    int out[2];
    ASSERT_EQ(::pipe(out), 0);
    worker_ = ::fork();
    if (worker_ == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      const std::string port = std::to_string(port_);
      const std::string grace_ms = std::to_string(grace.count());
      ::execl(FAKE_WORKER_PATH, FAKE_WORKER_PATH, dir_.c_str(), GUARD_MAIN_PATH, FAKE_ENGINE_PATH,
              port.c_str(), grace_ms.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out[1]);
    std::string line;
    char c = 0;
    while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;  // blocks until RUNNING
    ::close(out[0]);
    ASSERT_TRUE(line.starts_with("running ")) << line;
    engine_ = std::stoi(line.substr(8));
  }

  void KillWorker() {
    ::kill(worker_, SIGKILL);
    ::waitpid(worker_, nullptr, 0);
    worker_ = 0;
  }

  std::string Log() const { return ReadFile(dir_ + "/logs/instance-1.log"); }

  std::string dir_;
  int port_ = 0;
  pid_t worker_ = 0;
  pid_t engine_ = 0;
};

TEST_F(GuardedEngineTest, EngineOfAWorkerKilledForGoodStopsAfterTheGrace) {
  StartWorker(1000ms);
  ASSERT_EQ(ProcessGroupMembers(engine_).size(), 2u) << "the engine and its guard";
  KillWorker();  // and never started again
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(Alive(engine_)) << "engines outlive their worker, for a while";
  ASSERT_TRUE(WaitUntil([&] { return !Alive(engine_); })) << Log();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 900ms) << "not before the grace";
  EXPECT_NE(Log().find("segma engine-guard: "), std::string::npos) << Log();
  EXPECT_NE(Log().find("no worker adopted engine " + std::to_string(engine_) + " within 1 s"),
            std::string::npos)
      << Log();
  ASSERT_TRUE(WaitUntil([&] { return ProcessGroupMembers(engine_).empty(); }))
      << "the guard ends with its engine";
  EXPECT_FALSE(fs::exists(dir_ + "/engines/instance-1.json")) << "its state file is gone too";
}

TEST_F(GuardedEngineTest, WorkerRestartedWithinTheGraceAdoptsTheEngine) {
  StartWorker(60s);
  KillWorker();
  ASSERT_TRUE(WaitUntil([&] { return Log().find("no worker owns engine") != std::string::npos; }))
      << Log();
  // The restarted worker: a supervisor over the same data dir that expects this engine.
  SupervisorOptions o;
  o.data_dir = dir_;
  o.port_min = o.port_max = port_;
  o.poll_interval = 50ms;
  auto s = Supervisor::Create(o, SystemClock::Get(), nullptr);
  ASSERT_TRUE(s.ok());
  EngineSpec spec;
  spec.instance_id = 1;
  spec.name = "guarded";
  spec.port = port_;
  spec.launch.argv = {FAKE_ENGINE_PATH, "--port", std::to_string(port_)};
  spec.launch.health_path = "/health";
  Supervisor::RecoverReport r = (*s)->Recover({{1, spec}});
  ASSERT_EQ(r.adopted, std::vector<int64_t>{1});
  ASSERT_TRUE(WaitUntil([&] {
    return Log().find("a worker owns engine " + std::to_string(engine_) + " again") !=
           std::string::npos;
  })) << Log();
  EXPECT_TRUE(Alive(engine_));
  (*s)->StopAll();
  EXPECT_FALSE(Alive(engine_));
  ASSERT_TRUE(WaitUntil([&] { return ProcessGroupMembers(engine_).empty(); }))
      << "the guard ends with its engine";
  engine_ = 0;
}

TEST(EngineGuardArgsTest, ParsesWhatTheSupervisorPasses) {
  EngineGuardOptions o;
  o.state_file = "/d/engines/instance-3.json";
  o.engine_pid = 4100;
  o.engine_start_ticks = 123456;
  o.orphan_grace = 300s;
  o.stop_grace = 15s;
  o.check_interval = 1s;
  std::vector<std::string> cmd = EngineGuardCommand({"/usr/bin/segma", "engine-guard"}, o);
  EXPECT_EQ(cmd[0], "/usr/bin/segma");
  Result<EngineGuardOptions> back =
      ParseEngineGuardArgs(std::vector<std::string>(cmd.begin() + 2, cmd.end()));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->state_file, o.state_file);
  EXPECT_EQ(back->engine_pid, 4100);
  EXPECT_EQ(back->engine_start_ticks, 123456u);
  EXPECT_EQ(back->orphan_grace, 300s);
  EXPECT_EQ(back->stop_grace, 15s);
  EXPECT_EQ(back->check_interval, 1s);
  EXPECT_EQ(ParseEngineGuardArgs({"--engine-pid", "12"}).status().message(),
            "--state-file is required");
  EXPECT_EQ(ParseEngineGuardArgs({"--state-file", "x", "--engine-pid", "1x"}).status().message(),
            "--engine-pid must be a number, got '1x'");
  EXPECT_EQ(ParseEngineGuardArgs({"--bogus", "1"}).status().message(), "unknown flag --bogus");
}

}  // namespace
}  // namespace segma::engines
