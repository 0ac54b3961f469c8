#pragma once

// The web console (ui/): its built files, embedded in the binary at build time
// (cmake/embed_console.cmake writes console_assets.cc from ui/dist), served at "/" beside the API.

#include <span>
#include <string_view>
#include <vector>

#include "http/router.h"

namespace segma::console {

// One embedded file.
struct Asset {
  std::string_view path;          // "/index.html", "/assets/index-3f2a1b.js"
  std::string_view content_type;  // "text/javascript; charset=utf-8"
  std::string_view body;
  // Content-hashed name (Vite's assets/): cached for a year as immutable. Everything else
  // (index.html) is revalidated on every load, so a new build shows at once.
  bool immutable;
};

// The files embedded in this binary, sorted by path. Empty when the console was not built
// (no node/npm at build time, or -DSEGMA_CONSOLE=OFF).
std::span<const Asset> EmbeddedAssets();

// The paths the console never answers: the API, the gateway, the probes. A GET there that no
// route matches keeps the server's own 404 in the API's error format.
const std::vector<std::string>& ReservedPrefixes();

// The answer to GET `path` from `assets` (sorted by path): the file itself with its
// Content-Type and Cache-Control; for any other path outside assets/ index.html (the single-page
// app routes it; no-cache); 404 for a missing file under /assets/ (a stale chunk must fail, not
// load HTML). Without assets: 404 saying the console is not built. Pure.
http::Response Serve(std::string_view path, std::span<const Asset> assets);

// Serves the embedded console as `router`'s fallback for GET requests outside
// ReservedPrefixes().
void Install(http::Router& router);

}  // namespace segma::console
