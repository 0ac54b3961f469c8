#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/verb.hpp>

#include "common/json.h"
#include "common/status.h"

namespace segma::http {

struct ClientRequest {
  boost::beast::http::verb method = boost::beast::http::verb::get;
  std::string url;  // http(s)://host[:port]/path?query
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Fetch: connecting, then the exchange (sending and the whole response). Stream and
  // OpenStream: connecting, sending with the response head, and each wait for more bytes.
  // Enforced a few times a second (see HttpClient): an operation fails with kDeadlineExceeded
  // up to about 250 ms after its timeout.
  std::chrono::milliseconds timeout{30'000};

  ClientRequest& Bearer(const std::string& token) {
    if (!token.empty()) headers.emplace_back("Authorization", "Bearer " + token);
    return *this;
  }
  ClientRequest& JsonBody(const json::value& v);
};

struct ClientResponse {
  unsigned status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  // The body parsed as JSON (kInvalidArgument when it is not JSON).
  Result<json::value> Json() const { return ParseJson(body); }
  std::string Header(const std::string& lower_name) const;
};

// The body of a response that is read piece by piece (HttpClient::OpenStream). Owns the upstream
// connection (it may outlive the HttpClient; the connection is then simply closed at the end):
// destroying it before the body ended, or calling Cancel(), closes the connection so
// that the server sees the request abandoned; a body read to its end returns a keep-alive
// connection to the client's pool. Not thread-safe: use it from one coroutine at a time.
class ClientStream {
 public:
  struct Impl;
  explicit ClientStream(std::unique_ptr<Impl> impl);
  ~ClientStream();
  ClientStream(const ClientStream&) = delete;
  ClientStream& operator=(const ClientStream&) = delete;

  // Status and headers. For a non-2xx status the body was read whole into `body` and Next() ends
  // at once.
  const ClientResponse& response() const;

  // The next piece of the body as it arrived: all that had arrived since the last call, up to
  // 16 KiB (valid until the next call); an empty view once the body has ended. kCancelled after
  // Cancel(); kUnavailable / kDeadlineExceeded on transport failure (the per-read timeout is the
  // request's `timeout`), after which the stream has ended.
  boost::asio::awaitable<Result<std::string_view>> Next();

  // Closes the connection now; safe to call more than once, and from the stream's executor while
  // Next() waits (that Next() then fails with kCancelled).
  void Cancel();

 private:
  std::unique_ptr<Impl> impl_;
};

// How an HttpClient checks the servers of https:// URLs.
struct TlsOptions {
  // A PEM file of CA certificates trusted in addition to the system store (a private CA or a
  // test's self-signed certificate). Empty = the system store only (OpenSSL's default paths, which
  // honour SSL_CERT_FILE / SSL_CERT_DIR).
  std::string ca_file;
  // Check the certificate chain and that it names the URL's host. Off only for debugging.
  bool verify_peer = true;
};

// HTTP/1.1 client (http:// and https://) for the worker, CLI, gateway and tests, with keep-alive
// connections pooled per scheme, host and port. Transport failures are kUnavailable (connect
// refused, reset, TLS handshake or certificate refused) or kDeadlineExceeded; a CA file that
// cannot be loaded is kFailedPrecondition; any HTTP status is a successful Result (check
// `status`). Redirects are not followed. Request headers with CR, LF or NUL, and URLs that are not
// valid RFC 3986 http(s) URLs, are kInvalidArgument.
//
// Timeouts are deadlines that each connection stores and one timer per client enforces, every
// 250 ms, by shutting down the sockets past theirs (no timer per socket operation: those cost
// two extra scheduler rounds per read or write). The timer runs only while a request is in
// flight and stops at most 250 ms after the last one, so an io_context that has nothing else to
// do returns from run() then.
// Thread-safe; the executor must outlive the client and its ClientStreams.
class HttpClient {
 public:
  explicit HttpClient(boost::asio::any_io_executor executor, size_t max_idle_per_host = 32,
                      TlsOptions tls = {});
  ~HttpClient();

  boost::asio::awaitable<Result<ClientResponse>> Fetch(ClientRequest req);

  // Sends `req` and hands each piece of the response body to `on_data` as it arrives (for SSE and
  // log following). Ends when the body ends, when `on_data` returns false, or on error. The
  // returned response has status and headers; its body is empty. A non-2xx response's body is
  // read whole and returned instead of streamed.
  boost::asio::awaitable<Result<ClientResponse>> Stream(
      ClientRequest req, std::function<bool(std::string_view)> on_data);

  // Sends `req` (on a pooled keep-alive connection when one is idle, retrying once on a fresh one
  // if that connection turns out to be closed) and returns once the response head has arrived;
  // the body is then pulled with ClientStream::Next(), so the caller controls the pace
  // (backpressure) and can cancel. Transport failures before the head are kUnavailable (nothing
  // was received: the request may be retried elsewhere) or kDeadlineExceeded.
  boost::asio::awaitable<Result<std::unique_ptr<ClientStream>>> OpenStream(ClientRequest req);

 private:
  friend struct ClientStream::Impl;
  struct Pool;
  // Shared with open ClientStreams, which give their connection back when their body ends.
  std::shared_ptr<Pool> pool_;
  boost::asio::any_io_executor executor_;
};

// Blocking conveniences on a private io_context, for the CLI and tests.
Result<ClientResponse> FetchSync(ClientRequest req, TlsOptions tls = {});
Result<ClientResponse> StreamSync(ClientRequest req, std::function<bool(std::string_view)> on_data);

}  // namespace segma::http
