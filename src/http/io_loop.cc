#include "http/io_loop.h"

#include <thread>
#include <vector>

#include "common/thread.h"

namespace segma::http {

void RunIoContext(boost::asio::io_context& ioc, std::chrono::microseconds busy_poll) {
  if (busy_poll.count() <= 0) {
    ioc.run();
    return;
  }
  using Clock = std::chrono::steady_clock;
  Clock::time_point spin_until = Clock::now() + busy_poll;
  while (!ioc.stopped()) {
    // poll() runs the reactor with a zero timeout, then every handler that is ready.
    if (ioc.poll() > 0) {
      spin_until = Clock::now() + busy_poll;
    } else if (Clock::now() >= spin_until) {
      // Nothing for a whole window: sleep until the next handler (0: stopped or out of work).
      if (ioc.run_one() == 0) return;
      spin_until = Clock::now() + busy_poll;
    }
  }
}

void RunIoThreads(boost::asio::io_context& ioc, int threads, std::chrono::microseconds busy_poll) {
  std::vector<std::thread> more;
  for (int i = 1; i < threads; ++i) {
    more.emplace_back([&] {
      NameThread("segma-io");  // not the caller: the main thread's name is the process's
      RunIoContext(ioc, busy_poll);
    });
  }
  RunIoContext(ioc, busy_poll);
  for (auto& t : more) t.join();
}

}  // namespace segma::http
