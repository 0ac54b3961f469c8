#include "console/console.h"

#include <algorithm>

namespace segma::console {

namespace {

using http::bhttp::status;

const Asset* Find(std::span<const Asset> assets, std::string_view path) {
  auto it = std::lower_bound(assets.begin(), assets.end(), path,
                             [](const Asset& a, std::string_view p) { return a.path < p; });
  return it != assets.end() && it->path == path ? &*it : nullptr;
}

http::Response FileResponse(const Asset& a) {
  http::Response r = http::Response::Text(status::ok, std::string(a.body), a.content_type);
  r.msg.set(http::bhttp::field::cache_control,
            a.immutable ? "public, max-age=31536000, immutable" : "no-cache");
  r.msg.set("X-Content-Type-Options", "nosniff");
  if (a.content_type.starts_with("text/html")) {
    // The console talks only to its own origin; nothing may frame it.
    r.msg.set("Content-Security-Policy",
              "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
              "frame-ancestors 'none'");
    r.msg.set("X-Frame-Options", "DENY");
  }
  return r;
}

}  // namespace

const std::vector<std::string>& ReservedPrefixes() {
  static const std::vector<std::string> kReserved = {"/v1",      "/v2",     "/metrics",
                                                     "/healthz", "/readyz", "/internal"};
  return kReserved;
}

http::Response Serve(std::string_view path, std::span<const Asset> assets) {
  if (assets.empty()) {
    return http::Response::Text(
        status::not_found,
        "The segma console is not built into this binary: node and npm were missing when it was "
        "built. Install them (apt-get install nodejs npm) and rebuild (make run). The API is at "
        "/v2 (docs/api.md).\n");
  }
  if (path == "/") path = "/index.html";
  if (const Asset* a = Find(assets, path)) return FileResponse(*a);
  if (path.starts_with("/assets/")) {
    return http::Response::Text(status::not_found, "no such console file\n");
  }
  const Asset* index = Find(assets, "/index.html");
  if (index == nullptr) return http::Response::Text(status::not_found, "console has no index\n");
  return FileResponse(*index);
}

void Install(http::Router& router) {
  router.SetFallback(
      [](http::RequestContext& ctx) -> http::asio::awaitable<http::Response> {
        co_return Serve(ctx.path, EmbeddedAssets());
      },
      ReservedPrefixes());
}

}  // namespace segma::console
