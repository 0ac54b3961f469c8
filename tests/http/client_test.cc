// HttpClient against scripted upstreams (plain blocking sockets on threads, so that a server
// that stalls, never answers or closes early is easy to write): deadlines, the immediate-then-
// asynchronous write of large bodies, connection reuse and the request head it writes.
#include "http/client.h"

#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "fakes/fake_hub.h"

namespace segma::http {
namespace {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct RawRequest {
  std::string head;  // request line and fields
  std::string body;
};

// Reads one request (Content-Length bodies only); nullopt when the peer closed first.
std::optional<RawRequest> ReadRequest(int fd, std::string& pending) {
  char buf[64 * 1024];
  auto fill = [&] {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    pending.append(buf, static_cast<size_t>(n));
    return true;
  };
  size_t end;
  while ((end = pending.find("\r\n\r\n")) == std::string::npos) {
    if (!fill()) return std::nullopt;
  }
  RawRequest r;
  r.head = pending.substr(0, end + 2);
  size_t length = 0;
  if (const size_t cl = r.head.find("Content-Length: "); cl != std::string::npos) {
    length = std::stoul(r.head.substr(cl + 16));
  }
  while (pending.size() < end + 4 + length) {
    if (!fill()) return std::nullopt;
  }
  r.body = pending.substr(end + 4, length);
  pending.erase(0, end + 4 + length);
  return r;
}

void SendAll(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    s.remove_prefix(static_cast<size_t>(n));
  }
}

// Waits until the client closes the connection (or 10 s pass).
void WaitForClose(int fd) {
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[4096];
  while (::recv(fd, buf, sizeof(buf), 0) > 0) {
  }
}

// A loopback server whose every connection is handed to `serve` on a thread of its own.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::function<void(int fd)> serve) : serve_(std::move(serve)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(::listen(listen_fd_, 16), 0);
    socklen_t len = sizeof(a);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] {
      for (;;) {
        const int fd = ::accept(listen_fd_, nullptr, nullptr);
        if (fd < 0) return;
        ++accepted_;
        std::lock_guard lock(mu_);
        fds_.push_back(fd);
        threads_.emplace_back([this, fd] { serve_(fd); });
      }
    });
  }
  ~ScriptedServer() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    ::close(listen_fd_);
    std::lock_guard lock(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    for (auto& t : threads_) t.join();
    for (int fd : fds_) ::close(fd);
  }
  std::string Url(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
  }
  int accepted() const { return accepted_.load(); }

 private:
  std::function<void(int)> serve_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
};

// Answers every request of a keep-alive connection with `status` and `body`.
std::function<void(int)> Answering(std::string body, int status = 200) {
  return [body, status](int fd) {
    std::string pending;
    while (ReadRequest(fd, pending)) {
      SendAll(fd, "HTTP/1.1 " + std::to_string(status) +
                      " X\r\nContent-Type: text/plain\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\n\r\n" + body);
    }
  };
}

// Reads `s` until it fails: the bytes before, and how long the failing Next() waited.
asio::awaitable<Status> ReadUntilFailure(ClientStream* s, size_t* got, Clock::duration* waited) {
  for (;;) {
    const auto start = Clock::now();
    auto piece = co_await s->Next();
    *waited = Clock::now() - start;
    if (!piece.ok()) co_return piece.status();
    if (piece->empty()) co_return InternalError("the body ended");
    *got += piece->size();
  }
}

class HttpClientTest : public ::testing::Test {
 protected:
  // Runs `make()` on the test's io_context until it completes. run() returning at all also
  // checks that an idle client leaves the io_context free (its deadline sweep stops).
  template <typename T, typename F>
  T Run(F make) {
    std::optional<T> out;
    asio::co_spawn(ioc_, make(), [&](std::exception_ptr e, T r) {
      if (e) std::rethrow_exception(e);
      out = std::move(r);
    });
    ioc_.restart();
    ioc_.run();
    return std::move(*out);
  }
  Result<ClientResponse> Fetch(ClientRequest req) {
    return Run<Result<ClientResponse>>([&] { return client_.Fetch(std::move(req)); });
  }
  Result<std::unique_ptr<ClientStream>> Open(ClientRequest req) {
    return Run<Result<std::unique_ptr<ClientStream>>>(
        [&] { return client_.OpenStream(std::move(req)); });
  }
  Result<std::string_view> Next(ClientStream& s) {
    return Run<Result<std::string_view>>([&] { return s.Next(); });
  }

  asio::io_context ioc_;
  HttpClient client_{ioc_.get_executor()};
};

ClientRequest Get(std::string url, std::chrono::milliseconds timeout = 5s) {
  ClientRequest r;
  r.url = std::move(url);
  r.timeout = timeout;
  return r;
}

TEST_F(HttpClientTest, FetchFailsWithDeadlineExceededWhenServerNeverAnswersAndClientStaysUsable) {
  ScriptedServer silent([](int fd) {
    std::string pending;
    ReadRequest(fd, pending);
    WaitForClose(fd);
  });
  ScriptedServer answering(Answering("ok"));

  const auto start = Clock::now();
  auto r = Fetch(Get(silent.Url("/slow"), 400ms));
  const auto waited = Clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
  EXPECT_GE(waited, 400ms);
  EXPECT_LT(waited, 400ms + 250ms + 1000ms);  // the sweep runs every 250 ms; slack for the VM
  EXPECT_EQ(silent.accepted(), 1);            // a timeout is not retried on a new connection

  auto ok = Fetch(Get(answering.Url("/")));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->status, 200u);
  EXPECT_EQ(ok->body, "ok");

  // And it still times out the next slow request.
  auto again = Fetch(Get(silent.Url("/slow"), 300ms));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kDeadlineExceeded);
}

TEST_F(HttpClientTest, OpenStreamFailsWithDeadlineExceededWhenNoHeadArrives) {
  ScriptedServer silent([](int fd) {
    std::string pending;
    ReadRequest(fd, pending);
    WaitForClose(fd);
  });
  auto s = Open(Get(silent.Url("/events"), 300ms));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kDeadlineExceeded) << s.status().ToString();
}

// A stream whose server sends a first piece and then stalls: Next() fails with
// kDeadlineExceeded (not an end of body, though the connection is closed to end the read) for
// a chunked body and for one delimited by the connection's end.
TEST_F(HttpClientTest, StreamThatStallsMidBodyTimesOutInNext) {
  for (const bool chunked : {true, false}) {
    SCOPED_TRACE(chunked ? "chunked" : "until close");
    ScriptedServer stalling([chunked](int fd) {
      std::string pending;
      ReadRequest(fd, pending);
      SendAll(fd, chunked ? "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n"
                          : "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                            "Connection: close\r\n\r\ndata: 1\n\n");
      WaitForClose(fd);
    });
    auto s = Open(Get(stalling.Url("/events"), 400ms));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_EQ((*s)->response().status, 200u);
    auto first = Next(**s);
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    EXPECT_EQ(*first, "data: 1\n\n");

    const auto start = Clock::now();
    auto stalled = Next(**s);
    const auto waited = Clock::now() - start;
    ASSERT_FALSE(stalled.ok());
    EXPECT_EQ(stalled.status().code(), StatusCode::kDeadlineExceeded)
        << stalled.status().ToString();
    EXPECT_GE(waited, 400ms);
    EXPECT_LT(waited, 400ms + 250ms + 1000ms);
  }
}

TEST_F(HttpClientTest, StreamReadToTheEndGivesItsBodyAndTheConnectionBack) {
  ScriptedServer server([](int fd) {
    std::string pending;
    while (ReadRequest(fd, pending)) {
      SendAll(fd,
              "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
              "Transfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n");
      std::this_thread::sleep_for(20ms);  // a second piece that arrives separately
      SendAll(fd, "9\r\ndata: 2\n\n\r\n0\r\n\r\n");
    }
  });
  for (int round = 0; round < 3; ++round) {
    auto s = Open(Get(server.Url("/events")));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    std::string body;
    for (;;) {
      auto piece = Next(**s);
      ASSERT_TRUE(piece.ok()) << piece.status().ToString();
      if (piece->empty()) break;
      body.append(*piece);
    }
    EXPECT_EQ(body, "data: 1\n\ndata: 2\n\n");
  }
  EXPECT_EQ(server.accepted(), 1);
}

TEST_F(HttpClientTest, SequentialRequestsShareOnePooledConnection) {
  ScriptedServer server(Answering("pong"));
  for (int i = 0; i < 5; ++i) {
    auto r = Fetch(Get(server.Url("/ping?i=" + std::to_string(i))));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->body, "pong");
  }
  EXPECT_EQ(server.accepted(), 1);
}

TEST_F(HttpClientTest, IdleConnectionClosedByTheServerIsReplacedTransparently) {
  // Keep-alive in words, but each connection serves one request and is then closed.
  ScriptedServer server([](int fd) {
    std::string pending;
    if (ReadRequest(fd, pending)) SendAll(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    ::shutdown(fd, SHUT_RDWR);
  });
  for (int i = 0; i < 3; ++i) {
    auto r = Fetch(Get(server.Url("/")));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->body, "ok");
    std::this_thread::sleep_for(20ms);  // lets the close arrive before the next request
  }
  EXPECT_EQ(server.accepted(), 3);
}

// Bigger than what the socket buffers hold while the server is not reading: the write goes on
// asynchronously after the immediate part.
TEST_F(HttpClientTest, LargeBodyIsSentWhole) {
  ScriptedServer server([](int fd) {
    std::this_thread::sleep_for(300ms);  // the client's socket buffer fills meanwhile
    std::string pending;
    auto req = ReadRequest(fd, pending);
    if (!req) return;
    uint64_t sum = 0;
    for (unsigned char c : req->body) sum = sum * 31 + c;
    const std::string answer = std::to_string(req->body.size()) + " " + std::to_string(sum);
    SendAll(fd, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(answer.size()) + "\r\n\r\n" +
                    answer);
    WaitForClose(fd);
  });
  ClientRequest req = Get(server.Url("/upload"), 20s);
  req.method = bhttp::verb::post;
  req.body.resize(24 * 1024 * 1024);
  uint64_t sum = 0;
  for (size_t i = 0; i < req.body.size(); ++i) {
    req.body[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
    sum = sum * 31 + static_cast<unsigned char>(req.body[i]);
  }
  auto r = Fetch(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, std::to_string(req.body.size()) + " " + std::to_string(sum));
}

TEST_F(HttpClientTest, WriteToServerThatNeverReadsTimesOut) {
  ScriptedServer server([](int fd) { WaitForClose(fd); });
  ClientRequest req = Get(server.Url("/upload"), 500ms);
  req.method = bhttp::verb::put;
  req.body.assign(64 * 1024 * 1024, 'x');
  auto r = Fetch(std::move(req));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
}

TEST_F(HttpClientTest, RequestHeadCarriesTheRequestsFields) {
  std::mutex mu;
  std::string seen;
  ScriptedServer server([&](int fd) {
    std::string pending;
    while (auto req = ReadRequest(fd, pending)) {
      {
        std::lock_guard lock(mu);
        seen = req->head + req->body;
      }
      SendAll(fd, "HTTP/1.1 204 No Content\r\n\r\n");
    }
  });
  ClientRequest req = Get(server.Url("/v1/x?a=1&b=%20"));
  req.method = bhttp::verb::post;
  req.body = "abc";
  req.headers = {
      {"X-Trace", "1"}, {"x-trace", "2"}, {"Content-Length", "99"}, {"Connection", "close"}};
  auto r = Fetch(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 204u);
  auto last_seen = [&] {
    std::lock_guard lock(mu);
    return seen;
  };
  EXPECT_EQ(last_seen(), "POST /v1/x?a=1&b=%20 HTTP/1.1\r\nHost: 127.0.0.1:" +
                             server.Url("").substr(sizeof("http://127.0.0.1:") - 1) +
                             "\r\nUser-Agent: segma\r\nx-trace: 2\r\nContent-Length: 3\r\nabc");

  ClientRequest own = Get(server.Url(""));
  own.headers = {{"Host", "example.test"}, {"User-Agent", "probe/1"}};
  ASSERT_TRUE(Fetch(own).ok());
  EXPECT_EQ(last_seen(), "GET / HTTP/1.1\r\nHost: example.test\r\nUser-Agent: probe/1\r\n");
  EXPECT_EQ(server.accepted(), 1);  // "Connection: close" was not sent: the connection stays
}

TEST_F(HttpClientTest, BadUrlsAndHeadersAreInvalidArgument) {
  for (const char* url : {"", "127.0.0.1:80/x", "ftp://host/x", "http:///x", "http://ho st/x",
                          "http://host/a b", "http://host/x\r\nX-Evil: 1", "http://host:99999/",
                          "http://host:8x/", "http://[::1/", "http://host/%zz"}) {
    auto r = Fetch(Get(url));
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << url;
  }
  ClientRequest req = Get("http://127.0.0.1:9/x");
  req.headers = {{"X-Id", "1\r\nX-Evil: 1"}};
  auto r = Fetch(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(HttpClientTest, RefusedConnectionIsUnavailable) {
  int port;
  {
    ScriptedServer gone([](int) {});
    port = std::stoi(gone.Url("").substr(sizeof("http://127.0.0.1:") - 1));
  }
  auto r = Fetch(Get("http://127.0.0.1:" + std::to_string(port) + "/"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
}

// TLS connections have the same deadlines: the sweep shuts the TCP socket under the TLS stream.
TEST_F(HttpClientTest, TlsFetchesAreReusedAndAStalledTlsStreamTimesOut) {
  char dir[] = "/tmp/segma-client-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  {
    segma::testing::FakeHub hub(dir);
    hub.AddFile("huggingface", "org/m", "main", "small.txt", "hello", /*lfs=*/false);
    hub.AddFile("huggingface", "org/m", "main", "big.bin", std::string(40 * 1024, 'b'),
                /*lfs=*/false);
    HttpClient tls_client(ioc_.get_executor(), 32, TlsOptions{.ca_file = hub.ca_file()});
    for (int i = 0; i < 2; ++i) {
      auto r = Run<Result<ClientResponse>>(
          [&] { return tls_client.Fetch(Get(hub.url() + "/org/m/resolve/main/small.txt")); });
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(r->status, 200u);
      EXPECT_EQ(r->body, "hello");
    }

    hub.SetChunkDelayMs(2500);  // after the first 16 KiB of the body
    auto s = Run<Result<std::unique_ptr<ClientStream>>>([&] {
      return tls_client.OpenStream(Get(hub.url() + "/org/m/resolve/main/big.bin", 400ms));
    });
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    size_t got = 0;
    Clock::duration waited{};
    const Status failure = Run<Status>([&] { return ReadUntilFailure(s->get(), &got, &waited); });
    EXPECT_EQ(failure.code(), StatusCode::kDeadlineExceeded) << failure.ToString();
    EXPECT_EQ(got, 16u * 1024);
    EXPECT_GE(waited, 400ms);
    EXPECT_LT(waited, 2000ms);  // well before the hub's pause ends
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace segma::http
