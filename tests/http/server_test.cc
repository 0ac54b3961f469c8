// The HTTP server's protection against slow and idle clients: deadlines enforced by its sweep.
#include "http/server.h"

#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

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

class HttpServerTimeoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    router_.Add(bhttp::verb::get, "/hello", [](RequestContext&) -> asio::awaitable<Response> {
      co_return Response::Text(bhttp::status::ok, "hi", "text/plain");
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
