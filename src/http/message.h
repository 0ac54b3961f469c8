#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include "common/json.h"
#include "common/status.h"

namespace segma::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

using Request = bhttp::request<bhttp::string_body>;

// Writes the body of a streamed response, one HTTP chunk per call. Exactly one write is in
// flight at a time: that is the backpressure towards the producer.
class ResponseStream {
 public:
  virtual ~ResponseStream() = default;
  // Sends `data` as one chunk. Returns false when the client has gone or stalled past the write
  // timeout; the producer must then stop (and cancel whatever feeds it).
  virtual asio::awaitable<bool> Write(std::string_view data) = 0;
  // True once the server is shutting down: long-lived streams should end.
  virtual bool stopping() const = 0;
};

// How errors are rendered: segma's REST format or OpenAI's.
enum class ErrorStyle { kSegma, kOpenAi };

// A handler's answer: a complete message, or headers plus a producer that streams the body
// (chunked transfer encoding; Content-Type set by the handler, e.g. text/event-stream).
struct Response {
  bhttp::response<bhttp::string_body> msg;
  std::function<asio::awaitable<void>(ResponseStream&)> stream;

  static Response Json(bhttp::status status, const json::value& body);
  static Response Text(bhttp::status status, std::string body,
                       std::string_view content_type = "text/plain; charset=utf-8");
  static Response NoContent();
  // {"error":{"code":"not_found","message":"…"}} (kSegma) or OpenAI's
  // {"error":{"message":"…","type":"…","param":null,"code":"…"}} with the status from
  // HttpStatusFor(status.code()).
  static Response Error(const Status& status, ErrorStyle style = ErrorStyle::kSegma);
  static Response Stream(std::string_view content_type,
                         std::function<asio::awaitable<void>(ResponseStream&)> producer);
};

// The one mapping from Status codes to HTTP statuses.
bhttp::status HttpStatusFor(StatusCode code);
// The OpenAI error "type" for a code ("invalid_request_error", "authentication_error", ...).
std::string_view OpenAiErrorType(StatusCode code);

// Everything a handler needs to know about one request. Handlers never see the socket.
struct RequestContext {
  Request& req;
  std::string request_id;
  // The client's address: the peer's, or behind trusted proxies the one they forwarded
  // (http/forwarded.h). What logs, the audit trail, sign-in limits and key allow-lists use.
  std::string remote_address;
  std::string_view path;                         // without the query string
  std::map<std::string, std::string> path_params;  // "{id}" → value
  std::map<std::string, std::string> query;        // decoded; last value wins
  std::string route;                             // the matched pattern, for metrics and logs
  // The scheme a trusted proxy says the client used ("https" behind TLS offload); "" when no
  // trusted proxy said (the connection's own: segma serves plain HTTP).
  std::string forwarded_proto = {};

  std::optional<std::string> Query(const std::string& key) const;
  // The bearer token from "Authorization: Bearer …", else the session cookie (segma_session).
  std::optional<std::string> BearerToken() const;
  // The value of cookie `name` in the Cookie header, if present.
  std::optional<std::string> Cookie(std::string_view name) const;
  // The CSRF defence of cookie sessions: a request with a method other than GET, HEAD or OPTIONS
  // whose credential is the session cookie (no Authorization header) must carry header
  // X-CSRF-Token equal to its segma_csrf cookie (set beside the session cookie at login, readable
  // by the console's script, never by another site's). kPermissionDenied otherwise; OK for
  // everything else, Bearer calls included.
  Status CheckCsrf() const;
  // Parses path parameter `name` as a positive integer id; kInvalidArgument otherwise.
  Result<int64_t> IdParam(const std::string& name = "id") const;
};

}  // namespace segma::http
