#pragma once

// The server side of stand-alone gateway replicas (ADR 0009, src/gateway/replica.h):
//   GET  /internal/gateway/state[?version=V&timeout_s=N]  the key and route state; with the
//        version a replica already has, held open (long poll, N ≤ 30 s, default 20) until it
//        changes, else 304.
//   POST /internal/gateway/usage  {"records":[…]}  usage records made on a replica.
// Both require `Authorization: Bearer <gateway token>` (401 otherwise). The token is the content
// of <data dir>/gateway_token (mode 0600), created at the first start. It grants exactly these
// two endpoints: reading key hashes and routes, and writing usage; nothing of /v2.

#include <string>

#include <boost/asio/thread_pool.hpp>

#include "common/status.h"
#include "gateway/gateway.h"
#include "http/router.h"
#include "store/store.h"

namespace segma::api {

// Reads <data_dir>/gateway_token, creating it (random, mode 0600) when missing.
Result<std::string> LoadOrCreateGatewayToken(const std::string& data_dir);

// Reads the token in `path` (trailing newlines dropped), creating the file with `prefix` and a
// random part (mode 0600) when it is missing. kFailedPrecondition when the file is readable by
// group or others or holds fewer than 16 characters; kUnavailable when it cannot be read or made.
Result<std::string> LoadOrCreateTokenFile(const std::string& path, std::string_view prefix);

// Adds the two endpoints. Everything passed must outlive the router's use.
void InstallGatewaySync(http::Router& router, gateway::Gateway& gateway, store::Store& store,
                        boost::asio::thread_pool& blocking, std::string token);

}  // namespace segma::api
