#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "http/message.h"

namespace segma::http {

using Handler = std::function<asio::awaitable<Response>(RequestContext&)>;

// Maps (method, path) to a handler. Patterns are literal segments and "{name}" captures:
// "/v2/models/{id}". A pattern ending in "/{name...}" captures the rest of the path.
// Routes are added before serving starts; Match is then thread-safe (read-only).
class Router {
 public:
  // One "/"-separated piece of a pattern, parsed once when the route is added.
  struct Segment {
    enum class Kind { kLiteral, kCapture, kRest } kind;
    std::string text;  // the literal, or the capture's name
  };
  struct Route {
    bhttp::verb method;
    std::string pattern;
    Handler handler;
    std::vector<Segment> segments;
  };

  void Add(bhttp::verb method, std::string pattern, Handler handler);
  // Answers the GET requests that no route matches, except those whose path is one of
  // `reserved` or lies below one ("/v2" covers "/v2" and "/v2/x", not "/v2x"): those keep the
  // server's own 404. For a single-page app served beside an API (the console).
  void SetFallback(Handler handler, std::vector<std::string> reserved);

  enum class MatchResult { kFound, kNotFound, kMethodNotAllowed };
  // On kFound sets `route` and fills ctx.path_params and ctx.route.
  MatchResult Match(bhttp::verb method, std::string_view path, RequestContext& ctx,
                    const Route*& route) const;

  const std::vector<Route>& routes() const { return routes_; }

 private:
  // `segs` is the request path split at "/"; `path` the path they point into.
  static bool MatchSegments(const Route& route, std::string_view path,
                            const std::vector<std::string_view>& segs,
                            std::map<std::string, std::string>* params);
  std::vector<Route> routes_;
  std::optional<Route> fallback_;
  std::vector<std::string> reserved_;
};

}  // namespace segma::http
