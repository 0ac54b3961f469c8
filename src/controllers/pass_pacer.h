#pragma once

#include <atomic>
#include <chrono>

namespace segma::controllers {

// Spaces the controller passes that changes trigger (issue 17). While changes keep coming
// (thousands of workers registering at once), a pass may start no sooner after the last one ended
// than that one took: passes then take at most half of the blocking pool's time, and requests and
// heartbeats get the rest. A pass that took milliseconds holds the next back by milliseconds.
//
// Times are passed in, so the rule is tested without a clock. Thread-safe: Ran is called by the
// thread that ran the pass, EarliestStart by whichever thread triggers the next one.
class PassPacer {
 public:
  using Clock = std::chrono::steady_clock;

  void Ran(Clock::time_point start, Clock::time_point end) {
    earliest_.store((end + (end - start)).time_since_epoch().count());
  }

  // When the next triggered pass may start; the epoch before any pass ran.
  Clock::time_point EarliestStart() const {
    return Clock::time_point(Clock::duration(earliest_.load()));
  }

 private:
  std::atomic<Clock::rep> earliest_{0};
};

}  // namespace segma::controllers
