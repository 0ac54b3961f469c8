#include "http/io_loop.h"

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

}  // namespace segma::http
