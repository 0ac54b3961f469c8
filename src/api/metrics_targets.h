#pragma once

// GET /v2/metrics/targets: Prometheus HTTP service discovery (http_sd_configs) for the whole
// platform, so that one scrape job follows workers and engines as they come and go. Every
// target group has the label segma_role ("server", "worker" or "engine"); workers add worker and
// worker_id; engines add worker, deployment, instance, project and backend, the labels the
// worker's re-exported engine series carry. Authenticated by the metrics token (Bearer), which
// Prometheus sends with `authorization: {credentials_file: ...}` (docs/observability.md).

#include <string>
#include <string_view>

#include <boost/asio/thread_pool.hpp>

#include "common/json.h"
#include "common/status.h"
#include "http/router.h"
#include "store/store.h"

namespace segma::api {

// The metrics token: read from `token_file` when it is set, else from <data_dir>/metrics_token;
// created (random, mode 0600) when the file is missing. Errors as LoadOrCreateTokenFile.
Result<std::string> LoadMetricsToken(const std::string& data_dir, const std::string& token_file);

// The http_sd document: the server at `server_address` (host:port), every worker of `targets`
// with an address and a port, and every engine of `targets` (Store::ListScrapeTargets). Pure.
json::array MetricsTargets(std::string_view server_address, const store::ScrapeTargets& targets);

// Adds GET /v2/metrics/targets: 401 in the API's error format without the right Bearer token;
// the server's own address is the Host the request was sent to. Reads the store on `blocking`.
void InstallMetricsTargets(http::Router& router, store::Store& store,
                           boost::asio::thread_pool& blocking, std::string token);

}  // namespace segma::api
