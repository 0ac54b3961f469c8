#include "common/thread.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

namespace segma {
namespace {

int ThisThreadNice() {
  return ::getpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)));
}

TEST(NameThreadTest, NamesTheCallingThreadKeepingFifteenCharacters) {
  std::string name;
  std::thread t([&name] {
    NameThread("segma-a-very-long-thread-name");
    char buf[32] = {};
    ::pthread_getname_np(::pthread_self(), buf, sizeof(buf));
    name = buf;
  });
  t.join();
  EXPECT_EQ(name, "segma-a-very-lo");
}

TEST(BackgroundSchedulingTest, IdleAndBusySwitchTheCallingThreadOnly) {
  int start_policy = -1, idle_policy = -1, busy_policy = -1, busy_nice = 0;
  bool can_idle = false;
  std::thread t([&] {
    BackgroundScheduling sched;
    can_idle = sched.can_idle();
    start_policy = ::sched_getscheduler(0);
    sched.Idle();
    idle_policy = ::sched_getscheduler(0);
    sched.Busy();
    busy_policy = ::sched_getscheduler(0);
    busy_nice = ThisThreadNice();
  });
  t.join();
  EXPECT_EQ(can_idle, CanLeaveSchedIdle());
  EXPECT_EQ(start_policy, SCHED_OTHER);
  // Where the process may not leave SCHED_IDLE again, Idle() must not enter it.
  EXPECT_EQ(idle_policy, can_idle ? SCHED_IDLE : SCHED_OTHER);
  EXPECT_EQ(busy_policy, SCHED_OTHER);
  EXPECT_EQ(busy_nice, 0);
  // The test's own thread kept its scheduling.
  EXPECT_EQ(::sched_getscheduler(0), SCHED_OTHER);
  EXPECT_EQ(ThisThreadNice(), 0);
}

TEST(BackgroundSchedulingTest, AnUnprivilegedProcessCannotLeaveSchedIdle) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // nobody, with the default RLIMIT_NICE of 0 and no CAP_SYS_NICE.
    struct rlimit none = {0, 0};
    ::setrlimit(RLIMIT_NICE, &none);
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
    ::_exit(CanLeaveSchedIdle() ? 1 : 0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace segma
