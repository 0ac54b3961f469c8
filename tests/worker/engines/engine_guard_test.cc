#include "worker/engines/engine_guard.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "common/json.h"
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
    o.port_min = 28000 + (getpid() % 500) * 2;
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

}  // namespace
}  // namespace segma::engines
