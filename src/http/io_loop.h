#pragma once

#include <chrono>

#include <boost/asio/io_context.hpp>

namespace segma::http {

// Runs `ioc` on the calling thread until it is stopped or runs out of work, like `ioc.run()`.
// After each burst of work the thread keeps polling the reactor without blocking for
// `busy_poll`, and only then sleeps in epoll_wait. A request or upstream reply that arrives
// within that window is picked up at once instead of by waking a sleeping thread, which on a
// virtual machine costs tens of microseconds per wake-up (ADR 0018). An idle process still
// sleeps: the window restarts only when a handler has run. Zero: `run()`. Polling takes CPU from
// whatever shares the core, so it is meant for threads with cores of their own.
void RunIoContext(boost::asio::io_context& ioc, std::chrono::microseconds busy_poll);

// RunIoContext on `threads` threads, the calling one included; returns when all have returned.
void RunIoThreads(boost::asio::io_context& ioc, int threads, std::chrono::microseconds busy_poll);

}  // namespace segma::http
