#include "http/server.h"

#include <array>
#include <limits>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include "common/crypto.h"
#include "common/logging.h"
#include "http/forwarded.h"
#include "http/write_all.h"

namespace segma::http {

namespace {

using tcp = asio::ip::tcp;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

bool IsSafeRequestId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return false;
    }
  }
  return true;
}

ErrorStyle StyleForPath(std::string_view path) {
  return path.substr(0, 4) == "/v1/" ? ErrorStyle::kOpenAi : ErrorStyle::kSegma;
}

// Probes and scrapes are frequent and uninteresting: they are logged at debug level only.
bool IsQuietPath(std::string_view path) {
  return path == "/healthz" || path == "/readyz" || path == "/metrics" ||
         path == "/v2/worker-heartbeat" || path == "/v2/metrics/targets";
}

using SteadyClock = std::chrono::steady_clock;
constexpr auto kSweepEvery = std::chrono::milliseconds(250);

// "HTTP/1.1 200 OK\r\n" and the fields, as Beast's serializer writes them.
void AppendHead(const bhttp::response_header<>& head, std::string& out) {
  out.append("HTTP/");
  out.push_back(static_cast<char>('0' + head.version() / 10));
  out.push_back('.');
  out.push_back(static_cast<char>('0' + head.version() % 10));
  out.push_back(' ');
  out.append(std::to_string(head.result_int()));
  out.push_back(' ');
  const auto reason = head.reason();
  out.append(reason.data(), reason.size());
  out.append("\r\n");
  for (const auto& field : head) {
    out.append(field.name_string().data(), field.name_string().size());
    out.append(": ");
    out.append(field.value().data(), field.value().size());
    out.append("\r\n");
  }
  out.append("\r\n");
}

// The size line of a chunk of `n` bytes: "1a2b\r\n".
std::string_view ChunkSizeLine(size_t n, char (&buf)[24]) {
  static constexpr char kHex[] = "0123456789abcdef";
  char* end = buf + sizeof(buf);
  char* p = end;
  *--p = '\n';
  *--p = '\r';
  do {
    *--p = kHex[n & 0xf];
    n >>= 4;
  } while (n != 0);
  return std::string_view(p, static_cast<size_t>(end - p));
}

// Reads one request into `parser`, parsing what `buffer` already holds before reading more: a
// request (or its body) that is already buffered completes without a trip through the scheduler,
// which Beast's async_read_header/async_read would take. Calls on_first_byte() once the request's
// first byte is there. Errors as Beast's: end_of_stream when the peer closed before a request.
template <typename OnFirstByte>
asio::awaitable<boost::system::error_code> ReadRequest(
    beast::tcp_stream& stream, beast::flat_buffer& buffer,
    bhttp::request_parser<bhttp::string_body>& parser, OnFirstByte on_first_byte) {
  boost::system::error_code ec;
  bool started = false;
  for (;;) {
    while (buffer.size() > 0 && !parser.is_done()) {
      if (!std::exchange(started, true)) on_first_byte();
      const size_t used = parser.put(buffer.data(), ec);
      buffer.consume(used);
      if (ec == bhttp::error::need_more) {
        ec = {};
        break;
      }
      if (ec) co_return ec;
      if (used == 0) break;
    }
    if (parser.is_done()) co_return ec;
    const size_t size = beast::read_size(buffer, 65536);
    if (size == 0) co_return bhttp::error::buffer_overflow;
    auto [rec, n] = co_await stream.socket().async_read_some(buffer.prepare(size), kUseTuple);
    buffer.commit(n);
    if (rec == asio::error::eof) {
      if (!parser.got_some()) co_return bhttp::error::end_of_stream;
      parser.put_eof(ec);
      if (!ec && !parser.is_done()) ec = bhttp::error::partial_message;
      co_return ec;
    }
    if (rec) co_return rec;
  }
}

constexpr std::string_view kCrLf = "\r\n";
constexpr std::string_view kLastChunk = "0\r\n\r\n";

}  // namespace

// Lets Stop()/CloseAll() and the timeout sweep reach a connection's socket safely: `stream` is
// read and cleared only on the connection's executor.
struct HttpServer::Connection {
  beast::tcp_stream* stream = nullptr;
  asio::any_io_executor executor;
  // The current operation must end by then (steady clock ticks); max: no deadline.
  std::atomic<SteadyClock::rep> deadline{std::numeric_limits<SteadyClock::rep>::max()};
  std::atomic<bool> timed_out{false};

  void Arm(std::chrono::steady_clock::duration d) {
    deadline.store((SteadyClock::now() + d).time_since_epoch().count(), std::memory_order_relaxed);
  }
  void Disarm() {
    deadline.store(std::numeric_limits<SteadyClock::rep>::max(), std::memory_order_relaxed);
  }
};

// Writes a streamed response's chunks, each in one write.
class HttpServer::ChunkWriter final : public ResponseStream {
 public:
  ChunkWriter(Connection& conn, beast::tcp_stream& stream, const HttpServer& server,
              std::chrono::seconds timeout)
      : conn_(conn), stream_(stream), server_(server), timeout_(timeout) {}

  asio::awaitable<bool> Write(std::string_view data) override {
    if (failed_) co_return false;
    if (data.empty()) co_return true;  // an empty chunk would end the body
    char size_buf[24];
    const std::string_view size_line = ChunkSizeLine(data.size(), size_buf);
    const std::array<asio::const_buffer, 3> buffers{asio::buffer(size_line), asio::buffer(data),
                                                    asio::buffer(kCrLf)};
    co_return co_await Send(buffers);
  }

  // The response head; the last chunk.
  asio::awaitable<bool> Start(std::string_view head) {
    co_return co_await Send(asio::buffer(head));
  }
  asio::awaitable<bool> Finish() {
    if (failed_) co_return false;
    co_return co_await Send(asio::buffer(kLastChunk));
  }

  bool stopping() const override { return server_.stopping(); }
  bool failed() const { return failed_; }

 private:
  template <typename Buffers>
  asio::awaitable<bool> Send(const Buffers& buffers) {
    conn_.Arm(timeout_);
    const auto ec = co_await WriteAll(stream_.socket(), buffers);
    conn_.Disarm();
    if (ec) failed_ = true;
    co_return !failed_;
  }

  Connection& conn_;
  beast::tcp_stream& stream_;
  const HttpServer& server_;
  const std::chrono::seconds timeout_;
  bool failed_ = false;
};

HttpServer::HttpServer(asio::io_context& ioc, const Router& router, metrics::Registry& registry,
                       ServerOptions options)
    : ioc_(ioc),
      router_(router),
      options_(std::move(options)),
      sweep_timer_(ioc),
      log_(Logger(options_.name)) {
  requests_ = &prometheus::BuildCounter()
                   .Name("segma_http_requests_total")
                   .Help("HTTP requests served, by route pattern and status code")
                   .Register(registry.prometheus());
  durations_ = &prometheus::BuildHistogram()
                    .Name("segma_http_request_duration_seconds")
                    .Help("Time to produce the response head, by route pattern")
                    .Register(registry.prometheus());
  open_connections_ = &prometheus::BuildGauge()
                           .Name("segma_http_open_connections")
                           .Help("Open client connections")
                           .Register(registry.prometheus())
                           .Add({{"server", options_.name}});
}

HttpServer::~HttpServer() { Stop(); }

Result<uint16_t> HttpServer::Listen(const std::string& address, uint16_t port) {
  boost::system::error_code ec;
  auto ip = asio::ip::make_address(address, ec);
  if (ec) return InvalidArgumentError("invalid listen address '" + address + "'");
  auto acceptor = std::make_shared<tcp::acceptor>(asio::make_strand(ioc_));
  tcp::endpoint ep(ip, port);
  acceptor->open(ep.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(ep, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return UnavailableError("cannot listen on " + address + ":" + std::to_string(port) + ": " +
                            ec.message());
  }
  const uint16_t bound = acceptor->local_endpoint().port();
  bool start_sweep = false;
  {
    std::lock_guard lock(mu_);
    acceptors_.push_back(acceptor);
    start_sweep = !std::exchange(sweeping_, true);
  }
  if (start_sweep) asio::post(ioc_, [this] { ScheduleSweep(); });
  asio::co_spawn(acceptor->get_executor(), AcceptLoop(acceptor), [this](std::exception_ptr e) {
    if (e) log_->error("accept loop ended by an exception");
  });
  return bound;
}

void HttpServer::Stop() {
  stopping_ = true;
  std::vector<std::shared_ptr<tcp::acceptor>> acceptors;
  {
    std::lock_guard lock(mu_);
    acceptors.swap(acceptors_);
  }
  // The sweep keeps enforcing timeouts on the connections that are still open; CloseAll() and
  // the destructor end it.

  for (auto& a : acceptors) {
    asio::post(a->get_executor(), [a] {
      boost::system::error_code ignored;
      a->close(ignored);
    });
  }
}

void HttpServer::CloseAll() {
  std::set<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard lock(mu_);
    conns = connections_;
  }
  for (const auto& c : conns) {
    asio::post(c->executor, [c] {
      if (c->stream != nullptr) {
        boost::system::error_code ignored;
        c->stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
        c->stream->close();
      }
    });
  }
}

void HttpServer::ScheduleSweep() {
  sweep_timer_.expires_after(kSweepEvery);
  sweep_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;  // cancelled: the server is going away
    const auto now = SteadyClock::now().time_since_epoch().count();
    std::lock_guard lock(mu_);
    if (stopping_ && connections_.empty()) {
      sweeping_ = false;  // lets the io_context's run() return
      return;
    }
    for (const auto& c : connections_) {
      if (c->deadline.load(std::memory_order_relaxed) > now || c->timed_out.exchange(true)) {
        continue;
      }
      asio::post(c->executor, [c] {
        if (c->stream == nullptr) return;
        boost::system::error_code ignored;
        c->stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
        c->stream->close();
      });
    }
    ScheduleSweep();
  });
}

asio::awaitable<void> HttpServer::AcceptLoop(std::shared_ptr<tcp::acceptor> acceptor) {
  for (;;) {
    const asio::any_io_executor executor_of_connection =
        options_.strand_per_connection ? asio::any_io_executor(asio::make_strand(ioc_))
                                       : asio::any_io_executor(ioc_.get_executor());
    auto [ec, socket] = co_await acceptor->async_accept(executor_of_connection, kUseTuple);
    if (ec) {
      if (!acceptor->is_open() || stopping_) co_return;
      // EMFILE and friends: back off briefly instead of spinning.
      log_->warn("accept failed: {}", ec.message());
      asio::steady_timer t(acceptor->get_executor(), std::chrono::milliseconds(50));
      co_await t.async_wait(kUseTuple);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    auto executor = socket.get_executor();
    asio::co_spawn(executor, Serve(beast::tcp_stream(std::move(socket))),
                   [this](std::exception_ptr e) {
                     if (!e) return;
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       log_->error("connection dropped: {}", ex.what());
                     }
                   });
  }
}

asio::awaitable<void> HttpServer::Serve(beast::tcp_stream stream) {
  auto conn = std::make_shared<Connection>();
  conn->stream = &stream;
  conn->executor = stream.get_executor();
  {
    std::lock_guard lock(mu_);
    connections_.insert(conn);
  }
  open_connections_->Increment();
  std::string remote;
  {
    boost::system::error_code ec;
    auto ep = stream.socket().remote_endpoint(ec);
    if (!ec) remote = ep.address().to_string();
  }

  // Writes are tried synchronously first (WriteAll); Asio's own operations are unaffected.
  {
    boost::system::error_code ec;
    stream.socket().non_blocking(true, ec);
  }
  beast::flat_buffer buffer;
  // Room for a typical request in one read (Beast would start with 512 bytes: a chat request
  // then takes two reads and a scheduler round); larger requests grow the buffer.
  buffer.reserve(4096);
  std::string head;  // a response's status line and fields, reused across requests
  bool first = true;
  while (!stopping_) {
    // Waiting for the next request on a kept-alive connection uses the idle timeout; the request
    // itself must then arrive within the read timeout (a slow-loris client is cut off).
    conn->Arm(first ? options_.read_timeout : options_.idle_timeout);
    first = false;
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(options_.max_header_bytes));
    parser.body_limit(options_.max_body_bytes);
    Connection* c = conn.get();
    const auto read_timeout = options_.read_timeout;
    auto hec =
        co_await ReadRequest(stream, buffer, parser, [c, read_timeout] { c->Arm(read_timeout); });
    conn->Disarm();
    const auto start = std::chrono::steady_clock::now();
    if (hec) {
      if (conn->timed_out || hec == bhttp::error::end_of_stream || hec == beast::error::timeout ||
          hec == asio::error::connection_reset || hec == asio::error::operation_aborted ||
          hec == asio::error::eof) {
        break;
      }
      Status status;
      if (hec == bhttp::error::body_limit) {
        status = ResourceExhaustedError("request body exceeds " +
                                        std::to_string(options_.max_body_bytes) + " bytes");
      } else if (hec == bhttp::error::header_limit) {
        status = InvalidArgumentError("request headers exceed " +
                                      std::to_string(options_.max_header_bytes) + " bytes");
      } else {
        status = InvalidArgumentError("malformed HTTP request: " + hec.message());
      }
      Response res = Response::Error(status);
      if (hec == bhttp::error::body_limit) res.msg.result(bhttp::status::payload_too_large);
      if (hec == bhttp::error::header_limit) {
        res.msg.result(bhttp::status::request_header_fields_too_large);
      }
      res.msg.keep_alive(false);
      conn->Arm(options_.write_timeout);
      co_await bhttp::async_write(stream, res.msg, kUseTuple);
      // Lingering close: closing with unread request bytes queued would send a reset that can
      // destroy our answer before the client reads it. Stop sending, then drain for a moment.
      boost::system::error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      conn->Arm(std::chrono::seconds(2));
      static thread_local char sink[64 * 1024];
      size_t drained = 0;
      while (drained < 64 * 1024 * 1024) {
        auto [dec, dn] = co_await stream.async_read_some(asio::buffer(sink), kUseTuple);
        if (dec) break;
        drained += dn;
      }
      break;
    }

    Request req = parser.release();
    RequestContext ctx{req, {}, remote, {}, {}, {}, {}};
    if (!options_.trusted_proxies.empty()) {
      ClientInfo client = ResolveClient(req, remote, options_.trusted_proxies);
      ctx.remote_address = std::move(client.address);
      ctx.forwarded_proto = client.proto.value_or("");
    }
    Response res = co_await Dispatch(req, ctx);
    res.msg.set("x-request-id", ctx.request_id);
    bool keep_alive = req.keep_alive() && !stopping_;
    res.msg.keep_alive(keep_alive);
    Record(ctx, res.msg.result_int(), std::chrono::steady_clock::now() - start);

    if (res.stream) {
      keep_alive = co_await WriteStreamed(*conn, stream, res) && keep_alive;
    } else {
      conn->Arm(options_.write_timeout);
      boost::system::error_code wec;
      if (res.msg.chunked()) {
        auto [ec, n] = co_await bhttp::async_write(stream, res.msg, kUseTuple);
        wec = ec;
      } else {
        head.clear();
        AppendHead(res.msg.base(), head);
        const std::array<asio::const_buffer, 2> buffers{asio::buffer(head),
                                                        asio::buffer(res.msg.body())};
        wec = co_await WriteAll(stream.socket(), buffers);
      }
      conn->Disarm();
      if (wec) keep_alive = false;
    }
    if (!keep_alive) break;
  }

  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  conn->stream = nullptr;
  open_connections_->Decrement();
  std::lock_guard lock(mu_);
  connections_.erase(conn);
}

asio::awaitable<bool> HttpServer::WriteStreamed(Connection& conn, beast::tcp_stream& stream,
                                                Response& res) {
  res.msg.chunked(true);
  std::string head;
  AppendHead(res.msg.base(), head);
  ChunkWriter writer(conn, stream, *this, options_.write_timeout);
  if (!co_await writer.Start(head)) co_return false;
  try {
    co_await res.stream(writer);
  } catch (const std::exception& e) {
    log_->error("stream producer failed: {}", e.what());
    co_return false;  // the body is cut short: the client must not reuse the connection
  }
  if (writer.failed()) co_return false;
  co_return co_await writer.Finish();
}

asio::awaitable<Response> HttpServer::Dispatch(Request& req, RequestContext& ctx) {
  auto incoming_id = req.find("x-request-id");
  ctx.request_id = incoming_id != req.end() && IsSafeRequestId(incoming_id->value())
                       ? std::string(incoming_id->value())
                       : CorrelationId();

  auto target = boost::urls::parse_origin_form(req.target());
  if (!target) {
    ctx.route = "invalid";
    co_return Response::Error(InvalidArgumentError("malformed request target"));
  }
  ctx.path = std::string_view(target->encoded_path());
  if (ctx.path.find("%") != std::string_view::npos ||
      ctx.path.find("/../") != std::string_view::npos ||
      ctx.path.find("/./") != std::string_view::npos || ctx.path.ends_with("/..")) {
    // Our routes are plain ASCII segments; encoded or dot segments are never legitimate.
    ctx.route = "invalid";
    co_return Response::Error(InvalidArgumentError("invalid characters in path"),
                              StyleForPath(ctx.path));
  }
  for (auto param : target->params()) ctx.query[param.key] = param.value;

  const Router::Route* route = nullptr;
  switch (router_.Match(req.method(), ctx.path, ctx, route)) {
    case Router::MatchResult::kNotFound:
      ctx.route = "unmatched";
      co_return Response::Error(NotFoundError("no route for " + std::string(ctx.path)),
                                StyleForPath(ctx.path));
    case Router::MatchResult::kMethodNotAllowed: {
      ctx.route = "unmatched";
      Response r =
          Response::Error(InvalidArgumentError(std::string(req.method_string()) +
                                               " is not allowed on " + std::string(ctx.path)),
                          StyleForPath(ctx.path));
      r.msg.result(bhttp::status::method_not_allowed);
      co_return r;
    }
    case Router::MatchResult::kFound:
      break;
  }
  try {
    co_return co_await route->handler(ctx);
  } catch (const std::exception& e) {
    log_->error("[req={}] handler for {} threw: {}", ctx.request_id, ctx.route, e.what());
  }
  co_return Response::Error(
      InternalError("internal error; see the server log for request " + ctx.request_id),
      StyleForPath(ctx.path));
}

void HttpServer::Record(const RequestContext& ctx, unsigned status,
                        std::chrono::steady_clock::duration d) {
  const double secs = std::chrono::duration<double>(d).count();
  const bhttp::verb method = ctx.req.method();
  prometheus::Counter* counter = nullptr;
  prometheus::Histogram* duration = nullptr;
  {
    std::lock_guard lock(metrics_mu_);
    auto it = route_metrics_.find(std::string_view(ctx.route));
    if (it == route_metrics_.end()) {
      it = route_metrics_.emplace(ctx.route, RouteMetrics{}).first;
      it->second.duration = &durations_->Add({{"server", options_.name}, {"route", ctx.route}},
                                             metrics::LatencyBuckets());
    }
    RouteMetrics& m = it->second;
    duration = m.duration;
    for (const auto& c : m.requests) {
      if (c.method == method && c.status == status) counter = c.counter;
    }
    if (counter == nullptr) {
      counter = &requests_->Add({{"server", options_.name},
                                 {"method", std::string(ctx.req.method_string())},
                                 {"route", ctx.route},
                                 {"code", std::to_string(status)}});
      m.requests.push_back({method, status, counter});
    }
  }
  counter->Increment();
  duration->Observe(secs);
  if (!options_.access_log) return;
  // Successful inference requests are logged at debug level too: each has its usage record
  // (request id, key, model, status, duration, tokens), and a log line per request would cost a
  // write on the gateway's hot path.
  const bool quiet = IsQuietPath(ctx.path) || ctx.path.starts_with("/v1/");
  const auto level = quiet && status < 400 ? spdlog::level::debug : spdlog::level::info;
  if (!log_->should_log(level)) return;
  log_->log(level, "[req={}] {} {} {} {:.1f}ms {}", ctx.request_id, ctx.req.method_string(),
            ctx.path, status, secs * 1000, ctx.remote_address);
}

}  // namespace segma::http
