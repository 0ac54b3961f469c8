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

namespace boost::beast {
template <class Protocol, class Executor, class RatePolicy>
class basic_stream;
}

namespace segma::http {

struct ClientRequest {
  boost::beast::http::verb method = boost::beast::http::verb::get;
  std::string url;  // http://host:port/path?query
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Fetch: the whole exchange. Stream: connecting and each wait for more bytes.
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

// HTTP/1.1 client for the worker, CLI, gateway and tests, with keep-alive connections pooled per
// host:port. Transport failures are kUnavailable (connect refused, reset) or kDeadlineExceeded;
// any HTTP status is a successful Result (check `status`).
// Thread-safe; the executor must outlive the client.
class HttpClient {
 public:
  explicit HttpClient(boost::asio::any_io_executor executor, size_t max_idle_per_host = 32);
  ~HttpClient();

  boost::asio::awaitable<Result<ClientResponse>> Fetch(ClientRequest req);

  // Sends `req` and hands each piece of the response body to `on_data` as it arrives (for SSE and
  // log following). Ends when the body ends, when `on_data` returns false, or on error. The
  // returned response has status and headers; its body is empty. A non-2xx response's body is
  // read whole and returned instead of streamed.
  boost::asio::awaitable<Result<ClientResponse>> Stream(
      ClientRequest req, std::function<bool(std::string_view)> on_data);

 private:
  struct Pool;
  std::unique_ptr<Pool> pool_;
  boost::asio::any_io_executor executor_;
};

// Blocking conveniences on a private io_context, for the CLI and tests.
Result<ClientResponse> FetchSync(ClientRequest req);
Result<ClientResponse> StreamSync(ClientRequest req,
                                  std::function<bool(std::string_view)> on_data);

}  // namespace segma::http
