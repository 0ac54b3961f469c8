// libsegma-vgpu: the limit parser, the shared accounting and the compute budget directly, then the
// library itself, preloaded into vgpu_client (a driver-API program linked against the fake
// libcuda), as the worker preloads it into an engine.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "vgpu/compute_budget.h"
#include "vgpu/limits.h"
#include "vgpu/shared_accounting.h"
#include "vgpu/shared_compute.h"

extern char** environ;

namespace segma::vgpu {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int64_t kGiB = int64_t{1} << 30;
constexpr auto kDeadline = std::chrono::seconds(30);

// ---- limits ----

TEST(LimitsTest, ParsesOrdinalsUuidsAndSuffixes) {
  std::string error;
  auto limits =
      ParseLimits(" 0=10G, GPU-00010203-0405-0607-0809-0a0b0c0d0e0f=512M ,1=4096", &error);
  ASSERT_TRUE(limits) << error;
  ASSERT_EQ(limits->size(), 3u);
  EXPECT_EQ((*limits)[0].key, "0");
  EXPECT_EQ((*limits)[0].bytes, 10 * kGiB);
  EXPECT_EQ((*limits)[1].key, "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f");
  EXPECT_EQ((*limits)[1].bytes, 512 << 20);
  EXPECT_EQ((*limits)[2].bytes, 4096);
  EXPECT_THAT(*ParseLimits("", &error), IsEmpty());
}

TEST(LimitsTest, RejectsMalformedEntries) {
  for (const char* bad : {"0", "=5", "0=", "0=-1", "0=0", "0=12X", "0=1,0=2", "0=99999999999T"}) {
    std::string error;
    EXPECT_FALSE(ParseLimits(bad, &error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
  std::string many;
  for (int i = 0; i <= kMaxDevices; ++i) many += std::to_string(i) + "=1G,";
  std::string error;
  EXPECT_FALSE(ParseLimits(many, &error));
  EXPECT_THAT(error, HasSubstr("more than 16"));
}

TEST(LimitsTest, UuidKeysWinAndIgnoreTheMigPrefix) {
  std::string error;
  auto limits = *ParseLimits("0=1G,MIG-00010203-0405-0607-0809-0a0b0c0d0e0f=2G", &error);
  const char raw[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const std::string uuid = FormatUuid(raw);
  EXPECT_EQ(uuid, "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f");
  EXPECT_EQ(FindLimit(limits, 0, uuid), 1);
  EXPECT_EQ(FindLimit(limits, 0, ""), 0);
  EXPECT_EQ(FindLimit(limits, 3, ""), -1);
}

// ---- shared accounting ----

std::string UniqueShmName() {
  static int n = 0;
  return "/segma-vgpu-test-" + std::to_string(::getpid()) + "-" + std::to_string(++n);
}

class ShmName {
 public:
  ShmName() : name_(UniqueShmName()) {}
  ~ShmName() { ::shm_unlink(name_.c_str()); }
  const std::string& str() const { return name_; }

 private:
  std::string name_;
};

TEST(SharedAccountingTest, ReservesWithinTheLimitAndCountsRefusals) {
  ShmName name;
  std::string error;
  auto acct = SharedAccounting::Open(name.str(), &error);
  ASSERT_NE(acct, nullptr) << error;
  EXPECT_TRUE(acct->Reserve(0, 6 * kGiB, 10 * kGiB));
  EXPECT_FALSE(acct->Reserve(0, 5 * kGiB, 10 * kGiB));
  EXPECT_TRUE(acct->Reserve(1, 5 * kGiB, 10 * kGiB));  // devices are separate
  EXPECT_EQ(acct->Used(0), 6 * kGiB);
  EXPECT_EQ(acct->LimitHits(0), 1);
  acct->Release(0, 6 * kGiB);
  EXPECT_TRUE(acct->Reserve(0, 10 * kGiB, 10 * kGiB));
  EXPECT_FALSE(acct->Reserve(kMaxDevices, 1, 10 * kGiB));
}

TEST(SharedAccountingTest, TwoOpeningsShareAndADeadProcessIsReclaimed) {
  ShmName name;
  std::string error;
  auto acct = SharedAccounting::Open(name.str(), &error);
  ASSERT_NE(acct, nullptr) << error;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // A process of the same instance books 7 GiB and dies without giving them back.
    std::string e;
    auto mine = SharedAccounting::Open(name.str(), &e);
    const char ok = mine != nullptr && mine->Reserve(0, 7 * kGiB, 10 * kGiB) ? 'y' : 'n';
    (void)!::write(ready[1], &ok, 1);
    ::_exit(0);
  }
  ::close(ready[1]);
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(ok, 'y');
  EXPECT_EQ(acct->UsedBy(child, 0), 7 * kGiB);
  // Until it is reaped it is a zombie, whose memory the driver already freed: it does not count
  // against the limit either way once reaped.
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(acct->Reserve(0, 5 * kGiB, 10 * kGiB));  // reclaims the dead entry first
  EXPECT_EQ(acct->Used(0), 5 * kGiB);
  EXPECT_EQ(acct->UsedBy(child, 0), 0);
}

TEST(SharedAccountingTest, RejectsASegmentOfAnotherFormat) {
  ShmName name;
  const int fd = ::shm_open(name.str().c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  const uint32_t junk[3] = {0xdeadbeef, 9, 2};  // "ready", but not our magic
  ASSERT_EQ(::write(fd, junk, sizeof(junk)), static_cast<ssize_t>(sizeof(junk)));
  ::close(fd);
  std::string error;
  EXPECT_EQ(SharedAccounting::Open(name.str(), &error), nullptr);
  EXPECT_THAT(error, HasSubstr("not a segma-vgpu v2 segment"));
}

// ---- compute shares and the compute budget ----

TEST(ComputeSharesTest, ParsesOrdinalsAndPercents) {
  std::string error;
  auto shares = ParseComputeShares(" 0=70, 3=30 ,15=100", &error);
  ASSERT_TRUE(shares) << error;
  ASSERT_EQ(shares->size(), 3u);
  EXPECT_EQ((*shares)[0].ordinal, 0);
  EXPECT_EQ((*shares)[0].percent, 70);
  EXPECT_EQ((*shares)[1].ordinal, 3);
  EXPECT_EQ((*shares)[1].percent, 30);
  EXPECT_EQ((*shares)[2].percent, 100);
  EXPECT_THAT(*ParseComputeShares("", &error), IsEmpty());
}

TEST(ComputeSharesTest, RejectsMalformedEntries) {
  for (const char* bad : {"0", "=5", "0=", "0=0", "0=101", "0=-5", "0=50%", "0=x", "-1=50", "16=50",
                          "GPU-0=50", "0=50,0=60", "0=5.5"}) {
    std::string error;
    EXPECT_FALSE(ParseComputeShares(bad, &error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
}

TEST(ComputeBudgetTest, TakesWhileTokensAreLeftAndMayGoIntoDebtByOneLaunch) {
  ComputeCells cells{};
  ComputeBudget::Initialise(cells);
  ComputeBudget budget(cells);
  EXPECT_EQ(budget.Tokens(), kInitialRefill);
  EXPECT_TRUE(budget.Take(kInitialRefill - 1));
  EXPECT_TRUE(budget.Take(100));  // one token left: the launch goes, 99 in debt
  EXPECT_EQ(budget.Tokens(), -99);
  EXPECT_FALSE(budget.Take(1));
  EXPECT_EQ(budget.Tokens(), -99);
}

TEST(ComputeBudgetTest, OneTickPerPeriodAndTheRefillIsCappedAtOnePeriod) {
  ComputeCells cells{};
  ComputeBudget::Initialise(cells);
  ComputeBudget budget(cells);
  const int64_t t0 = 5 * kComputePeriodNs;
  EXPECT_TRUE(budget.ClaimTick(t0));
  EXPECT_FALSE(budget.ClaimTick(t0));  // another process in the same period
  EXPECT_FALSE(budget.ClaimTick(t0 + kComputePeriodNs - 1));
  EXPECT_TRUE(budget.ClaimTick(t0 + kComputePeriodNs));
  // Missed for a long time: the schedule restarts from now rather than catching up.
  EXPECT_TRUE(budget.ClaimTick(t0 + 10 * kComputePeriodNs));
  EXPECT_FALSE(budget.ClaimTick(t0 + 10 * kComputePeriodNs + 1));
  // No reading: the refill stays; an idle bucket does not save up more than one period.
  budget.Tick(50, std::nullopt, t0, kComputeUpdateNs);
  EXPECT_EQ(budget.Refill(), kInitialRefill);
  EXPECT_EQ(budget.Tokens(), kInitialRefill);
  // Debt is paid back first.
  ASSERT_TRUE(budget.Take(kInitialRefill + 1000));
  budget.Tick(50, std::nullopt, t0 + kComputePeriodNs, kComputeUpdateNs);
  EXPECT_EQ(budget.Tokens(), kInitialRefill - 1000);
}

TEST(ComputeBudgetTest, InstanceUtilIsItsShareOfTheSamplingInstants) {
  const std::vector<pid_t> ours = {10, 11};
  // No new samples: no reading.
  EXPECT_EQ(InstanceUtil({}, ours), std::nullopt);
  // Time-slicing, as an H100 reported it: one process named per instant, busy. Ours (10) on one
  // instant of three: a third of the GPU, not the 97 % of its own samples.
  const std::vector<UtilSample> sliced = {{10, 100, 97}, {20, 200, 99}, {20, 300, 98}};
  EXPECT_EQ(InstanceUtil(sliced, ours), 32);
  // Only the neighbour's instants: 0 %, a reading (not "no reading").
  EXPECT_EQ(InstanceUtil(std::vector<UtilSample>{{20, 100, 99}}, ours), 0);
  // Running together (MPS): one sample per process per instant; two of ours add up.
  const std::vector<UtilSample> together = {{10, 100, 20}, {11, 100, 15}, {20, 100, 50},
                                            {10, 200, 30}, {11, 200, 5},  {20, 200, 50}};
  EXPECT_EQ(InstanceUtil(together, ours), 35);
  // Never above 100 %.
  EXPECT_EQ(InstanceUtil(std::vector<UtilSample>{{10, 100, 90}, {11, 100, 90}}, ours), 100);
}

TEST(ComputeBudgetTest, TheRefillFollowsUtilisationAgainstTheShare) {
  // Above the share: the tokens spent, scaled by sqrt(share / utilisation), the ratio kept
  // within [1/2, 2].
  EXPECT_EQ(NextRefill(1000, 50, 100, 800, true), 565);   // 800 * sqrt(1/2)
  EXPECT_EQ(NextRefill(1000, 30, 40, 2000, true), 866);   // spent more than the refill (debt)
  EXPECT_EQ(NextRefill(1000, 10, 100, 800, false), 565);  // ratio 1/10, kept at 1/2
  EXPECT_EQ(NextRefill(1, 10, 100, 0, true), kMinRefill);
  // Within a point: unchanged.
  EXPECT_EQ(NextRefill(1000, 50, 51, 1000, true), 1000);
  EXPECT_EQ(NextRefill(1000, 50, 49, 1000, true), 1000);
  // Below it: up only when launches waited.
  EXPECT_EQ(NextRefill(1000, 50, 40, 1000, true), 1118);
  EXPECT_EQ(NextRefill(1000, 50, 10, 1000, true), 1414);
  EXPECT_EQ(NextRefill(1000, 50, 0, 1000, true), 1414);
  EXPECT_EQ(NextRefill(1000, 50, 10, 1000, false), 1000);
  EXPECT_EQ(NextRefill(kMaxRefill, 50, 10, 1000, true), kMaxRefill);
  // Updates come every update interval, from the mean of the readings since the last one.
  ComputeCells cells{};
  ComputeBudget::Initialise(cells);
  ComputeBudget budget(cells);
  const int64_t spent = kInitialRefill / 2;
  ASSERT_TRUE(budget.Take(spent));
  budget.Tick(50, 100, kComputeUpdateNs, kComputeUpdateNs);
  const auto after = static_cast<int64_t>(static_cast<double>(spent) * std::sqrt(0.5));
  EXPECT_EQ(budget.Refill(), after);
  budget.Tick(50, 100, kComputeUpdateNs + kComputePeriodNs, kComputeUpdateNs);
  EXPECT_EQ(budget.Refill(), after);  // not yet
}

// A simulated GPU with one always-busy process: a launch of 64 blocks keeps the GPU 0.5 ms, and
// NVML reports the busy share of each period `lag` periods late. The loop must bring the mean
// utilisation to the share and keep it there.
double SimulatedUtilisation(int percent, int lag) {
  ComputeCells cells{};
  ComputeBudget::Initialise(cells);
  ComputeBudget budget(cells);
  constexpr int kLaunchesPerPeriod = 200;
  std::deque<int> readings;
  double sum = 0;
  int counted = 0;
  int64_t now = 0;
  for (int period = 0; period < 600; ++period) {
    int launches = 0;
    while (launches < kLaunchesPerPeriod && budget.Take(64)) ++launches;
    if (launches < kLaunchesPerPeriod) budget.NoteWait();
    const int util = launches * 100 / kLaunchesPerPeriod;
    readings.push_back(util);
    std::optional<int> reading;
    if (static_cast<int>(readings.size()) > lag) {
      reading = readings.front();
      readings.pop_front();
    }
    now += kComputePeriodNs;
    EXPECT_TRUE(budget.ClaimTick(now));
    budget.Tick(percent, reading, now, kComputeUpdateNs);
    if (period >= 300) {
      sum += util;
      ++counted;
    }
  }
  return sum / counted;
}

TEST(ComputeBudgetTest, ASimulatedBusyProcessConvergesToItsShare) {
  for (int percent : {30, 50, 70}) {
    for (int lag : {0, 1, 3, 5, 10}) {
      EXPECT_NEAR(SimulatedUtilisation(percent, lag), percent, 3)
          << percent << " % with readings " << lag << " periods late";
    }
  }
}

TEST(SharedComputeTest, OpeningsShareBucketsAndProcesses) {
  ShmName name;
  std::string error;
  auto a = SharedCompute::Open(name.str(), &error);
  ASSERT_NE(a, nullptr) << error;
  auto b = SharedCompute::Open(name.str(), &error);
  ASSERT_NE(b, nullptr) << error;
  ComputeBudget(a->Cells(1)).Take(1000);
  EXPECT_EQ(ComputeBudget(b->Cells(1)).Tokens(), kInitialRefill - 1000);
  EXPECT_EQ(ComputeBudget(b->Cells(0)).Tokens(), kInitialRefill);
  EXPECT_TRUE(a->Register(::getpid()));
  EXPECT_TRUE(b->Register(::getpid()));  // once
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(b->Register(child));
  EXPECT_THAT(a->Processes(), ::testing::UnorderedElementsAre(::getpid(), child));
  EXPECT_EQ(a->ReclaimDead(), 1);
  EXPECT_THAT(b->Processes(), ::testing::ElementsAre(::getpid()));
}

// ---- the preloaded library ----

// vgpu_client run with the library preloaded, reading its output line by line with a deadline.
class Client {
 public:
  Client(std::vector<std::string> args, std::map<std::string, std::string> env) {
    std::vector<std::string> envs;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string kv = *e;
      const std::string key = kv.substr(0, kv.find('='));
      if (key == "LD_PRELOAD" || key.starts_with("SEGMA_VGPU_") || key.starts_with("FAKE_CUDA_") ||
          key.starts_with("FAKE_NVML_")) {
        continue;
      }
      envs.push_back(kv);
    }
    std::string preload = VGPU_LIBRARY_PATH;
    if (std::strlen(VGPU_ASAN_RUNTIME) > 0)
      preload = std::string(VGPU_ASAN_RUNTIME) + ":" + preload;
    envs.push_back("LD_PRELOAD=" + preload);
    for (const auto& [k, v] : env) envs.push_back(k + "=" + v);
    args.insert(args.begin(), VGPU_CLIENT_PATH);
    std::vector<char*> argv, envp;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (std::string& e : envs) envp.push_back(e.data());
    envp.push_back(nullptr);
    int in[2], out[2], err[2];
    EXPECT_EQ(::pipe2(in, O_CLOEXEC), 0);
    EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
    EXPECT_EQ(::pipe2(err, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    EXPECT_EQ(posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), envp.data()), 0);
    posix_spawn_file_actions_destroy(&fa);
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    stdin_ = in[1];
    stdout_ = out[0];
    stderr_ = err[0];
  }
  ~Client() {
    if (stdin_ >= 0) ::close(stdin_);
    if (pid_ > 0) Wait();
    ::close(stdout_);
    ::close(stderr_);
  }

  // The next line of output; "" at the end of output or after the deadline.
  std::string Line() {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (true) {
      const size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "";
      pollfd p{stdout_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::read(stdout_, buf, sizeof(buf));
      if (n <= 0) return "";
      buffer_.append(buf, n);
    }
  }
  // All lines until the program exits, then its exit status.
  std::vector<std::string> Lines() {
    std::vector<std::string> lines;
    for (std::string l = Line(); !l.empty(); l = Line()) lines.push_back(l);
    return lines;
  }
  void CloseStdin() {
    if (stdin_ >= 0) ::close(stdin_);
    stdin_ = -1;
  }
  int Wait() {
    if (stdin_ >= 0) {
      ::close(stdin_);
      stdin_ = -1;
    }
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = 0;
    return status;
  }
  void Kill() {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = 0;
  }
  std::string Stderr() {
    std::string s;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(stderr_, buf, sizeof(buf))) > 0) s.append(buf, n);
    return s;
  }

 private:
  pid_t pid_ = 0;
  int stdin_ = -1, stdout_ = -1, stderr_ = -1;
  std::string buffer_;
};

// The result codes of a run's output lines, in order ("alloc 2" → 2).
std::vector<int> Codes(const std::vector<std::string>& lines) {
  std::vector<int> codes;
  for (const std::string& l : lines) {
    std::istringstream in(l);
    std::string op;
    int code = -1;
    in >> op >> code;
    codes.push_back(code);
  }
  return codes;
}

// The whitespace-separated fields of a line.
std::vector<std::string> Fields(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> f;
  for (std::string s; in >> s;) f.push_back(s);
  return f;
}

constexpr int kOk = 0;
constexpr int kOom = 2;

class VgpuPreloadTest : public ::testing::Test {
 protected:
  std::map<std::string, std::string> Env(std::string limits = "0=10G") {
    return {{"SEGMA_VGPU_LIMITS", limits}, {"SEGMA_VGPU_SHM", shm_.str()}};
  }
  std::vector<std::string> Run(std::vector<std::string> args,
                               std::map<std::string, std::string> env) {
    Client c(std::move(args), std::move(env));
    std::vector<std::string> lines = c.Lines();
    EXPECT_EQ(c.Wait(), 0) << c.Stderr();
    return lines;
  }
  ShmName shm_;
};

TEST_F(VgpuPreloadTest, RefusesPastTheLimitAndFreesGiveTheRoomBack) {
  Client c({"alloc", "6G", "alloc", "6G", "alloc", "4G", "used", "0", "free", "0", "alloc", "6G"},
           Env());
  const std::vector<std::string> lines = c.Lines();
  ASSERT_EQ(c.Wait(), 0);
  EXPECT_EQ(Codes(lines), (std::vector<int>{kOk, kOom, kOk, kOk, kOk, kOk}));
  // The refused allocation never reached the driver.
  EXPECT_EQ(Fields(lines[3])[2], std::to_string(10 * kGiB));
  EXPECT_THAT(c.Stderr(), HasSubstr("segma-vgpu: out of memory: refused 6442450944 bytes on device "
                                    "0: 6442450944 of 10737418240 bytes"));
}

TEST_F(VgpuPreloadTest, MemGetInfoAndTotalMemReportTheSlice) {
  const auto lines =
      Run({"alloc", "3G", "info", "gpa:info", "totalmem", "0", "totalmem", "1"}, Env());
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(Fields(lines[1]), (std::vector<std::string>{"info", "0", std::to_string(7 * kGiB),
                                                        std::to_string(10 * kGiB)}));
  EXPECT_EQ(Fields(lines[2])[3], std::to_string(10 * kGiB));
  EXPECT_EQ(Fields(lines[3])[2], std::to_string(10 * kGiB));
  EXPECT_EQ(Fields(lines[4])[2], std::to_string(80 * kGiB));  // device 1 has no limit
}

TEST_F(VgpuPreloadTest, EveryAllocationPathIsHeldToTheLimit) {
  for (const std::string path :
       {"alloc", "managed", "async", "async_ptsz", "pool", "pool_ptsz", "create", "gpa:alloc",
        "gpa:managed", "gpa:async", "gpa:async_ptsz", "gpa:pool", "gpa:pool_ptsz", "gpa:create",
        "gpa1:alloc", "gpa1:create"}) {
    const bool vmm = path.ends_with("create");
    const std::string give_back = path.starts_with("gpa") ? path.substr(0, path.find(':') + 1) : "";
    const auto lines = Run({path, "6G", path, "6G", "used", "0",
                            give_back + (vmm ? "release" : "free"), "0", path, "6G"},
                           Env());
    EXPECT_EQ(Codes(lines), (std::vector<int>{kOk, kOom, kOk, kOk, kOk})) << path;
    EXPECT_EQ(Fields(lines[2])[2], std::to_string(6 * kGiB)) << path;
  }
  // A pitched allocation is booked at pitch * height: rows of 1,000 bytes have a pitch of 1,024.
  // 8 Mi rows take 8 GiB; 2.1 M more rows fit in the 2 GiB left as 1,000-byte rows but not as
  // 1,024-byte ones, so the driver's allocation is given back and refused.
  const auto lines = Run({"pitch", "1000", "8M", "pitch", "1000", "2100000", "used", "0"}, Env());
  EXPECT_EQ(Codes(lines), (std::vector<int>{kOk, kOom, kOk}));
  EXPECT_EQ(Fields(lines[2])[2], std::to_string(8 * kGiB));
}

TEST_F(VgpuPreloadTest, GetProcAddressAnswersWithTheWrappers) {
  for (const char* internal : {"0", "1"}) {  // exported or internal addresses from the driver
    auto env = Env();
    env["FAKE_CUDA_INTERNAL_POINTERS"] = internal;
    const auto lines = Run({"is_wrapped", "cuMemAlloc",
                            "12000",      "0",  //
                            "is_wrapped", "cuMemAllocAsync",
                            "12000",      "2",  // _ptsz
                            "is_wrapped", "cuMemGetInfo",
                            "12000",      "0",  //
                            "is_wrapped", "cuGetProcAddress",
                            "12000",      "0",  //
                            "is_wrapped", "cuMemAlloc",
                            "2000",       "0",  // 32-bit v1
                            "is_wrapped", "cuInit",
                            "12000",      "0",  // not ours
                            "gpa:alloc",  "11G",
                            "gpa:info"},
                           env);
    ASSERT_EQ(lines.size(), 8u) << internal;
    EXPECT_EQ(lines[0], "is_wrapped 0 1") << internal;
    EXPECT_EQ(lines[1], "is_wrapped 0 1") << internal;
    EXPECT_EQ(lines[2], "is_wrapped 0 1") << internal;
    EXPECT_EQ(lines[3], "is_wrapped 0 1") << internal;
    EXPECT_EQ(lines[4], "is_wrapped 0 0") << internal;
    EXPECT_EQ(lines[5], "is_wrapped 0 0") << internal;
    EXPECT_EQ(Codes({lines[6]}), std::vector<int>{kOom}) << internal;
    EXPECT_EQ(Fields(lines[7])[3], std::to_string(10 * kGiB)) << internal;
  }
}

TEST_F(VgpuPreloadTest, ProcessesOfOneInstanceShareTheLimit) {
  Client holder({"alloc", "6G", "hold"}, Env());
  ASSERT_EQ(holder.Line(), "alloc 0 0");
  ASSERT_EQ(holder.Line(), "hold 0");
  EXPECT_EQ(Codes(Run({"alloc", "6G", "alloc", "4G", "info"}, Env())),
            (std::vector<int>{kOom, kOk, kOk}));
  // Another instance (another segment) has its own 10 GiB.
  ShmName other;
  auto env = Env();
  env["SEGMA_VGPU_SHM"] = other.str();
  EXPECT_EQ(Codes(Run({"alloc", "6G"}, env)), (std::vector<int>{kOk}));
  EXPECT_EQ(holder.Wait(), 0);
}

TEST_F(VgpuPreloadTest, AKilledProcessesAllocationsAreReclaimed) {
  Client holder({"alloc", "6G", "hold"}, Env());
  ASSERT_EQ(holder.Line(), "alloc 0 0");
  ASSERT_EQ(holder.Line(), "hold 0");
  EXPECT_EQ(Codes(Run({"alloc", "6G"}, Env())), (std::vector<int>{kOom}));
  holder.Kill();
  const auto lines = Run({"info", "alloc", "6G"}, Env());
  EXPECT_EQ(Fields(lines[0])[2], std::to_string(10 * kGiB));
  EXPECT_EQ(Codes({lines[1]}), (std::vector<int>{kOk}));
}

TEST_F(VgpuPreloadTest, ALimitByUuidHoldsThatDevice) {
  // The fake's device 1 is GPU-11111111-1111-2222-3333-444444444444.
  const auto lines = Run(
      {"device", "1", "alloc", "3G", "alloc", "1G", "device", "0", "alloc", "30G", "totalmem", "1"},
      Env("GPU-11111111-1111-2222-3333-444444444444=2G"));
  EXPECT_EQ(Codes(lines), (std::vector<int>{kOk, kOom, kOk, kOk, kOk, kOk}));
  EXPECT_EQ(Fields(lines[5])[2], std::to_string(2 * kGiB));
}

TEST_F(VgpuPreloadTest, NvmlMemoryInfoReportsTheSlice) {
  // The fake NVML's GPU 0 (141 GiB) is the fake CUDA's device 0 (same UUID); the limit is keyed
  // by CUDA ordinal and matched through the UUID once CUDA has been used.
  const auto lines = Run(
      {"alloc", "3G", "nvml", "0", "nvml_v2", "0", "nvml", "1", "alloc", "8G", "nvml", "0"}, Env());
  ASSERT_EQ(lines.size(), 6u);
  const std::string total = std::to_string(10 * kGiB);
  EXPECT_EQ(Fields(lines[1]),
            (std::vector<std::string>{"nvml", "0", total, std::to_string(7 * kGiB),
                                      std::to_string(3 * kGiB)}));
  EXPECT_EQ(Fields(lines[2])[2], total);
  EXPECT_EQ(Fields(lines[2])[4], std::to_string(3 * kGiB));
  EXPECT_EQ(Fields(lines[3])[2], std::to_string(141 * kGiB));  // GPU 1: no limit
  EXPECT_EQ(Codes({lines[4]}), std::vector<int>{kOom});
  // Keyed by UUID, NVML reports the slice even before CUDA is used.
  const auto by_uuid = Run({"nvml", "0"}, Env("GPU-00000000-1111-2222-3333-444444444444=10G"));
  EXPECT_EQ(Fields(by_uuid[0])[2], total);
}

TEST_F(VgpuPreloadTest, MalformedLimitsRefuseEveryAllocation) {
  Client c({"alloc", "1M", "gpa:alloc", "1M"}, Env("0=lots"));
  EXPECT_EQ(Codes(c.Lines()), (std::vector<int>{kOom, kOom}));
  EXPECT_EQ(c.Wait(), 0);
  EXPECT_THAT(c.Stderr(), HasSubstr("SEGMA_VGPU_LIMITS: bad limit '0=lots'"));
}

TEST_F(VgpuPreloadTest, WithoutLimitsCallsPassThrough) {
  EXPECT_EQ(Codes(Run({"alloc", "70G", "info", "alloc", "20G"}, Env(""))),
            (std::vector<int>{kOk, kOk, kOom}));  // the last one: the fake's 80 GiB are full
}

// ---- the compute share ----

class VgpuComputeTest : public VgpuPreloadTest {
 protected:
  // A share on device 0, with the fake NVML reporting `util` % for the process itself.
  std::map<std::string, std::string> ComputeEnv(const std::string& share, const char* util) {
    auto env = Env();
    env["SEGMA_VGPU_COMPUTE"] = share;
    env["SEGMA_VGPU_LIBNVML"] = FAKE_NVML_PATH;
    if (util != nullptr) env["FAKE_NVML_SM_UTIL"] = util;
    return env;
  }
  bool ComputeSegmentExists() {
    const int fd = ::shm_open((shm_.str() + "-compute").c_str(), O_RDONLY, 0);
    if (fd >= 0) ::close(fd);
    return fd >= 0;
  }
  ~VgpuComputeTest() override { ::shm_unlink((shm_.str() + "-compute").c_str()); }
};

const std::vector<std::string> kLaunchPaths = {"launch",
                                               "launch_ptsz",
                                               "launch_ex",
                                               "launch_ex_ptsz",
                                               "coop",
                                               "coop_ptsz",
                                               "graph",
                                               "graph_ptsz",
                                               "gpa:launch",
                                               "gpa:launch_ptsz",
                                               "gpa:launch_ex",
                                               "gpa:launch_ex_ptsz",
                                               "gpa:coop",
                                               "gpa:coop_ptsz",
                                               "gpa:graph",
                                               "gpa:graph_ptsz",
                                               "gpa1:launch",
                                               "gpa1:launch_ptsz",
                                               "gpa1:launch_ex_ptsz",
                                               "gpa1:graph"};

TEST_F(VgpuComputeTest, WithoutAShareLaunchesPassThroughAndAreNotWrapped) {
  std::vector<std::string> args = {"is_wrapped", "cuLaunchKernel", "12000", "0",
                                   "is_wrapped", "cuGraphLaunch",  "12000", "2"};
  for (const std::string& path : kLaunchPaths) {
    args.push_back(path);
    args.push_back("100");
  }
  for (const char* share : {"", "0=100"}) {
    auto env = ComputeEnv(share, "90");
    const auto lines = Run(args, env);
    ASSERT_EQ(lines.size(), 2 + kLaunchPaths.size()) << share;
    EXPECT_EQ(lines[0], "is_wrapped 0 0") << share;
    EXPECT_EQ(lines[1], "is_wrapped 0 0") << share;
    EXPECT_EQ(
        Fields(lines.back()),
        (std::vector<std::string>{"gpa1:graph", "0", std::to_string(100 * kLaunchPaths.size())}))
        << share;
    EXPECT_FALSE(ComputeSegmentExists()) << share;
  }
}

TEST_F(VgpuComputeTest, MalformedSharesAreReportedAndNotLimited) {
  for (const char* share : {"0=150", "0=half", "GPU-1=50"}) {
    Client c({"is_wrapped", "cuLaunchKernel", "12000", "0", "launch", "100"},
             ComputeEnv(share, "90"));
    const auto lines = c.Lines();
    EXPECT_EQ(c.Wait(), 0);
    ASSERT_EQ(lines.size(), 2u) << share;
    EXPECT_EQ(lines[0], "is_wrapped 0 0") << share;
    EXPECT_EQ(lines[1], "launch 0 100") << share;
    const std::string err = c.Stderr();
    EXPECT_THAT(err, HasSubstr(std::string("segma-vgpu: SEGMA_VGPU_COMPUTE: bad share '") + share))
        << share;
    EXPECT_THAT(err, HasSubstr("not limiting compute")) << share;
    EXPECT_FALSE(ComputeSegmentExists()) << share;
  }
}

TEST_F(VgpuComputeTest, EveryLaunchEntryPointIsWrappedWhenLimited) {
  for (const char* internal : {"0", "1"}) {  // exported or internal addresses from the driver
    auto env = ComputeEnv("0=50", "10");
    env["FAKE_CUDA_INTERNAL_POINTERS"] = internal;
    std::vector<std::string> args;
    for (const char* gpa : {"is_wrapped", "is_wrapped1"}) {
      for (const char* name :
           {"cuLaunchKernel", "cuLaunchKernelEx", "cuLaunchCooperativeKernel", "cuGraphLaunch"}) {
        for (const char* flags : {"0", "2"}) args.insert(args.end(), {gpa, name, "12000", flags});
      }
    }
    const auto lines = Run(args, env);
    ASSERT_EQ(lines.size(), 16u) << internal;
    for (size_t i = 0; i < lines.size(); ++i) {
      EXPECT_THAT(lines[i], ::testing::EndsWith(" 0 1"))
          << internal << " " << args[4 * i + 1] << " flags " << args[4 * i + 3];
    }
  }
}

// The launches' waits, read from the instance's compute segment, once there are some or at the
// deadline.
int64_t WaitsWithin(const std::string& shm) {
  std::string error;
  auto shared = SharedCompute::Open(shm + "-compute", &error);
  EXPECT_NE(shared, nullptr) << error;
  if (shared == nullptr) return -1;
  ComputeBudget budget(shared->Cells(0));
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (budget.Waits() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return budget.Waits();
}

TEST_F(VgpuComputeTest, LaunchesAboveTheShareWaitOnEveryPath) {
  // NVML says the instance uses 90 % against a share of 50 %: the bucket shrinks until launches
  // find it empty. Launches still all reach the driver.
  for (const std::string& path : kLaunchPaths) {
    ShmName shm;
    auto env = ComputeEnv("0=50", "90");
    env["SEGMA_VGPU_SHM"] = shm.str();
    Client c({"spin", path}, env);
    EXPECT_GT(WaitsWithin(shm.str()), 0) << path;
    c.CloseStdin();
    const std::vector<std::string> f = Fields(c.Line());
    ASSERT_EQ(f.size(), 4u) << path;
    EXPECT_EQ(f[1], "0") << path;
    EXPECT_EQ(f[2], f[3]) << path;  // every launch made reached the driver
    EXPECT_EQ(c.Wait(), 0) << c.Stderr();
    ::shm_unlink((shm.str() + "-compute").c_str());
  }
}

TEST_F(VgpuComputeTest, ProcessesOfOneInstanceShareTheBudget) {
  // Two spinning processes of one instance: both are listed for NVML's per-process readings and
  // draw on the same bucket.
  auto env = ComputeEnv("0=50", "90");
  Client a({"spin", "launch"}, env);
  Client b({"spin", "gpa:launch"}, env);
  EXPECT_GT(WaitsWithin(shm_.str()), 0);
  std::string error;
  auto shared = SharedCompute::Open(shm_.str() + "-compute", &error);
  ASSERT_NE(shared, nullptr) << error;
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (shared->Processes().size() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(shared->Processes().size(), 2u);
  for (Client* c : {&a, &b}) {
    c->CloseStdin();
    EXPECT_EQ(Fields(c->Line()).size(), 4u);
    EXPECT_EQ(c->Wait(), 0) << c->Stderr();
  }
}

}  // namespace
}  // namespace segma::vgpu
