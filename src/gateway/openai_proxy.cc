#include "gateway/openai_proxy.h"

#include <optional>
#include <vector>

#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include "common/json.h"
#include "common/logging.h"
#include "common/openai_chunk.h"

namespace segma::gateway {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using SteadyClock = std::chrono::steady_clock;

// ---- metrics ------------------------------------------------------------------------------------

struct OpenAiProxy::Families {
  prometheus::Family<prometheus::Counter>* requests;
  prometheus::Family<prometheus::Counter>* errors;
  prometheus::Family<prometheus::Gauge>* in_flight;
  prometheus::Family<prometheus::Histogram>* ttft;
  prometheus::Family<prometheus::Histogram>* itl;
  prometheus::Family<prometheus::Histogram>* e2e;
  prometheus::Family<prometheus::Histogram>* overhead;
  prometheus::Family<prometheus::Counter>* prompt_tokens;
  prometheus::Family<prometheus::Counter>* completion_tokens;
  prometheus::Family<prometheus::Counter>* project_requests;
  prometheus::Family<prometheus::Counter>* project_tokens;
  prometheus::Family<prometheus::Counter>* rate_limited;
  prometheus::Family<prometheus::Counter>* retries;
  prometheus::Family<prometheus::Counter>* failovers;
};

struct OpenAiProxy::ModelMetrics {
  std::string model;
  Families* families;
  prometheus::Counter* requests;
  prometheus::Gauge* in_flight;
  prometheus::Histogram* ttft;
  prometheus::Histogram* itl;
  prometheus::Histogram* e2e;
  prometheus::Histogram* overhead;
  prometheus::Counter* prompt_tokens;
  prometheus::Counter* completion_tokens;
  prometheus::Counter* retries;
  prometheus::Counter* failovers;
  std::mutex mu;
  std::unordered_map<int, prometheus::Counter*> errors;  // guarded by mu
  // Per project: requests by status code, tokens, rate-limited requests. Guarded by mu.
  struct Project {
    std::unordered_map<int, prometheus::Counter*> requests;
    prometheus::Counter* prompt_tokens = nullptr;
    prometheus::Counter* completion_tokens = nullptr;
    prometheus::Counter* rate_limited = nullptr;
  };
  std::unordered_map<int64_t, Project> projects;

  void Error(int status) {
    std::lock_guard lock(mu);
    auto& c = errors[status];
    if (c == nullptr) {
      c = &families->errors->Add({{"model", model}, {"code", std::to_string(status)}});
    }
    c->Increment();
  }

  // One finished request of project `project_id`.
  void ProjectRequest(int64_t project_id, int status, bool rate_limited,
                      const store::UsageRecord* usage) {
    std::lock_guard lock(mu);
    Project& p = projects[project_id];
    const std::string project = std::to_string(project_id);
    if (p.prompt_tokens == nullptr) {
      p.prompt_tokens = &families->project_tokens->Add(
          {{"project", project}, {"model", model}, {"type", "prompt"}});
      p.completion_tokens = &families->project_tokens->Add(
          {{"project", project}, {"model", model}, {"type", "completion"}});
      p.rate_limited = &families->rate_limited->Add({{"project", project}, {"model", model}});
    }
    auto& c = p.requests[status];
    if (c == nullptr) {
      c = &families->project_requests->Add(
          {{"project", project}, {"model", model}, {"code", std::to_string(status)}});
    }
    c->Increment();
    if (rate_limited) p.rate_limited->Increment();
    if (usage != nullptr) {
      p.prompt_tokens->Increment(static_cast<double>(usage->prompt_tokens));
      p.completion_tokens->Increment(static_cast<double>(usage->completion_tokens));
    }
  }
};

OpenAiProxy::OpenAiProxy(Deps deps, ProxyOptions options)
    : deps_(deps), options_(options), families_(std::make_unique<Families>()) {
  auto& r = deps_.registry.prometheus();
  families_->requests = &prometheus::BuildCounter()
                             .Name("segma_gateway_requests_total")
                             .Help("Gateway requests, by public model")
                             .Register(r);
  families_->errors = &prometheus::BuildCounter()
                           .Name("segma_gateway_errors_total")
                           .Help("Gateway requests answered with an error, by model and status")
                           .Register(r);
  families_->in_flight = &prometheus::BuildGauge()
                              .Name("segma_gateway_in_flight_requests")
                              .Help("Requests being proxied, by model")
                              .Register(r);
  families_->ttft = &prometheus::BuildHistogram()
                         .Name("segma_gateway_time_to_first_token_seconds")
                         .Help("Time from request arrival to the first upstream body byte")
                         .Register(r);
  families_->itl = &prometheus::BuildHistogram()
                        .Name("segma_gateway_inter_token_latency_seconds")
                        .Help("Time between successive upstream stream pieces")
                        .Register(r);
  families_->e2e = &prometheus::BuildHistogram()
                        .Name("segma_gateway_request_duration_seconds")
                        .Help("End-to-end request duration")
                        .Register(r);
  families_->overhead = &prometheus::BuildHistogram()
                             .Name("segma_gateway_overhead_seconds")
                             .Help("Time spent inside the gateway, excluding upstream waits")
                             .Register(r);
  families_->prompt_tokens = &prometheus::BuildCounter()
                                  .Name("segma_gateway_prompt_tokens_total")
                                  .Help("Prompt tokens reported by engines")
                                  .Register(r);
  families_->completion_tokens = &prometheus::BuildCounter()
                                      .Name("segma_gateway_completion_tokens_total")
                                      .Help("Completion tokens reported by engines")
                                      .Register(r);
  families_->project_requests =
      &prometheus::BuildCounter()
           .Name("segma_gateway_project_requests_total")
           .Help("Finished gateway requests, by project, model and status")
           .Register(r);
  families_->project_tokens = &prometheus::BuildCounter()
                                   .Name("segma_gateway_project_tokens_total")
                                   .Help(
                                       "Tokens reported by engines, by project, model and type "
                                       "(prompt, completion)")
                                   .Register(r);
  families_->rate_limited = &prometheus::BuildCounter()
                                 .Name("segma_gateway_rate_limited_total")
                                 .Help(
                                     "Requests refused by the gateway's limits (429), by project "
                                     "and model")
                                 .Register(r);
  families_->retries = &prometheus::BuildCounter()
                            .Name("segma_gateway_retries_total")
                            .Help(
                                "Upstream attempts after a request's first (another replica "
                                "after a failure), by model")
                            .Register(r);
  families_->failovers = &prometheus::BuildCounter()
                              .Name("segma_gateway_failovers_total")
                              .Help(
                                  "Requests answered by another replica after the first failed, "
                                  "by model")
                              .Register(r);
  routes_.store(std::make_shared<const RouteTable>());
}

OpenAiProxy::~OpenAiProxy() = default;

OpenAiProxy::ModelMetrics& OpenAiProxy::MetricsFor(std::string_view model) {
  {
    std::shared_lock lock(metrics_mu_);
    auto it = metrics_.find(std::string(model));
    if (it != metrics_.end()) return *it->second;
  }
  std::unique_lock lock(metrics_mu_);
  auto& slot = metrics_[std::string(model)];
  if (slot == nullptr) {
    slot = std::make_unique<ModelMetrics>();
    ModelMetrics& m = *slot;
    const std::map<std::string, std::string> labels{{"model", std::string(model)}};
    m.model = std::string(model);
    m.families = families_.get();
    m.requests = &families_->requests->Add(labels);
    m.in_flight = &families_->in_flight->Add(labels);
    m.ttft = &families_->ttft->Add(labels, metrics::LatencyBuckets());
    m.itl = &families_->itl->Add(labels, metrics::LatencyBuckets());
    m.e2e = &families_->e2e->Add(labels, metrics::LatencyBuckets());
    m.overhead = &families_->overhead->Add(labels, metrics::LatencyBuckets());
    m.prompt_tokens = &families_->prompt_tokens->Add(labels);
    m.completion_tokens = &families_->completion_tokens->Add(labels);
    m.retries = &families_->retries->Add(labels);
    m.failovers = &families_->failovers->Add(labels);
  }
  return *slot;
}

void OpenAiProxy::SetRoutes(std::shared_ptr<const RouteTable> table) {
  routes_.store(table ? std::move(table) : std::make_shared<const RouteTable>());
}

// ---- helpers ------------------------------------------------------------------------------------

namespace {

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

int64_t Micros(SteadyClock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

http::Response OpenAiError(const Status& s) {
  return http::Response::Error(s, http::ErrorStyle::kOpenAi);
}

// What the gateway reads from a request body; nothing else is interpreted.
struct RequestFacts {
  std::string model;
  bool stream = false;
  bool has_stream_options = false;
  bool client_wants_usage = false;
  std::optional<int64_t> max_tokens;
  std::string prefix;  // the start of the prompt, for prefix affinity
};

void AppendPrefix(std::string& prefix, std::string_view text, size_t limit) {
  if (prefix.size() >= limit) return;
  prefix.append(text.substr(0, limit - prefix.size()));
}

// Appends the text of a chat message content (a string, or an array of parts with "text").
void AppendContent(std::string& prefix, const json::value& content, size_t limit) {
  if (const auto* s = content.if_string()) {
    AppendPrefix(prefix, *s, limit);
  } else if (const auto* parts = content.if_array()) {
    for (const json::value& p : *parts) {
      const auto* po = p.if_object();
      if (po == nullptr) continue;
      if (const auto* t = po->if_contains("text"); t != nullptr && t->is_string()) {
        AppendPrefix(prefix, t->get_string(), limit);
      }
    }
  }
}

Result<RequestFacts> ReadJsonFacts(const json::object& o, Endpoint endpoint, size_t prefix_chars) {
  RequestFacts f;
  const json::value* model = o.if_contains("model");
  if (model == nullptr || !model->is_string() || model->get_string().empty()) {
    return InvalidArgumentError("you must provide a model parameter");
  }
  f.model = std::string(model->get_string());
  if (const auto* s = o.if_contains("stream"); s != nullptr && !s->is_null()) {
    if (!s->is_bool()) return InvalidArgumentError("stream must be a boolean");
    f.stream = s->get_bool();
  }
  if (const auto* so = o.if_contains("stream_options"); so != nullptr && !so->is_null()) {
    f.has_stream_options = true;
    if (!so->is_object()) return InvalidArgumentError("stream_options must be an object");
    if (const auto* iu = so->get_object().if_contains("include_usage"); iu && iu->is_bool()) {
      f.client_wants_usage = iu->get_bool();
    }
  }
  for (const char* name : {"max_completion_tokens", "max_tokens"}) {
    const json::value* v = o.if_contains(name);
    if (v == nullptr || v->is_null()) continue;
    if (!v->is_int64() && !v->is_uint64()) {
      return InvalidArgumentError(fmt::format("{} must be an integer", name));
    }
    const int64_t n = v->is_int64() ? v->get_int64() : static_cast<int64_t>(v->get_uint64());
    if (n < 0) return InvalidArgumentError(fmt::format("{} must not be negative", name));
    f.max_tokens = n;
    break;
  }
  switch (endpoint) {
    case Endpoint::kChat:
      if (const auto* msgs = o.if_contains("messages"); msgs != nullptr && msgs->is_array()) {
        for (const json::value& m : msgs->get_array()) {
          if (f.prefix.size() >= prefix_chars) break;
          if (const auto* mo = m.if_object()) {
            if (const auto* c = mo->if_contains("content"))
              AppendContent(f.prefix, *c, prefix_chars);
          }
        }
      } else {
        return InvalidArgumentError("messages must be an array");
      }
      break;
    case Endpoint::kCompletions:
      if (const auto* p = o.if_contains("prompt")) {
        if (p->is_string()) {
          AppendPrefix(f.prefix, p->get_string(), prefix_chars);
        } else if (p->is_array() && !p->get_array().empty() && p->get_array()[0].is_string()) {
          AppendPrefix(f.prefix, p->get_array()[0].get_string(), prefix_chars);
        }
      }
      break;
    default:
      break;
  }
  return f;
}

// The value of the multipart form field `name`, if present (for /v1/audio/transcriptions).
std::optional<std::string> MultipartField(std::string_view body, std::string_view content_type,
                                          std::string_view name) {
  const size_t b = content_type.find("boundary=");
  if (b == std::string_view::npos) return std::nullopt;
  std::string_view boundary = content_type.substr(b + 9);
  if (const size_t semi = boundary.find(';'); semi != std::string_view::npos) {
    boundary = boundary.substr(0, semi);
  }
  if (boundary.size() >= 2 && boundary.front() == '"' && boundary.back() == '"') {
    boundary = boundary.substr(1, boundary.size() - 2);
  }
  const std::string delimiter = "--" + std::string(boundary);
  const std::string wanted = fmt::format("name=\"{}\"", name);
  size_t pos = body.find(delimiter);
  while (pos != std::string_view::npos) {
    const size_t headers_start = pos + delimiter.size();
    const size_t headers_end = body.find("\r\n\r\n", headers_start);
    if (headers_end == std::string_view::npos) return std::nullopt;
    const std::string_view headers = body.substr(headers_start, headers_end - headers_start);
    const size_t next = body.find(delimiter, headers_end);
    if (next == std::string_view::npos) return std::nullopt;
    if (headers.find(wanted) != std::string_view::npos) {
      std::string_view value = body.substr(headers_end + 4, next - headers_end - 4);
      if (value.ends_with("\r\n")) value.remove_suffix(2);
      return std::string(value);
    }
    pos = next;
  }
  return std::nullopt;
}

// The body to send upstream: the client's bytes unless the model must be renamed or the engine
// must be asked for usage in a stream.
std::string UpstreamBody(std::string_view body, json::object& parsed, const RequestFacts& f,
                         const std::string& upstream_model) {
  const bool rename = upstream_model != f.model;
  const bool ask_usage = f.stream && !f.client_wants_usage;
  if (!rename && !ask_usage) return std::string(body);
  if (!rename && !f.has_stream_options) {
    // The common case: splice the option in after the opening brace, no re-serialisation.
    const size_t brace = body.find('{');
    std::string out;
    out.reserve(body.size() + 48);
    out.append(body.substr(0, brace + 1));
    out.append("\"stream_options\":{\"include_usage\":true},");
    out.append(body.substr(brace + 1));
    return out;
  }
  if (rename) parsed["model"] = upstream_model;
  if (ask_usage) {
    json::value& so = parsed["stream_options"];
    if (!so.is_object()) so = json::object();
    so.get_object()["include_usage"] = true;
  }
  return json::serialize(parsed);
}

}  // namespace

// ---- SSE usage tap ------------------------------------------------------------------------------

namespace {

// Appends `event` without a `"usage":null` member. Engines asked for include_usage (which the
// gateway always does) add it to every chunk; a client that did not ask must get the chunks the
// engine would have sent it, which have no usage member at all. A "usage" inside a string value
// is escaped (\"usage\") and never matches.
constexpr std::string_view kUsageKey = "\"usage\"";

size_t SkipSpaces(std::string_view s, size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) ++i;
  return i;
}

// Where the value of the "usage" member whose key starts at `key` begins, or npos if no ':'
// follows the key (the text was not a member name).
size_t UsageValueAt(std::string_view event, size_t key) {
  const size_t colon = SkipSpaces(event, key + kUsageKey.size());
  if (colon >= event.size() || event[colon] != ':') return std::string_view::npos;
  return SkipSpaces(event, colon + 1);
}

void AppendWithoutNullUsage(std::string_view event, std::string& out) {
  const size_t key = event.find(kUsageKey);
  const size_t value = key == std::string_view::npos ? key : UsageValueAt(event, key);
  if (value == std::string_view::npos || event.substr(value, 4) != "null") {
    out.append(event);
    return;
  }
  size_t begin = key;
  size_t end = value + 4;
  size_t before = key;
  while (before > 0 && event[before - 1] == ' ') --before;
  if (before > 0 && event[before - 1] == ',') {
    begin = before - 1;  // `,"usage":null` (the usual place: the last member)
  } else {
    end = SkipSpaces(event, end);  // `{"usage":null,` (first member)
    if (end < event.size() && event[end] == ',') end = SkipSpaces(event, end + 1);
  }
  out.append(event.substr(0, begin));
  out.append(event.substr(end));
}

// True if a "usage" member in `event` has a value other than null. Engines asked for
// include_usage put "usage":null in every chunk; only the last one carries numbers, and only
// events that pass this check are parsed.
bool HasUsageValue(std::string_view event) {
  for (size_t key = event.find(kUsageKey); key != std::string_view::npos;
       key = event.find(kUsageKey, key + 1)) {
    const size_t value = UsageValueAt(event, key);
    if (value != std::string_view::npos && event.substr(value, 4) != "null") return true;
  }
  return false;
}

}  // namespace

bool SseUsageTap::Inspect(std::string_view event) {
  ++events_;
  if (CarriesGeneratedText(event)) ++token_events_;
  if (!HasUsageValue(event)) return false;
  // Only the few events that carry usage are parsed.
  std::string_view data = event;
  if (const size_t d = data.find("data:"); d != std::string_view::npos) {
    data = data.substr(d + 5);
  } else {
    return false;
  }
  while (!data.empty() && data.front() == ' ') data.remove_prefix(1);
  int64_t p = 0, c = 0, k = 0;
  if (!ParseUsage(data, p, c, k)) return false;
  has_usage_ = true;
  prompt_tokens_ = p;
  completion_tokens_ = c;
  cached_tokens_ = k;
  if (!drop_) return false;
  // The usage-only chunk has no choices; a chunk that carries both (continuous usage stats)
  // stays.
  boost::system::error_code ec;
  json::value v = json::parse(data, ec);
  if (ec || !v.is_object()) return false;
  const json::value* ch = v.get_object().if_contains("choices");
  return ch == nullptr || (ch->is_array() && ch->get_array().empty());
}

std::string_view SseUsageTap::Process(std::string_view piece) {
  if (!drop_) {
    // Pass-through: the piece goes on as is; events are only scanned for usage.
    pending_.append(piece);
    size_t start = 0;
    for (size_t end; (end = pending_.find("\n\n", start)) != std::string::npos; start = end + 2) {
      Inspect(std::string_view(pending_).substr(start, end - start));
    }
    pending_.erase(0, start);
    return piece;
  }
  out_.clear();
  std::string_view input = piece;
  if (!pending_.empty()) {
    pending_.append(piece);
    input = pending_;
  }
  size_t start = 0;
  for (size_t end; (end = input.find("\n\n", start)) != std::string_view::npos; start = end + 2) {
    const std::string_view event = input.substr(start, end - start);
    if (!Inspect(event)) {
      AppendWithoutNullUsage(event, out_);
      out_.append("\n\n");
    }
  }
  std::string rest(input.substr(start));
  pending_ = std::move(rest);
  return out_;
}

std::string_view SseUsageTap::Rest() {
  if (!drop_) return {};
  out_ = std::move(pending_);
  pending_.clear();
  return out_;
}

// ---- one proxied request ------------------------------------------------------------------------

// The state of one request from admission to its end. Whoever drops the last reference (the
// handler, or the streaming producer) settles limits, load counters, metrics and usage, so that
// every path — success, upstream failure, client gone, producer never started — is accounted.
struct OpenAiProxy::Call {
  OpenAiProxy* proxy = nullptr;
  SteadyClock::time_point start;
  Timestamp arrived;
  std::shared_ptr<const KeyRecord> key;
  std::shared_ptr<const RouteTable> table;  // keeps `replica` alive
  const Replica* replica = nullptr;
  ModelMetrics* metrics = nullptr;
  Admission admission;
  store::UsageRecord usage;
  bool has_usage = false;
  std::optional<SteadyClock::time_point> first_byte;
  SteadyClock::time_point last_piece;
  SteadyClock::duration upstream_wait{0};
  int status = 0;
  int attempts = 0;           // upstream attempts (replicas tried)
  bool rate_limited = false;  // refused by the limits

  uint64_t progress_pin = 0;  // the journal segment of the stream's last progress entry
  SteadyClock::time_point last_progress;
  bool settled = false;

  ~Call() { Settle(); }

  // Settles limits, load counters, metrics and usage, once: at the end of a stream before its
  // last byte goes out (so the usage record is journaled first), else when the last reference
  // goes.
  void Settle() {
    if (settled) return;
    settled = true;
    const auto end = SteadyClock::now();
    if (replica != nullptr) Balancer::End(*replica);
    if (metrics != nullptr) {
      metrics->in_flight->Decrement();
      metrics->e2e->Observe(Seconds(end - start));
      if (status >= 400) metrics->Error(status);
      if (has_usage) {
        metrics->prompt_tokens->Increment(static_cast<double>(usage.prompt_tokens));
        metrics->completion_tokens->Increment(static_cast<double>(usage.completion_tokens));
      }
      if (attempts > 1) {
        metrics->retries->Increment(attempts - 1);
        if (status > 0 && status < 400) metrics->failovers->Increment();
      }
      if (key != nullptr) {
        metrics->ProjectRequest(key->project_id, status, rate_limited,
                                has_usage ? &usage : nullptr);
      }
    }
    // Without reported usage (client gone, upstream failure) the reservation stands: it is the
    // best bound on what the engine may have spent.
    proxy->deps_.limiter.Finish(
        admission, has_usage ? usage.prompt_tokens + usage.completion_tokens
                             : (status >= 400 && status != 499 ? 0 : admission.reserved_tokens));
    if (key != nullptr) {
      usage.status = status;
      usage.duration_ms = std::chrono::duration<double, std::milli>(end - start).count();
      if (first_byte) {
        usage.ttft_ms = std::chrono::duration<double, std::milli>(*first_byte - start).count();
      }
      proxy->deps_.usage.Record(std::move(usage), progress_pin);
    }
  }

  // Journals what a stream has delivered so far (`delivered` token events), as it is billed if the
  // gateway dies before the stream ends: on the first delivered token, then at most once per
  // progress interval.
  void Progress(int64_t delivered, SteadyClock::time_point now) {
    if (key == nullptr || delivered == usage.completion_tokens) return;
    if (proxy->deps_.usage.journal() == nullptr) return;
    if (progress_pin != 0 && now - last_progress < proxy->options_.progress_interval) return;
    last_progress = now;
    store::UsageRecord r = usage;
    r.completion_tokens = delivered;
    r.status = 200;
    r.finish = store::UsageFinish::kGatewayCrashed;
    r.duration_ms = std::chrono::duration<double, std::milli>(now - start).count();
    if (first_byte) {
      r.ttft_ms = std::chrono::duration<double, std::milli>(*first_byte - start).count();
    }
    usage.completion_tokens = delivered;
    proxy->deps_.usage.RecordProgress(r, progress_pin);
  }

  void SetOverheadHeader(http::Response& res) const {
    const auto inside = SteadyClock::now() - start - upstream_wait;
    const int64_t us = std::max<int64_t>(0, Micros(inside));
    res.msg.set("x-segma-overhead-us", std::to_string(us));
    if (metrics != nullptr) metrics->overhead->Observe(static_cast<double>(us) / 1e6);
  }

  http::Response Fail(const Status& s) {
    http::Response res = OpenAiError(s);
    status = res.msg.result_int();
    SetOverheadHeader(res);
    return res;
  }
};

namespace {

asio::awaitable<void> PumpStream(std::shared_ptr<OpenAiProxy::Call> call,
                                 std::shared_ptr<http::ClientStream> upstream,
                                 std::shared_ptr<SseUsageTap> tap, std::string model,
                                 http::ResponseStream& out);

// A 401 from an engine refuses the gateway's credential (the engine's secret), not the client's,
// which the gateway has accepted: the replica is as unusable as one that is down (its secret
// changed after this routing table was built, or its worker never reported it), so another one
// is tried and the client never sees the engine's 401.
bool EngineRefused(unsigned status) { return status == 401; }

Status RefusedError(const Replica& replica) {
  return UnavailableError(fmt::format(
      "instance {} refused the gateway's engine credential (HTTP 401)", replica.instance_id));
}

}  // namespace

Result<std::shared_ptr<const KeyRecord>> OpenAiProxy::Authenticate(http::RequestContext& ctx) {
  auto auth = ctx.req.find(bhttp::field::authorization);
  if (auth == ctx.req.end()) {
    return UnauthenticatedError("missing API key: send it as 'Authorization: Bearer <key>'");
  }
  std::string_view v = auth->value();
  constexpr std::string_view kBearer = "Bearer ";
  if (v.size() <= kBearer.size() || !(v.starts_with(kBearer) || v.starts_with("bearer "))) {
    return UnauthenticatedError("the Authorization header must be 'Bearer <key>'");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const KeyRecord> key,
                   deps_.keys.Authenticate(v.substr(kBearer.size())));
  if (!key->inference.ok()) return key->inference;
  if (!key->AllowsAddress(ctx.remote_address)) {
    return PermissionDeniedError(
        fmt::format("this API key may not be used from {}", ctx.remote_address));
  }
  return key;
}

asio::awaitable<http::Response> OpenAiProxy::ListModels(http::RequestContext& ctx) {
  auto key = Authenticate(ctx);
  if (!key.ok()) co_return OpenAiError(key.status());
  auto table = routes();
  json::array data;
  for (const ModelRoute& r : table->routes()) {
    if (!(*key)->AllowsModel(r.name) || !r.VisibleTo((*key)->project_id)) continue;
    data.push_back(json::object{
        {"id", r.name}, {"object", "model"}, {"created", r.created_at}, {"owned_by", r.owned_by}});
  }
  co_return http::Response::Json(bhttp::status::ok,
                                 json::object{{"object", "list"}, {"data", std::move(data)}});
}

asio::awaitable<http::Response> OpenAiProxy::Forward(http::RequestContext& ctx, Endpoint endpoint) {
  auto call = std::make_shared<Call>();
  call->proxy = this;
  call->start = SteadyClock::now();
  call->arrived = deps_.clock.Now();
  if (!deps_.usage.accepting()) {
    // ADR 0025: a request that could not be billed reliably is not served.
    co_return call->Fail(UnavailableError(
        "usage cannot be recorded right now (the gateway's usage journal is not writable); retry "
        "later"));
  }

  auto key = Authenticate(ctx);
  if (!key.ok()) co_return call->Fail(key.status());
  call->key = *key;
  const KeyRecord& k = **key;
  call->usage.request_id = ctx.request_id;
  call->usage.time = call->arrived;
  call->usage.api_key_id = k.id;
  call->usage.user_id = k.user_id;
  call->usage.project_id = k.project_id;

  // Only the fields the gateway needs are read from the body.
  const std::string& body = ctx.req.body();
  RequestFacts facts;
  // The body's DOM lives in the coroutine frame: its ~12 nodes of a typical chat request come
  // from this buffer instead of one allocation each (larger bodies spill to the heap).
  unsigned char dom_buffer[4096];
  json::monotonic_resource dom_memory(dom_buffer, sizeof(dom_buffer));
  json::object parsed(&dom_memory);
  const bool multipart = endpoint == Endpoint::kTranscriptions;
  std::string content_type(ctx.req[bhttp::field::content_type]);
  if (multipart) {
    auto model = MultipartField(body, content_type, "model");
    if (!model || model->empty()) {
      co_return call->Fail(InvalidArgumentError("you must provide a model parameter"));
    }
    facts.model = std::move(*model);
  } else {
    boost::system::error_code ec;
    json::value v = json::parse(body, ec, &dom_memory);
    if (ec) {
      co_return call->Fail(InvalidArgumentError(
          fmt::format("the request body is not valid JSON: {}", ec.message())));
    }
    if (!v.is_object()) co_return call->Fail(InvalidArgumentError("the body must be an object"));
    parsed = std::move(v.get_object());
    auto f = ReadJsonFacts(parsed, endpoint, deps_.balancer.options().prefix_chars);
    if (!f.ok()) co_return call->Fail(f.status());
    facts = std::move(*f);
  }
  call->usage.model = facts.model;

  if (!k.AllowsModel(facts.model)) {
    co_return call->Fail(
        PermissionDeniedError(fmt::format("this API key may not use model '{}'", facts.model)));
  }
  call->table = routes();
  const ModelRoute* route = call->table->Find(facts.model);
  if (route == nullptr || !route->VisibleTo(k.project_id)) {
    co_return call->Fail(NotFoundError(fmt::format("model '{}' does not exist", facts.model)));
  }
  call->metrics = &MetricsFor(route->name);
  call->metrics->requests->Increment();
  call->metrics->in_flight->Increment();

  const bool generates = endpoint == Endpoint::kChat || endpoint == Endpoint::kCompletions;
  const int64_t reserve =
      facts.max_tokens.value_or(generates ? options_.default_reserved_tokens
                                          : options_.default_reserved_tokens_no_generation);
  auto admitted = deps_.limiter.Admit(k.id, k.project_id, reserve);
  if (auto* rej = std::get_if<Rejection>(&admitted)) {
    call->rate_limited = true;
    http::Response res = call->Fail(rej->status);
    res.msg.set(bhttp::field::retry_after, std::to_string(rej->retry_after.count()));
    co_return res;
  }
  call->admission = std::get<Admission>(admitted);

  std::string session;
  if (auto h = ctx.req.find("x-session-id"); h != ctx.req.end()) session = std::string(h->value());
  const PickHints hints{session, facts.prefix};
  std::vector<size_t> order;
  deps_.balancer.OrderDeployments(*route, k.project_id, order);

  std::vector<int64_t> tried;
  Status last_error =
      UnavailableError(fmt::format("no healthy replica of model '{}' is available", facts.model));
  std::optional<http::ClientResponse> last_5xx;
  int attempts = 0;
  for (size_t di = 0; di < order.size() && attempts < options_.max_attempts; ++di) {
    const Deployment& dep = route->deployments[order[di]];
    std::string upstream_body =
        multipart ? std::string() : UpstreamBody(body, parsed, facts, dep.upstream_model);
    while (attempts < options_.max_attempts) {
      const Replica* replica = deps_.balancer.Pick(dep, hints, deps_.clock.Now(), tried);
      if (replica == nullptr) break;
      ++attempts;
      call->attempts = attempts;
      tried.push_back(replica->instance_id);
      Balancer::Begin(*replica);

      http::ClientRequest up;
      up.method = bhttp::verb::post;
      up.url = replica->base_url;
      up.url.append(ctx.path);
      up.body = multipart ? body : upstream_body;
      up.timeout = options_.upstream_timeout;
      up.headers.emplace_back("Content-Type",
                              content_type.empty() ? "application/json" : content_type);
      up.headers.emplace_back("x-request-id", ctx.request_id);
      if (facts.stream) up.headers.emplace_back("Accept", "text/event-stream");
      // The engine's own secret, never the client's credential (no client header is passed on).
      up.Bearer(replica->api_key);

      const auto sent = SteadyClock::now();
      if (facts.stream) {
        auto opened = co_await deps_.client.OpenStream(std::move(up));
        call->upstream_wait += SteadyClock::now() - sent;
        const bool refused = opened.ok() && EngineRefused((*opened)->response().status);
        const bool failed = !opened.ok() || (*opened)->response().status >= 500 || refused;
        if (failed) {
          Balancer::End(*replica);
          deps_.balancer.ReportFailure(*replica, deps_.clock.Now());
          if (!opened.ok()) {
            last_error = opened.status();
          } else if (refused) {
            last_error = RefusedError(*replica);
          } else {
            last_5xx = (*opened)->response();
          }
          continue;
        }
        deps_.balancer.ReportSuccess(*replica);
        call->replica = replica;
        call->usage.deployment_id = dep.deployment_id;
        call->usage.instance_id = replica->instance_id;
        std::shared_ptr<http::ClientStream> upstream(std::move(*opened));
        const http::ClientResponse& head = upstream->response();
        if (head.status < 200 || head.status >= 300) {
          // An engine's own refusal (400, 404, 429...) goes back to the client unchanged.
          http::Response res = http::Response::Text(
              static_cast<bhttp::status>(head.status), head.body,
              head.Header("content-type").empty() ? "application/json"
                                                  : head.Header("content-type"));
          call->status = static_cast<int>(head.status);
          call->SetOverheadHeader(res);
          co_return res;
        }
        call->status = 200;
        std::string ct = head.Header("content-type");
        auto tap = std::make_shared<SseUsageTap>(!facts.client_wants_usage);
        http::Response res = http::Response::Stream(
            ct.empty() ? "text/event-stream" : ct,
            [call, upstream, tap, model = route->name](http::ResponseStream& out) {
              return PumpStream(call, upstream, tap, model, out);
            });
        call->SetOverheadHeader(res);
        co_return res;
      }

      auto fetched = co_await deps_.client.Fetch(std::move(up));
      call->upstream_wait += SteadyClock::now() - sent;
      if (!fetched.ok() || fetched->status >= 500 || EngineRefused(fetched->status)) {
        Balancer::End(*replica);
        deps_.balancer.ReportFailure(*replica, deps_.clock.Now());
        if (fetched.ok() && EngineRefused(fetched->status)) {
          last_error = RefusedError(*replica);
        } else if (!fetched.ok()) {
          last_error = fetched.status();
          if (last_error.code() == StatusCode::kDeadlineExceeded) {
            // The engine may still be working on it: not retried elsewhere.
            co_return call->Fail(last_error);
          }
        } else {
          last_5xx = std::move(*fetched);
        }
        continue;
      }
      deps_.balancer.ReportSuccess(*replica);
      call->replica = replica;
      call->usage.deployment_id = dep.deployment_id;
      call->usage.instance_id = replica->instance_id;
      call->first_byte = SteadyClock::now();
      call->metrics->ttft->Observe(Seconds(*call->first_byte - call->start));
      int64_t p = 0, c = 0, cached = 0;
      if (fetched->status < 300 && ParseUsage(fetched->body, p, c, cached)) {
        call->has_usage = true;
        call->usage.prompt_tokens = p;
        call->usage.completion_tokens = c;
        call->usage.cached_tokens = cached;
      }
      std::string ct = fetched->Header("content-type");
      http::Response res =
          http::Response::Text(static_cast<bhttp::status>(fetched->status),
                               std::move(fetched->body), ct.empty() ? "application/json" : ct);
      call->status = static_cast<int>(fetched->status);
      call->SetOverheadHeader(res);
      co_return res;
    }
  }
  if (last_5xx) {
    // Every try failed; the last engine error is the most useful answer.
    std::string ct = last_5xx->Header("content-type");
    http::Response res =
        http::Response::Text(static_cast<bhttp::status>(last_5xx->status),
                             std::move(last_5xx->body), ct.empty() ? "application/json" : ct);
    call->status = static_cast<int>(last_5xx->status);
    call->SetOverheadHeader(res);
    co_return res;
  }
  if (last_error.code() != StatusCode::kUnavailable || tried.empty()) {
    co_return call->Fail(last_error);
  }
  co_return call->Fail(UnavailableError(fmt::format("no replica of model '{}' could be reached: {}",
                                                    facts.model, last_error.message())));
}

namespace {

asio::awaitable<void> PumpStream(std::shared_ptr<OpenAiProxy::Call> call,
                                 std::shared_ptr<http::ClientStream> upstream,
                                 std::shared_ptr<SseUsageTap> tap, std::string model,
                                 http::ResponseStream& out) {
  auto* metrics = call->metrics;
  // Token events the client has received (the bill of a stream cut short). Pieces are counted
  // once written: a piece the client did not take is not billed.
  int64_t delivered = 0;
  store::UsageFinish finish = store::UsageFinish::kComplete;
  for (;;) {
    auto piece = co_await upstream->Next();
    if (!piece.ok()) {
      Logger("gateway")->warn("[req={}] upstream stream of {} ended early: {}",
                              call->usage.request_id, model, piece.status().ToString());
      call->status = 502;  // the client saw 200; this is for usage and metrics
      finish = store::UsageFinish::kUpstreamFailed;
      break;
    }
    if (piece->empty()) break;
    const auto now = SteadyClock::now();
    if (!call->first_byte) {
      call->first_byte = now;
      metrics->ttft->Observe(Seconds(now - call->start));
    } else {
      metrics->itl->Observe(Seconds(now - call->last_piece));
    }
    call->last_piece = now;
    const std::string_view forward = tap->Process(*piece);
    if (!forward.empty() && !co_await out.Write(forward)) {
      // The client has gone: stop the engine's work now.
      upstream->Cancel();
      call->status = 499;
      finish = store::UsageFinish::kClientDisconnected;
      break;
    }
    delivered = tap->token_events();
    call->Progress(delivered, now);
  }
  if (call->status == 200) {
    const std::string_view rest = tap->Rest();
    if (!rest.empty() && co_await out.Write(rest)) delivered = tap->token_events();
  }
  if (tap->has_usage()) {
    call->has_usage = true;
    call->usage.prompt_tokens = tap->prompt_tokens();
    call->usage.completion_tokens = tap->completion_tokens();
    call->usage.cached_tokens = tap->cached_tokens();
  }
  if (finish != store::UsageFinish::kComplete) {
    // Cut short: billed for the tokens delivered (the engine's usage, if it came, counts what it
    // generated, which the client may not have received).
    call->usage.finish = finish;
    call->usage.completion_tokens = delivered;
    if (!call->has_usage) call->usage.prompt_tokens = 0;
  } else if (!call->has_usage) {
    // An engine that sent no usage: the token events delivered are the best count.
    call->usage.completion_tokens = delivered;
  }
  // Journaled before the server writes the stream's last chunk.
  call->Settle();
}

}  // namespace

void OpenAiProxy::Install(http::Router& router) {
  router.Add(bhttp::verb::get, "/v1/models",
             [this](http::RequestContext& ctx) { return ListModels(ctx); });
  const std::pair<const char*, Endpoint> posts[] = {
      {"/v1/chat/completions", Endpoint::kChat},
      {"/v1/completions", Endpoint::kCompletions},
      {"/v1/embeddings", Endpoint::kEmbeddings},
      {"/v1/rerank", Endpoint::kRerank},
      {"/v1/audio/transcriptions", Endpoint::kTranscriptions},
  };
  for (const auto& [path, endpoint] : posts) {
    router.Add(bhttp::verb::post, path,
               [this, e = endpoint](http::RequestContext& ctx) { return Forward(ctx, e); });
  }
}

}  // namespace segma::gateway
