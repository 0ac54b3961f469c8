#include "http/message.h"

#include <charconv>

#include "common/crypto.h"

namespace segma::http {

namespace {

Response MakeResponse(bhttp::status status, std::string body, std::string_view content_type) {
  Response r;
  r.msg.version(11);
  r.msg.result(status);
  r.msg.set(bhttp::field::content_type, content_type);
  r.msg.body() = std::move(body);
  r.msg.prepare_payload();
  return r;
}

}  // namespace

Response Response::Json(bhttp::status status, const json::value& body) {
  return MakeResponse(status, json::serialize(body), "application/json");
}

Response Response::Text(bhttp::status status, std::string body, std::string_view content_type) {
  return MakeResponse(status, std::move(body), content_type);
}

Response Response::NoContent() {
  Response r;
  r.msg.version(11);
  r.msg.result(bhttp::status::no_content);
  return r;
}

Response Response::Error(const Status& status, ErrorStyle style) {
  json::object err;
  if (style == ErrorStyle::kOpenAi) {
    err["message"] = status.message();
    err["type"] = OpenAiErrorType(status.code());
    err["param"] = nullptr;
    err["code"] = StatusCodeName(status.code());
  } else {
    err["code"] = StatusCodeName(status.code());
    err["message"] = status.message();
  }
  return Json(HttpStatusFor(status.code()), json::object{{"error", std::move(err)}});
}

Response Response::Stream(std::string_view content_type,
                          std::function<asio::awaitable<void>(ResponseStream&)> producer) {
  Response r;
  r.msg.version(11);
  r.msg.result(bhttp::status::ok);
  r.msg.set(bhttp::field::content_type, content_type);
  r.msg.set(bhttp::field::cache_control, "no-cache");
  r.stream = std::move(producer);
  return r;
}

bhttp::status HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return bhttp::status::ok;
    case StatusCode::kCancelled: return bhttp::status::client_closed_request;
    case StatusCode::kInvalidArgument: return bhttp::status::bad_request;
    case StatusCode::kDeadlineExceeded: return bhttp::status::gateway_timeout;
    case StatusCode::kNotFound: return bhttp::status::not_found;
    case StatusCode::kAlreadyExists: return bhttp::status::conflict;
    case StatusCode::kPermissionDenied: return bhttp::status::forbidden;
    case StatusCode::kResourceExhausted: return bhttp::status::too_many_requests;
    case StatusCode::kFailedPrecondition: return bhttp::status::conflict;
    case StatusCode::kAborted: return bhttp::status::conflict;
    case StatusCode::kUnimplemented: return bhttp::status::not_implemented;
    case StatusCode::kInternal: return bhttp::status::internal_server_error;
    case StatusCode::kUnavailable: return bhttp::status::service_unavailable;
    case StatusCode::kUnauthenticated: return bhttp::status::unauthorized;
  }
  return bhttp::status::internal_server_error;
}

std::string_view OpenAiErrorType(StatusCode code) {
  switch (code) {
    case StatusCode::kUnauthenticated: return "authentication_error";
    case StatusCode::kPermissionDenied: return "permission_error";
    case StatusCode::kNotFound: return "not_found_error";
    case StatusCode::kResourceExhausted: return "rate_limit_error";
    case StatusCode::kInvalidArgument: return "invalid_request_error";
    case StatusCode::kUnavailable: return "service_unavailable_error";
    default: return "api_error";
  }
}

std::optional<std::string> RequestContext::Query(const std::string& key) const {
  auto it = query.find(key);
  if (it == query.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> RequestContext::BearerToken() const {
  auto auth = req.find(bhttp::field::authorization);
  if (auth != req.end()) {
    std::string_view v = auth->value();
    constexpr std::string_view kBearer = "Bearer ";
    if (v.size() > kBearer.size() && (v.substr(0, kBearer.size()) == kBearer ||
                                      v.substr(0, kBearer.size()) == "bearer ")) {
      return std::string(v.substr(kBearer.size()));
    }
    return std::nullopt;  // another scheme: treated as no credential
  }
  return Cookie("segma_session");
}

std::optional<std::string> RequestContext::Cookie(std::string_view name) const {
  auto cookie = req.find(bhttp::field::cookie);
  if (cookie == req.end()) return std::nullopt;
  std::string_view c = cookie->value();
  size_t pos = 0;
  while (pos < c.size()) {
    while (pos < c.size() && (c[pos] == ' ' || c[pos] == ';')) ++pos;
    if (c.substr(pos, name.size()) == name && c.substr(pos + name.size(), 1) == "=") {
      const size_t start = pos + name.size() + 1;
      const size_t end = c.find(';', start);
      return std::string(
          c.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    }
    size_t next = c.find(';', pos);
    if (next == std::string_view::npos) break;
    pos = next + 1;
  }
  return std::nullopt;
}

Status RequestContext::CheckCsrf() const {
  const bhttp::verb m = req.method();
  if (m == bhttp::verb::get || m == bhttp::verb::head || m == bhttp::verb::options) {
    return OkStatus();
  }
  if (req.find(bhttp::field::authorization) != req.end() || !Cookie("segma_session")) {
    return OkStatus();  // not a cookie session: nothing a browser sends on its own
  }
  const std::optional<std::string> cookie = Cookie("segma_csrf");
  auto header = req.find("X-CSRF-Token");
  if (!cookie || cookie->empty() || header == req.end() ||
      !ConstantTimeEquals(header->value(), *cookie)) {
    return PermissionDeniedError(
        "a request authenticated by the session cookie needs header X-CSRF-Token equal to the "
        "segma_csrf cookie");
  }
  return OkStatus();
}

Result<int64_t> RequestContext::IdParam(const std::string& name) const {
  auto it = path_params.find(name);
  if (it == path_params.end()) return InvalidArgumentError("missing path parameter " + name);
  const std::string& s = it->second;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v <= 0) {
    return InvalidArgumentError(name + " must be a positive integer, got '" +
                                s.substr(0, 64) + "'");
  }
  return v;
}

}  // namespace segma::http
