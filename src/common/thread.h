#pragma once

#include <sys/types.h>

namespace segma {

// Names the calling thread, as `top -H`, `ps -L` and gdb show it. Linux keeps the first 15
// characters. Best effort.
void NameThread(const char* name);

// Lowers the scheduling priority of the calling thread (Linux: nice +10 for this thread only),
// so that background work (key reloads) gets a small share of a core the threads serving
// requests also want. Never starves: a nice thread still gets its share of an otherwise busy core.
// Best effort: a failure is ignored (the thread keeps its priority).
void LowerThreadPriority();

// Whether a thread of the calling process may enter SCHED_IDLE and leave it again (Linux: with
// CAP_SYS_NICE or a large enough RLIMIT_NICE). Tried on a throwaway thread.
bool CanLeaveSchedIdle();

// The scheduling of a background thread that must still keep up with the work others give it,
// such as the usage writer (ADR 0019). Applies to the thread that constructed it, only; Idle() and
// Busy() may be called from any thread, one call at a time (not thread-safe).
//
// Idle() puts it in SCHED_IDLE: it runs only when its cores have nothing else to run, and a thread
// serving a request preempts it at once. At nice +10 it is not preempted at once: the scheduler
// lets it run on for its slice while the serving thread waits. Busy() puts it back in SCHED_OTHER
// at the nice value it had (normally 0): a fair share of a saturated core, so it catches up.
//
// Linux lets a thread leave SCHED_IDLE only with CAP_SYS_NICE or a RLIMIT_NICE that allows its nice
// value. Without either, Idle() does nothing: a thread that could not get back out might never
// catch up (CanLeaveSchedIdle()).
class BackgroundScheduling {
 public:
  // For the calling thread; calls Busy(). The first construction in a process calls
  // CanLeaveSchedIdle() (once).
  BackgroundScheduling();

  void Idle();
  void Busy();

  // Whether Idle() takes effect in this process.
  bool can_idle() const { return can_idle_; }

 private:
  const id_t tid_;
  const bool can_idle_;
  bool idle_ = true;  // so that the constructor's Busy() sets the policy, whatever it was
};

}  // namespace segma
