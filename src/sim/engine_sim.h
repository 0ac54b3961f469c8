#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/status.h"
#include "http/router.h"
#include "http/server.h"
#include "metrics/registry.h"
#include "sim/timing_model.h"

namespace segma::sim {

struct FailureOptions {
  double error_rate = 0;  // fraction of requests answered 500 before any work
  double delay_ms = 0;    // extra delay before every /v1 request is handled
  double drop_rate = 0;   // fraction of streams whose connection is dropped mid-stream
  // The hang fault: this long after it starts listening the engine stops answering: requests
  // arriving from then on wait for ever on an open connection. Negative: never.
  double hang_after_ms = -1;
  // "all": every endpoint hangs, /health too (a deadlocked process); "inference": all but /health
  // (an engine whose health endpoint outlives its stuck inference loop).
  std::string hang_scope = "all";
};

struct EngineSimConfig {
  std::string model = "sim-model";  // the served model name (/v1/models, "model" checks)
  std::string address = "127.0.0.1";
  uint16_t port = 0;  // 0: any free port
  TimingParams timing;
  FailureOptions failures;
  int embedding_dim = 1024;
  uint64_t seed = 1;  // of the failure-injection draws
  bool access_log = false;
  // The engine's secret (segma's per-instance engine secret, docs/adr/0035-engine-secrets.md):
  // every endpoint but /health then requires "Authorization: Bearer <api_key>" and answers 401
  // in OpenAI's error format without it. "" = open.
  std::string api_key;
};

// An OpenAI-compatible simulated inference engine: /v1/chat/completions, /v1/completions,
// /v1/embeddings, /v1/models, /health and vLLM-named /metrics (all but /health behind the
// config's api_key when it has one), with the latencies of
// timing_model.h. Requests are coroutines on the io_context and every wait is an Asio timer, so
// thousands of concurrent streams cost no threads. The engine state (EngineCore) is one object
// behind a mutex.
//
// Thread-safety: the io_context may run on several threads. Start/Stop from any thread. The
// object must outlive ioc.run(); coroutines still pending when it is destroyed stop touching it.
class EngineSim {
 public:
  EngineSim(boost::asio::io_context& ioc, EngineSimConfig config);
  ~EngineSim();
  EngineSim(const EngineSim&) = delete;
  EngineSim& operator=(const EngineSim&) = delete;

  // Binds and starts serving. Returns the bound port, kUnavailable if the address is in use.
  Result<uint16_t> Start();
  // Stops accepting; open streams end at their next token.
  void Stop();

  const EngineSimConfig& config() const { return config_; }
  metrics::Registry& registry() { return registry_; }

  struct Shared;  // engine state shared with in-flight requests (engine_sim.cc)

 private:
  void AddRoutes();

  boost::asio::io_context& ioc_;
  const EngineSimConfig config_;
  metrics::Registry registry_;
  std::shared_ptr<Shared> shared_;
  http::Router router_;
  std::unique_ptr<http::HttpServer> server_;
  std::unique_ptr<boost::asio::steady_timer> hang_timer_;  // the hang fault's start
};

}  // namespace segma::sim
