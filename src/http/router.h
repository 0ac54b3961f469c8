#pragma once

#include <functional>
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
  struct Route {
    bhttp::verb method;
    std::string pattern;
    Handler handler;
  };

  void Add(bhttp::verb method, std::string pattern, Handler handler);

  enum class MatchResult { kFound, kNotFound, kMethodNotAllowed };
  // On kFound sets `route` and fills ctx.path_params and ctx.route.
  MatchResult Match(bhttp::verb method, std::string_view path, RequestContext& ctx,
                    const Route*& route) const;

  const std::vector<Route>& routes() const { return routes_; }

 private:
  static bool MatchPattern(std::string_view pattern, std::string_view path,
                           std::map<std::string, std::string>* params);
  std::vector<Route> routes_;
};

}  // namespace segma::http
