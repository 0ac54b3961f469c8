// The HTTP server on the wire: framing of requests and responses (pipelining, bodies in pieces,
// responses larger than the socket buffer, chunked streams) and its protection against slow and
// idle clients (deadlines enforced by its sweep).
#include "http/server.h"

#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace segma::http {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A blocking TCP client (plain sockets: what a misbehaving client does is easy to say).
class RawClient {
 public:
  explicit RawClient(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    timeval tv{10, 0};  // no test waits longer for an answer
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~RawClient() { ::close(fd_); }
  bool connected() const { return connected_; }
  void Send(std::string_view s) {
    ASSERT_EQ(::send(fd_, s.data(), s.size(), 0), ssize_t(s.size()));
  }
  // Everything until the server closes (or 10 s pass: then `closed` is false).
  std::string ReadUntilClosed(bool& closed) {
    std::string out;
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n > 0) {
        out.append(buf, static_cast<size_t>(n));
        continue;
      }
      closed = n == 0 || errno == ECONNRESET;
      return out;
    }
  }
  // One response of a kept-alive connection (reads until the body of a Content-Length answer).
  std::string ReadResponse() {
    std::string out;
    char buf[4096];
    while (true) {
      const size_t end = out.find("\r\n\r\n");
      if (end != std::string::npos) {
        const size_t cl = out.find("Content-Length: ");
        const size_t len = cl == std::string::npos ? 0 : std::stoul(out.substr(cl + 16));
        if (out.size() >= end + 4 + len) return out;
      }
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return out;
      out.append(buf, static_cast<size_t>(n));
    }
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

// 8 MiB that are easy to check: far more than a loopback socket's send buffer.
std::string BigBody() {
  std::string body(8 << 20, '\0');
  for (size_t i = 0; i < body.size(); ++i)
    body[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
  return body;
}

// The chunks /stream sends: sizes from 1 to 300 bytes (hex sizes of one to three digits).
std::vector<std::string> StreamChunks() {
  std::vector<std::string> chunks;
  for (size_t i = 1; i <= 300; i += 13)
    chunks.push_back(std::string(i, static_cast<char>('A' + i % 26)));
  return chunks;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    router_.Add(bhttp::verb::get, "/hello", [](RequestContext&) -> asio::awaitable<Response> {
      co_return Response::Text(bhttp::status::ok, "hi", "text/plain");
    });
    router_.Add(bhttp::verb::post, "/echo", [](RequestContext& ctx) -> asio::awaitable<Response> {
      co_return Response::Text(bhttp::status::ok, ctx.req.body(), "text/plain");
    });
    router_.Add(bhttp::verb::get, "/big", [](RequestContext&) -> asio::awaitable<Response> {
      co_return Response::Text(bhttp::status::ok, BigBody(), "application/octet-stream");
    });
    router_.Add(bhttp::verb::get, "/stream", [](RequestContext&) -> asio::awaitable<Response> {
      co_return Response::Stream("text/event-stream",
                                 [](ResponseStream& out) -> asio::awaitable<void> {
                                   for (const std::string& c : StreamChunks()) {
                                     if (!co_await out.Write(c)) co_return;
                                   }
                                 });
    });
    ServerOptions options;
    options.name = "timeout-test";
    options.read_timeout = 1s;
    options.idle_timeout = 2s;
    options.access_log = false;
    server_ = std::make_unique<HttpServer>(ioc_, router_, registry_, options);
    auto port = server_->Listen("127.0.0.1", 0);
    ASSERT_TRUE(port.ok()) << port.status().ToString();
    port_ = *port;
    thread_ = std::thread([this] { ioc_.run(); });
  }
  void TearDown() override {
    server_->Stop();
    server_->CloseAll();
    ioc_.stop();
    thread_.join();
    server_.reset();
  }

  asio::io_context ioc_{1};
  Router router_;
  metrics::Registry registry_;
  std::unique_ptr<HttpServer> server_;
  uint16_t port_ = 0;
  std::thread thread_;
};

class HttpServerTimeoutTest : public HttpServerTest {};

// Decodes a chunked body ("1a\r\n<26 bytes>\r\n...0\r\n\r\n") into its chunks; fails on bad
// framing.
std::vector<std::string> Dechunk(std::string_view body) {
  std::vector<std::string> chunks;
  for (;;) {
    const size_t eol = body.find("\r\n");
    if (eol == std::string_view::npos) {
      ADD_FAILURE() << "unterminated chunk size line";
      return chunks;
    }
    const size_t n = std::stoul(std::string(body.substr(0, eol)), nullptr, 16);
    body.remove_prefix(eol + 2);
    if (n == 0) {
      EXPECT_EQ(body, "\r\n");
      return chunks;
    }
    if (body.size() < n + 2 || body.substr(n, 2) != "\r\n") {
      ADD_FAILURE() << "chunk of " << n << " bytes is not followed by CRLF";
      return chunks;
    }
    chunks.emplace_back(body.substr(0, n));
    body.remove_prefix(n + 2);
  }
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  // Two requests in one packet: the second is already buffered when the first is answered.
  c.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
      "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  bool closed = false;
  const std::string got = c.ReadUntilClosed(closed);
  EXPECT_TRUE(closed);
  const size_t second = got.find("HTTP/1.1 200", 1);
  ASSERT_NE(second, std::string::npos) << got;
  EXPECT_EQ(got.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << got;
  EXPECT_NE(got.substr(0, second).find("Content-Length: 3\r\n"), std::string::npos) << got;
  EXPECT_TRUE(got.substr(0, second).ends_with("\r\n\r\none")) << got;
  EXPECT_TRUE(got.ends_with("\r\n\r\nhi")) << got;
}

TEST_F(HttpServerTest, BodyArrivingInPiecesIsReadWhole) {
  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Len");
  std::this_thread::sleep_for(50ms);
  c.Send("gth: 11\r\n\r\nhello");
  std::this_thread::sleep_for(50ms);
  c.Send(" world");
  const std::string got = c.ReadResponse();
  EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got;
  EXPECT_TRUE(got.ends_with("\r\n\r\nhello world")) << got;
}

TEST_F(HttpServerTest, ResponseLargerThanTheSocketBufferReachesASlowReaderWhole) {
  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  c.Send("GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  // Not reading for a while fills the socket buffers: the rest must follow once we read.
  std::this_thread::sleep_for(300ms);
  bool closed = false;
  const std::string got = c.ReadUntilClosed(closed);
  EXPECT_TRUE(closed);
  const size_t body = got.find("\r\n\r\n");
  ASSERT_NE(body, std::string::npos);
  EXPECT_NE(got.find("Content-Length: 8388608\r\n"), std::string::npos);
  EXPECT_TRUE(got.substr(body + 4) == BigBody()) << "body of " << got.size() - body - 4 << " bytes";
}

TEST_F(HttpServerTest, StreamedChunksArriveFramedAndInOrder) {
  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  c.Send("GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  bool closed = false;
  const std::string got = c.ReadUntilClosed(closed);
  EXPECT_TRUE(closed);
  const size_t body = got.find("\r\n\r\n");
  ASSERT_NE(body, std::string::npos) << got;
  const std::string head = got.substr(0, body);
  EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("Transfer-Encoding: chunked"), std::string::npos) << head;
  EXPECT_NE(head.find("Content-Type: text/event-stream"), std::string::npos) << head;
  EXPECT_EQ(Dechunk(std::string_view(got).substr(body + 4)), StreamChunks());
}

TEST_F(HttpServerTimeoutTest, SlowClientIsCutOffWhileOthersAreServed) {
  // A slow-loris client: half a request line, then nothing.
  RawClient slow(port_);
  ASSERT_TRUE(slow.connected());
  slow.Send("GET /hello HTTP/1.1\r\nHost: x\r\n");
  const auto start = Clock::now();
  // Meanwhile a normal client is answered at once.
  {
    RawClient ok(port_);
    ok.Send("GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    bool closed = false;
    const std::string res = ok.ReadUntilClosed(closed);
    EXPECT_TRUE(closed);
    EXPECT_EQ(res.rfind("HTTP/1.1 200", 0), 0u) << res;
    EXPECT_NE(res.find("\r\n\r\nhi"), std::string::npos) << res;
  }
  bool closed = false;
  const std::string got = slow.ReadUntilClosed(closed);
  const auto waited = Clock::now() - start;
  EXPECT_TRUE(closed) << "the slow client was not disconnected";
  EXPECT_TRUE(got.empty()) << got;
  EXPECT_GE(waited, 900ms);  // the read timeout (1 s), enforced by a sweep every 250 ms
  EXPECT_LT(waited, 3s);
}

TEST_F(HttpServerTimeoutTest, IdleKeepAliveConnectionIsClosedAfterIdleTimeout) {
  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  c.Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string first = c.ReadResponse();
  EXPECT_EQ(first.rfind("HTTP/1.1 200", 0), 0u) << first;
  // Within the idle timeout the connection is reused.
  std::this_thread::sleep_for(500ms);
  c.Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string second = c.ReadResponse();
  EXPECT_EQ(second.rfind("HTTP/1.1 200", 0), 0u) << second;
  const auto start = Clock::now();
  bool closed = false;
  c.ReadUntilClosed(closed);
  const auto waited = Clock::now() - start;
  EXPECT_TRUE(closed);
  EXPECT_GE(waited, 1900ms);  // idle timeout 2 s
  EXPECT_LT(waited, 4s);
}

TEST_F(HttpServerTimeoutTest, RunReturnsOnItsOwnOnceStoppedAndIdle) {
  // After Stop() with no connection left, the timeout sweep ends and the io_context runs out of
  // work (a process can exit without io_context::stop()).
  asio::io_context ioc{1};
  Router router;
  metrics::Registry registry;
  HttpServer server(ioc, router, registry, ServerOptions{});
  ASSERT_TRUE(server.Listen("127.0.0.1", 0).ok());
  std::thread t([&] { ioc.run(); });
  std::this_thread::sleep_for(300ms);
  server.Stop();
  const auto start = Clock::now();
  t.join();
  EXPECT_LT(Clock::now() - start, 2s);
}

}  // namespace
}  // namespace segma::http
