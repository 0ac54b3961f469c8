#include "common/thread.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <thread>

#include <sys/resource.h>
#include <sys/syscall.h>

namespace segma {
namespace {

constexpr int kBackgroundNice = 10;

id_t ThisThreadId() { return static_cast<id_t>(::syscall(SYS_gettid)); }

// On Linux sched_setscheduler takes a thread id and changes that thread only (0: the caller).
bool SetPolicy(id_t tid, int policy) {
  sched_param param{};
  param.sched_priority = 0;
  return ::sched_setscheduler(static_cast<pid_t>(tid), policy, &param) == 0;
}

}  // namespace

// Tried on a thread of its own (at the caller's nice value), which is left in whatever state the
// test put it in and then ends.
bool CanLeaveSchedIdle() {
  bool ok = false;
  std::thread probe([&ok] { ok = SetPolicy(0, SCHED_IDLE) && SetPolicy(0, SCHED_OTHER); });
  probe.join();
  return ok;
}

void NameThread(const char* name) {
  char truncated[16] = {};
  for (size_t i = 0; i < sizeof(truncated) - 1 && name[i] != '\0'; ++i) truncated[i] = name[i];
  ::pthread_setname_np(::pthread_self(), truncated);
}

void LowerThreadPriority() {
  // On Linux a nice value set with PRIO_PROCESS and a thread id applies to that thread only.
  const id_t tid = ThisThreadId();
  const int current = ::getpriority(PRIO_PROCESS, tid);
  if (current < kBackgroundNice) ::setpriority(PRIO_PROCESS, tid, kBackgroundNice);
}

BackgroundScheduling::BackgroundScheduling()
    : tid_(ThisThreadId()), can_idle_([] {
        static const bool can = CanLeaveSchedIdle();
        return can;
      }()) {
  Busy();
}

void BackgroundScheduling::Idle() {
  if (idle_ || !can_idle_) return;
  idle_ = SetPolicy(tid_, SCHED_IDLE);
}

void BackgroundScheduling::Busy() {
  if (idle_ && SetPolicy(tid_, SCHED_OTHER)) idle_ = false;
}

}  // namespace segma
