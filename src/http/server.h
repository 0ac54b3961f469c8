#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include "common/cidr.h"
#include "http/router.h"
#include "metrics/registry.h"

namespace spdlog {
class logger;
}  // namespace spdlog

namespace prometheus {
class Counter;
class Gauge;
template <typename T>
class Family;
class Histogram;
}  // namespace prometheus

namespace segma::http {

struct ServerOptions {
  std::string name = "server";               // logger and metrics label
  size_t max_body_bytes = 16 * 1024 * 1024;  // larger bodies get 413
  size_t max_header_bytes = 16 * 1024;       // larger headers get 431
  std::chrono::seconds read_timeout{30};     // a whole request, from its first byte
  std::chrono::seconds idle_timeout{75};     // between keep-alive requests
  std::chrono::seconds write_timeout{30};    // one write (or chunk) to a stalled client
  bool access_log = true;
  // Each connection's coroutine on its own strand: required when the io_context runs on several
  // threads. With one thread, false saves a strand dispatch per completion.
  bool strand_per_connection = true;
  // Peers whose X-Forwarded-For / Forwarded / X-Forwarded-Proto are believed (--trusted-proxies;
  // http/forwarded.h). Empty: none, the peer is the client.
  CidrSet trusted_proxies;
};

// HTTP/1.1 server on Boost.Beast with C++20 coroutines: one coroutine per connection on its own
// strand, keep-alive, chunked streaming responses, request ids, access log, size limits and
// timeouts, per-route metrics. Handlers come from a Router and never touch the socket.
//
// Thread-safety: Listen/Stop may be called from any thread; the io_context may run on several
// threads. The Router and Registry must outlive the server.
class HttpServer {
 public:
  HttpServer(asio::io_context& ioc, const Router& router, metrics::Registry& registry,
             ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts accepting. Port 0 picks a free port. Returns the bound port, or
  // kUnavailable ("address already in use", ...).
  Result<uint16_t> Listen(const std::string& address, uint16_t port);

  // Stops accepting; streaming responses see stopping() and should end. Connections that are
  // still open after CloseAll() are closed.
  void Stop();
  void CloseAll();
  bool stopping() const { return stopping_.load(); }

 private:
  struct Connection;
  class ChunkWriter;
  asio::awaitable<void> AcceptLoop(std::shared_ptr<asio::ip::tcp::acceptor> acceptor);
  asio::awaitable<void> Serve(beast::tcp_stream stream);
  asio::awaitable<Response> Dispatch(Request& req, RequestContext& ctx);
  asio::awaitable<bool> WriteStreamed(Connection& conn, beast::tcp_stream& stream, Response& res);
  // Closes the connections whose deadline has passed, then waits kSweepEvery and runs again.
  void ScheduleSweep();
  void Record(const RequestContext& ctx, unsigned status, std::chrono::steady_clock::duration d);

  // The metric children of one route, looked up once: prometheus-cpp's Family::Add builds and
  // hashes a label map under a lock on every call.
  struct RouteMetrics {
    prometheus::Histogram* duration = nullptr;
    struct CounterOf {
      bhttp::verb method;
      unsigned status;
      prometheus::Counter* counter;
    };
    std::vector<CounterOf> requests;
  };
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  asio::io_context& ioc_;
  const Router& router_;
  const ServerOptions options_;
  std::atomic<bool> stopping_{false};

  // Timeouts are deadlines that this timer's sweep enforces (a few times a second), not a timer
  // per socket operation: Beast's per-operation timers cost two extra completions per read or
  // write on the request path.
  asio::steady_timer sweep_timer_;
  bool sweeping_ = false;  // guarded by mu_

  std::mutex mu_;
  std::vector<std::shared_ptr<asio::ip::tcp::acceptor>> acceptors_;
  std::set<std::shared_ptr<Connection>> connections_;

  std::mutex metrics_mu_;
  std::unordered_map<std::string, RouteMetrics, StringHash, std::equal_to<>> route_metrics_;
  std::shared_ptr<spdlog::logger> log_;

  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* durations_;
  prometheus::Gauge* open_connections_;
};

// Runs `fn` on `pool` and resumes the caller on its own executor with the result. For blocking
// work (SQLite, libpq, NVML, file I/O) that must not stall an I/O thread.
template <typename Pool, typename F>
asio::awaitable<std::invoke_result_t<F&>> RunBlocking(Pool& pool, F fn);

}  // namespace segma::http

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace segma::http {

template <typename Pool, typename F>
asio::awaitable<std::invoke_result_t<F&>> RunBlocking(Pool& pool, F fn) {
  co_return co_await asio::co_spawn(
      pool,
      [fn = std::move(fn)]() mutable -> asio::awaitable<std::invoke_result_t<F&>> {
        co_return fn();
      },
      asio::use_awaitable);
}

}  // namespace segma::http
