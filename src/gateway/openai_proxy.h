#pragma once

// The OpenAI-compatible /v1 endpoints: authentication from the KeyTable, model scope, limits,
// replica choice, and proxying to the engines, with usage metering and metrics.
//
// Per request, with no store I/O: bearer key → KeyTable (401 invalid/expired/revoked; 403 wrong
// scope or no inference right in its project) → body: only model, stream, stream_options,
// max_tokens and a prompt prefix are read (400 malformed JSON / missing model) → model allowed
// for the key (403) → route (404 unknown or invisible to the key's project) → Limiter (429 with
// Retry-After) → Balancer (503 no healthy replica) → upstream, retrying another replica (then the
// next deployment) on connect failure or 5xx before any byte went to the client.
//
// Streaming (stream: true): the engine is always asked for stream_options.include_usage; bytes
// are written downstream as each upstream piece arrives, one write in flight; the final usage-only
// chunk is removed when the client did not ask for it (then only whole events are forwarded, an
// incomplete trailing event waits for its end); a failed downstream write cancels the upstream
// request at once (its connection is closed). Header x-segma-overhead-us: microseconds spent in
// the gateway excluding the wait for the upstream (for streams: until the upstream's head).
//
// Usage (ADR 0024): every request with a valid key is recorded once, before its response's last
// byte goes out (UsageMeter::Record journals it). A stream cut short is billed for the token
// events written to the client, with finish client_disconnected or upstream_failed; a stream in
// flight journals its progress (first token, then every progress_interval), billed as
// gateway_crashed if the process dies. While the meter refuses (journal not writable, policy
// refuse: ADR 0025) requests are answered 503 before authentication.
//
// Known limits: a client that disconnects during a non-streaming request is noticed only when
// the answer is written (the upstream request runs to completion); multipart bodies are passed on
// unchanged (a deployment's upstream_model rename is not applied to them).

#include <atomic>
#include <chrono>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/clock.h"
#include "gateway/balancer.h"
#include "gateway/key_table.h"
#include "gateway/limits.h"
#include "gateway/route_table.h"
#include "gateway/usage_meter.h"
#include "http/client.h"
#include "http/router.h"
#include "metrics/registry.h"

namespace segma::gateway {

struct ProxyOptions {
  // Tokens reserved against TPM/budgets when a generation request has no max_tokens.
  int64_t default_reserved_tokens = 1024;
  // Tokens reserved for requests without generation (embeddings, rerank, transcriptions).
  int64_t default_reserved_tokens_no_generation = 256;
  int max_attempts = 3;  // upstream tries per request (replicas, then fallback deployments)
  std::chrono::milliseconds upstream_timeout{600'000};  // connect, and each wait for bytes
  // How often a stream in flight journals what it has delivered (ADR 0024): what a crash of the
  // gateway mid-stream can leave unbilled, besides the first token which is always journaled.
  std::chrono::milliseconds progress_interval{100};
};

// What an endpoint carries in its body.
enum class Endpoint { kChat, kCompletions, kEmbeddings, kRerank, kTranscriptions };

// Extracts the usage of an OpenAI SSE stream and optionally removes the usage-only chunk.
// Exposed for tests. Not thread-safe.
class SseUsageTap {
 public:
  explicit SseUsageTap(bool drop_usage_chunk) : drop_(drop_usage_chunk) {}
  // Takes the next upstream piece and returns the bytes to send downstream now (a view into
  // `piece` or into an internal buffer; valid until the next call).
  std::string_view Process(std::string_view piece);
  // Whatever is still held back at the end of the stream (an incomplete last event).
  std::string_view Rest();

  bool has_usage() const { return has_usage_; }
  int64_t prompt_tokens() const { return prompt_tokens_; }
  int64_t completion_tokens() const { return completion_tokens_; }
  int64_t cached_tokens() const { return cached_tokens_; }
  int64_t events() const { return events_; }
  // Complete events that carry generated text (CarriesGeneratedText): one per token for engines
  // that stream a token per chunk.
  int64_t token_events() const { return token_events_; }

 private:
  // Inspects one complete event (without its blank-line terminator); true if it must be dropped.
  bool Inspect(std::string_view event);

  const bool drop_;
  std::string pending_;  // bytes of an incomplete event
  std::string out_;
  bool has_usage_ = false;
  int64_t prompt_tokens_ = 0, completion_tokens_ = 0, cached_tokens_ = 0;
  int64_t events_ = 0;
  int64_t token_events_ = 0;
};

// Reads prompt/completion/cached tokens from an OpenAI "usage" object in `body`. False if none.
bool ParseUsage(std::string_view body, int64_t& prompt, int64_t& completion, int64_t& cached);

class OpenAiProxy {
 public:
  struct Deps {
    KeyTable& keys;
    Limiter& limiter;
    Balancer& balancer;
    UsageMeter& usage;
    http::HttpClient& client;
    metrics::Registry& registry;
    const Clock& clock;
  };

  OpenAiProxy(Deps deps, ProxyOptions options);
  ~OpenAiProxy();

  // Adds GET /v1/models and the POST endpoints to `router`. `this` must outlive the router's use.
  void Install(http::Router& router);

  // Swaps the routing snapshot (thread-safe; requests in flight keep the one they started with).
  void SetRoutes(std::shared_ptr<const RouteTable> table);
  std::shared_ptr<const RouteTable> routes() const { return routes_.load(); }

  boost::asio::awaitable<http::Response> ListModels(http::RequestContext& ctx);
  boost::asio::awaitable<http::Response> Forward(http::RequestContext& ctx, Endpoint endpoint);

  struct ModelMetrics;
  struct Call;

 private:
  ModelMetrics& MetricsFor(std::string_view model);
  // The key of the request's bearer secret: kUnauthenticated (no, malformed or unknown secret,
  // expired, revoked), kPermissionDenied (scope or role; a client address outside the key's
  // allowed_cidrs).
  Result<std::shared_ptr<const KeyRecord>> Authenticate(http::RequestContext& ctx);

  Deps deps_;
  const ProxyOptions options_;
  std::atomic<std::shared_ptr<const RouteTable>> routes_;

  struct Families;
  std::unique_ptr<Families> families_;
  std::shared_mutex metrics_mu_;
  std::unordered_map<std::string, std::unique_ptr<ModelMetrics>> metrics_;  // guarded
};

}  // namespace segma::gateway
