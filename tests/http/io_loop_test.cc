// RunIoContext: runs what io_context::run() runs, ends when it ends, polls for the busy-poll
// window after work and sleeps once the window has passed with nothing to do.
#include "http/io_loop.h"

#include <time.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <gtest/gtest.h>

namespace segma::http {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

std::chrono::microseconds ThreadCpuTime() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::microseconds(ts.tv_nsec / 1000);
}

class IoLoopTest : public ::testing::TestWithParam<std::chrono::microseconds> {};

TEST_P(IoLoopTest, RunsEveryHandlerInOrderAndReturnsWhenOutOfWork) {
  asio::io_context ioc(1);
  std::vector<int> ran;
  for (int i = 0; i < 3; ++i) {
    asio::post(ioc, [&ran, &ioc, i] {
      ran.push_back(i);
      // Work queued by a handler runs in the same call.
      asio::post(ioc, [&ran, i] { ran.push_back(10 + i); });
    });
  }
  RunIoContext(ioc, GetParam());
  EXPECT_EQ(ran, (std::vector<int>{0, 1, 2, 10, 11, 12}));
}

TEST_P(IoLoopTest, WakesForWorkFromAnotherThreadAndReturnsWhenStopped) {
  asio::io_context ioc(1);
  auto guard = asio::make_work_guard(ioc);  // never out of work: only stop() ends the loop
  std::atomic<int> ran{0};
  std::thread poster([&] {
    // The first arrives while the loop may still poll, the last long after it went to sleep.
    for (auto delay : {0ms, 1ms, 50ms}) {
      std::this_thread::sleep_for(delay);
      asio::post(ioc, [&ran] { ++ran; });
    }
    std::this_thread::sleep_for(50ms);
    asio::post(ioc, [&ioc] { ioc.stop(); });
  });
  RunIoContext(ioc, GetParam());
  poster.join();
  EXPECT_EQ(ran.load(), 3);
  EXPECT_TRUE(ioc.stopped());
}

TEST_P(IoLoopTest, ServesSeveralThreadsAtOnce) {
  asio::io_context ioc(4);
  auto guard = asio::make_work_guard(ioc);
  std::atomic<int> ran{0};
  std::thread poster([&] {
    for (int i = 0; i < 1000; ++i) asio::post(ioc, [&ran] { ++ran; });
    while (ran.load() < 1000) std::this_thread::sleep_for(1ms);
    ioc.stop();
  });
  RunIoThreads(ioc, 4, GetParam());  // returns once all four threads have returned
  poster.join();
  EXPECT_EQ(ran.load(), 1000);
}

INSTANTIATE_TEST_SUITE_P(BusyPoll, IoLoopTest, ::testing::Values(0us, 100us, 20000us),
                         [](const auto& info) {
                           return std::to_string(info.param.count()) + "us";
                         });

// The thread's CPU time between a handler and a timer that fires a second later tells whether
// it polled (the window costs CPU) and whether it then slept (an endless poll would cost most of
// the second).
std::chrono::microseconds CpuWhileIdleAfterWork(std::chrono::microseconds busy_poll) {
  asio::io_context ioc(1);
  std::chrono::microseconds at_work{}, at_timer{};
  asio::steady_timer timer(ioc, 1s);
  timer.async_wait([&](boost::system::error_code) { at_timer = ThreadCpuTime(); });
  asio::post(ioc, [&] { at_work = ThreadCpuTime(); });
  RunIoContext(ioc, busy_poll);
  return at_timer - at_work;
}

TEST(IoLoopCpuTest, PollsForTheWindowAfterWorkThenSleeps) {
  const auto polling = CpuWhileIdleAfterWork(50ms);
  EXPECT_GE(polling, 5ms) << "no CPU spent polling in a 50 ms window";
  EXPECT_LT(polling, 250ms) << "still polling long after the 50 ms window";
  EXPECT_LT(CpuWhileIdleAfterWork(0us), 5ms) << "busy poll off, yet the thread did not sleep";
}

}  // namespace
}  // namespace segma::http
