#include "common/thread.h"

#include <unistd.h>

#include <sys/resource.h>
#include <sys/syscall.h>

namespace segma {

void LowerThreadPriority() {
  // On Linux a nice value set with PRIO_PROCESS and a thread id applies to that thread only.
  const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
  const int current = ::getpriority(PRIO_PROCESS, tid);
  if (current < 10) ::setpriority(PRIO_PROCESS, tid, 10);
}

}  // namespace segma
