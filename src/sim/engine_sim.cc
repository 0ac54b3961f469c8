#include "sim/engine_sim.h"

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <random>
#include <stdexcept>
#include <unordered_map>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include "common/crypto.h"
#include "common/json.h"
#include "common/logging.h"
#include "common/random.h"
#include "http/sse.h"

namespace segma::sim {

namespace asio = boost::asio;
using http::bhttp::status;
using http::bhttp::verb;
// Latencies are measured on the monotonic clock of the process: this file is the edge where the
// simulated engine meets real time (the model itself, timing_model.h, never reads a clock).
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
// (A named constant: GCC 12 rejects a string literal inside a co_await expression.)
constexpr std::string_view kDone = "data: [DONE]\n\n";

// vLLM's histogram buckets (vllm/v1/metrics/loggers.py), so dashboards built for vLLM fit.
const prometheus::Histogram::BucketBoundaries kTtftBuckets = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
    1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
const prometheus::Histogram::BucketBoundaries kItlBuckets = {
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
    0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
const prometheus::Histogram::BucketBoundaries kE2eBuckets = {
    0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

// Generated text: one word (with its leading space) per token.
constexpr std::array<std::string_view, 32> kWords = {
    "the",    "engine",  "simulates", "tokens", "for",      "testing", "a",     "gateway",
    "with",   "latency", "that",      "grows",  "under",    "load",    "and",   "prefix",
    "cache",  "hits",    "cut",       "time",   "to",       "first",   "token", "while",
    "queues", "form",    "when",      "all",    "sequence", "slots",   "are",   "busy"};

uint64_t HashText(std::string_view text) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string Base64(const void* data, size_t size) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve((size + 2) / 3 * 4);
  for (size_t i = 0; i < size; i += 3) {
    uint32_t v = static_cast<uint32_t>(p[i]) << 16;
    if (i + 1 < size) v |= static_cast<uint32_t>(p[i + 1]) << 8;
    if (i + 2 < size) v |= p[i + 2];
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < size ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back(i + 2 < size ? kAlphabet[v & 63] : '=');
  }
  return out;
}

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

http::Response OpenAiError(const Status& s) {
  return http::Response::Error(s, http::ErrorStyle::kOpenAi);
}

// OpenAI bodies carry many fields we do not model (temperature, n, tools, ...): they are ignored,
// so only type errors of the fields we read count.
Status LenientFinish(JsonReader& r) { return r.ok() ? OkStatus() : r.Finish(); }

// One generation request, parsed.
struct Job {
  bool chat = true;
  std::string prompt;  // flattened text, for counting and prefix hashing
  int64_t prompt_tokens = 0;
  int output_tokens = 0;
  bool max_tokens_given = false;
  bool stream = false;
  bool include_usage = false;
};

// Appends the text of a chat message's content (a string, null, or an array of parts).
Status AppendContent(const json::value& content, std::string& out, const std::string& path) {
  if (content.is_null()) return OkStatus();
  if (content.is_string()) {
    out.append(content.as_string());
    return OkStatus();
  }
  if (!content.is_array()) {
    return InvalidArgumentError(path + " must be a string, an array of parts or null");
  }
  for (const json::value& part : content.as_array()) {
    if (!part.is_object()) return InvalidArgumentError(path + " parts must be objects");
    const json::object& o = part.as_object();
    if (const json::value* t = o.if_contains("text"); t != nullptr && t->is_string()) {
      out.append(t->as_string());
    } else if (o.contains("image_url")) {
      out.append(576 * kBytesPerToken, '#');  // a typical image costs ~576 prompt tokens
    }
  }
  return OkStatus();
}

// Appends a completions/embeddings input: a string, an array of strings, an array of token ids
// or an array of such arrays. Token ids count one token each (4 placeholder bytes).
Status AppendPromptInput(const json::value& v, std::string& out, const std::string& field,
                         int depth = 0) {
  if (v.is_string()) {
    out.append(v.as_string());
    return OkStatus();
  }
  if (v.is_int64() || v.is_uint64()) {
    if (depth == 0) return InvalidArgumentError(field + " must be a string or an array");
    const std::string id = std::to_string(v.is_int64() ? v.as_int64() : 0);
    out.append(id.substr(0, kBytesPerToken));
    out.append(kBytesPerToken - std::min<size_t>(id.size(), kBytesPerToken), ' ');
    return OkStatus();
  }
  if (v.is_array() && depth < 2) {
    if (v.as_array().empty()) return InvalidArgumentError(field + " must not be empty");
    for (const json::value& e : v.as_array()) {
      if (e.is_array() && depth == 1) return InvalidArgumentError(field + " is nested too deep");
      RETURN_IF_ERROR(AppendPromptInput(e, out, field, depth + 1));
    }
    return OkStatus();
  }
  return InvalidArgumentError(field + " must be a string, an array of strings or token ids");
}

}  // namespace

// Engine state shared by the server's handlers and in-flight request coroutines. A request holds
// a shared_ptr, so the state outlives a destroyed EngineSim; `closed` then makes it inert.
struct EngineSim::Shared {
  // A request parked in the waiting queue: Finish() of another request grants it a slot and
  // wakes it by cancelling its timer on its own executor (timers are not thread-safe).
  struct Waiter {
    asio::any_io_executor executor;
    asio::steady_timer* timer;
    bool granted = false;  // guarded by mu
  };

  Shared(const EngineSimConfig& config, metrics::Registry& registry)
      : config(config), rng(config.seed), core(config.timing) {
    const prometheus::Labels labels{{"model_name", config.model}};
    auto& reg = registry.prometheus();
    running = &prometheus::BuildGauge()
                   .Name("vllm:num_requests_running")
                   .Help("Number of requests in model execution batches.")
                   .Register(reg)
                   .Add(labels);
    waiting = &prometheus::BuildGauge()
                   .Name("vllm:num_requests_waiting")
                   .Help("Number of requests waiting to be processed.")
                   .Register(reg)
                   .Add(labels);
    kv_usage = &prometheus::BuildGauge()
                    .Name("vllm:kv_cache_usage_perc")
                    .Help("KV-cache usage. 1 means 100 percent usage.")
                    .Register(reg)
                    .Add(labels);
    prompt_tokens = &prometheus::BuildCounter()
                         .Name("vllm:prompt_tokens_total")
                         .Help("Number of prefill tokens processed.")
                         .Register(reg)
                         .Add(labels);
    generation_tokens = &prometheus::BuildCounter()
                             .Name("vllm:generation_tokens_total")
                             .Help("Number of generation tokens processed.")
                             .Register(reg)
                             .Add(labels);
    prefix_hits = &prometheus::BuildCounter()
                       .Name("vllm:prefix_cache_hits_total")
                       .Help("Prefix cache hits, in terms of number of cached tokens.")
                       .Register(reg)
                       .Add(labels);
    prefix_queries = &prometheus::BuildCounter()
                          .Name("vllm:prefix_cache_queries_total")
                          .Help("Prefix cache queries, in terms of number of queried tokens.")
                          .Register(reg)
                          .Add(labels);
    ttft = &prometheus::BuildHistogram()
                .Name("vllm:time_to_first_token_seconds")
                .Help("Histogram of time to first token in seconds.")
                .Register(reg)
                .Add(labels, kTtftBuckets);
    itl = &prometheus::BuildHistogram()
               .Name("vllm:inter_token_latency_seconds")
               .Help("Histogram of inter-token latency in seconds.")
               .Register(reg)
               .Add(labels, kItlBuckets);
    e2e = &prometheus::BuildHistogram()
               .Name("vllm:e2e_request_latency_seconds")
               .Help("Histogram of e2e request latency in seconds.")
               .Register(reg)
               .Add(labels, kE2eBuckets);
    auto& success = prometheus::BuildCounter()
                        .Name("vllm:request_success_total")
                        .Help("Count of successfully processed requests.")
                        .Register(reg);
    success_length = &success.Add({{"model_name", config.model}, {"finished_reason", "length"}});
    success_stop = &success.Add({{"model_name", config.model}, {"finished_reason", "stop"}});
  }

  // Admits request `id`, waiting in the FIFO queue while the engine is full, then plans its
  // prefill. kUnavailable when the waiting queue is full or the engine is shutting down.
  asio::awaitable<Result<PrefillPlan>> Admit(uint64_t id, int64_t kv_blocks, int64_t prompt_tokens,
                                             const std::vector<uint64_t>& blocks) {
    asio::steady_timer timer(co_await asio::this_coro::executor,
                             asio::steady_timer::time_point::max());
    Waiter waiter{timer.get_executor(), &timer};
    {
      std::lock_guard lock(mu);
      if (closed) co_return UnavailableError("the engine is shutting down");
      switch (core.Submit(id, kv_blocks)) {
        case EngineCore::Admission::kRejected:
          co_return UnavailableError("the engine's waiting queue is full (" +
                                     std::to_string(config.timing.max_waiting) + " requests)");
        case EngineCore::Admission::kRunning:
          co_return StartLocked(prompt_tokens, blocks);
        case EngineCore::Admission::kWaiting:
          waiters[id] = &waiter;
          UpdateGaugesLocked();
          break;
      }
    }
    for (;;) {
      co_await timer.async_wait(kUseTuple);
      std::lock_guard lock(mu);
      if (waiter.granted) co_return StartLocked(prompt_tokens, blocks);
      if (closed) co_return UnavailableError("the engine is shutting down");
    }
  }

  // Ends request `id`, running or waiting, and wakes the requests that may start now.
  void Finish(uint64_t id) {
    std::lock_guard lock(mu);
    if (closed) return;
    waiters.erase(id);
    for (uint64_t started : core.Finish(id)) {
      auto it = waiters.find(started);
      if (it == waiters.end()) continue;  // cannot happen: every waiting id is registered
      it->second->granted = true;
      asio::post(it->second->executor, [timer = it->second->timer] { timer->cancel(); });
      waiters.erase(it);
    }
    UpdateGaugesLocked();
  }

  Micros NextDecodeStep() {
    std::lock_guard lock(mu);
    return core.NextDecodeStep();
  }

  // True with probability `rate`.
  bool Draw(double rate) {
    if (rate <= 0) return false;
    std::lock_guard lock(mu);
    return std::uniform_real_distribution<double>(0, 1)(rng) < rate;
  }

  void Close() {
    std::lock_guard lock(mu);
    closed = true;
  }

  const EngineSimConfig config;
  std::atomic<uint64_t> next_id{1};
  // Set by the hang fault (--hang-after-ms): requests that arrive from then on get no answer.
  std::atomic<bool> hung{false};

  prometheus::Gauge* running;
  prometheus::Gauge* waiting;
  prometheus::Gauge* kv_usage;
  prometheus::Counter* prompt_tokens;
  prometheus::Counter* generation_tokens;
  prometheus::Counter* prefix_hits;
  prometheus::Counter* prefix_queries;
  prometheus::Counter* success_length;
  prometheus::Counter* success_stop;
  prometheus::Histogram* ttft;
  prometheus::Histogram* itl;
  prometheus::Histogram* e2e;

 private:
  PrefillPlan StartLocked(int64_t prompt_tokens_n, const std::vector<uint64_t>& blocks) {
    PrefillPlan plan = core.StartPrefill(prompt_tokens_n, blocks);
    prompt_tokens->Increment(static_cast<double>(plan.prompt_tokens));
    if (config.timing.prefix_caching) {
      prefix_queries->Increment(static_cast<double>(plan.prompt_tokens));
      prefix_hits->Increment(static_cast<double>(plan.cached_tokens));
    }
    UpdateGaugesLocked();
    return plan;
  }

  void UpdateGaugesLocked() {
    running->Set(core.running());
    waiting->Set(core.waiting());
    kv_usage->Set(core.kv_usage());
  }

  std::mutex mu;
  bool closed = false;                            // guarded by mu
  std::mt19937_64 rng;                            // guarded by mu
  EngineCore core;                                // guarded by mu
  std::unordered_map<uint64_t, Waiter*> waiters;  // guarded by mu
};

namespace {

using Shared = EngineSim::Shared;

// Holds a request's place in the engine; ends it (freeing its slot) when destroyed.
class Slot {
 public:
  Slot(std::shared_ptr<Shared> shared, uint64_t id) : shared_(std::move(shared)), id_(id) {}
  ~Slot() { shared_->Finish(id_); }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

 private:
  std::shared_ptr<Shared> shared_;
  uint64_t id_;
};

asio::awaitable<void> SleepFor(asio::steady_timer& timer, Micros d) {
  if (d.count() <= 0) co_return;
  timer.expires_after(d);
  co_await timer.async_wait(kUseTuple);
}

asio::awaitable<void> SleepUntil(asio::steady_timer& timer, SteadyClock::time_point t) {
  if (t <= SteadyClock::now()) co_return;
  timer.expires_at(t);
  co_await timer.async_wait(kUseTuple);
}

int64_t KvBlocks(const Shared& s, const Job& job) {
  const int64_t bt = std::max(1, s.config.timing.block_tokens);
  return (job.prompt_tokens + job.output_tokens + bt - 1) / bt;
}

std::string TokenText(uint64_t seed, int i) {
  std::string_view w = kWords[(seed + static_cast<uint64_t>(i) * 7) % kWords.size()];
  return i == 0 ? std::string(w) : " " + std::string(w);
}

std::string FinishReason(const Job& job) { return job.max_tokens_given ? "length" : "stop"; }

json::object Usage(const Job& job, int completion_tokens) {
  return json::object{{"prompt_tokens", job.prompt_tokens},
                      {"completion_tokens", completion_tokens},
                      {"total_tokens", job.prompt_tokens + completion_tokens}};
}

// Applies the shared part of a generation request: sampling limits and context length.
Status ReadGenerationFields(JsonReader& r, const Shared& s, Job& job) {
  std::optional<int64_t> max_tokens = r.OptionalInt("max_tokens");
  if (std::optional<int64_t> mct = r.OptionalInt("max_completion_tokens"); mct) max_tokens = mct;
  job.stream = r.OptionalBool("stream").value_or(false);
  if (const json::object* so = r.OptionalObject("stream_options"); so != nullptr) {
    JsonReader sr(*so, r.Path("stream_options"));
    job.include_usage = sr.OptionalBool("include_usage").value_or(false);
    RETURN_IF_ERROR(LenientFinish(sr));
  }
  RETURN_IF_ERROR(LenientFinish(r));
  const TimingParams& t = s.config.timing;
  job.prompt_tokens = std::max<int64_t>(1, CountTokens(job.prompt));
  if (max_tokens && *max_tokens < 1) return InvalidArgumentError("max_tokens must be at least 1");
  // As vLLM: the requested length (before our cap) must fit the context with the prompt.
  const int64_t requested = max_tokens.value_or(0);
  if (job.prompt_tokens >= t.max_model_len || requested > t.max_model_len - job.prompt_tokens) {
    return InvalidArgumentError(fmt::format(
        "This model's maximum context length is {} tokens. However, you requested {} tokens ({} in "
        "the messages, {} in the completion). Please reduce the length of the messages or "
        "completion.",
        t.max_model_len, job.prompt_tokens + requested, job.prompt_tokens, requested));
  }
  if (max_tokens) {
    job.max_tokens_given = true;
    job.output_tokens = static_cast<int>(std::min<int64_t>(*max_tokens, t.max_tokens_cap));
  } else {
    job.output_tokens = static_cast<int>(std::max<int64_t>(
        1, std::min<int64_t>(t.default_max_tokens, t.max_model_len - job.prompt_tokens)));
  }
  return OkStatus();
}

Status CheckModel(const Shared& s, const std::optional<std::string>& model) {
  if (model && *model != s.config.model) {
    return NotFoundError("The model `" + *model + "` does not exist.");
  }
  return OkStatus();
}

Result<Job> ParseChat(const Shared& s, std::string_view body) {
  json::object storage;
  JsonReader r = JsonReader::FromBody(body, storage);
  RETURN_IF_ERROR(LenientFinish(r));
  RETURN_IF_ERROR(CheckModel(s, r.OptionalString("model")));
  Job job;
  job.chat = true;
  const json::value* messages = r.OptionalValue("messages");
  if (messages == nullptr) return InvalidArgumentError("messages is required");
  if (!messages->is_array() || messages->as_array().empty()) {
    return InvalidArgumentError("messages must be a non-empty array");
  }
  size_t i = 0;
  for (const json::value& m : messages->as_array()) {
    const std::string path = "messages[" + std::to_string(i++) + "]";
    if (!m.is_object()) return InvalidArgumentError(path + " must be an object");
    JsonReader mr(m.as_object(), path);
    std::string role = mr.String("role");
    const json::value* content = mr.OptionalValue("content");
    RETURN_IF_ERROR(LenientFinish(mr));
    // A chat template in miniature: role markers make the flattened prompt (and so the prefix
    // cache) depend on who said what.
    job.prompt += "<|" + role + "|>\n";
    if (content != nullptr) RETURN_IF_ERROR(AppendContent(*content, job.prompt, path + ".content"));
    job.prompt += "\n";
  }
  RETURN_IF_ERROR(ReadGenerationFields(r, s, job));
  return job;
}

Result<Job> ParseCompletion(const Shared& s, std::string_view body) {
  json::object storage;
  JsonReader r = JsonReader::FromBody(body, storage);
  RETURN_IF_ERROR(LenientFinish(r));
  RETURN_IF_ERROR(CheckModel(s, r.OptionalString("model")));
  Job job;
  job.chat = false;
  const json::value* prompt = r.OptionalValue("prompt");
  if (prompt == nullptr) return InvalidArgumentError("prompt is required");
  RETURN_IF_ERROR(AppendPromptInput(*prompt, job.prompt, "prompt"));
  RETURN_IF_ERROR(ReadGenerationFields(r, s, job));
  return job;
}

// The fixed parts of every chunk of one streamed response, so a token costs one small append.
struct ChunkFormat {
  std::string head;  // data: {"id":…,"choices":[{"index":0,
  std::string tail;  // ,"logprobs":null,"finish_reason":null}]…}\n\n

  ChunkFormat(const Shared& s, const Job& job, const std::string& id, int64_t created) {
    head = fmt::format(R"(data: {{"id":"{}","object":"{}","created":{},"model":{},)", id,
                       job.chat ? "chat.completion.chunk" : "text_completion", created,
                       json::serialize(json::string(s.config.model)));
    tail = R"(,"logprobs":null,"finish_reason":null}])";
    tail += job.include_usage ? R"(,"usage":null})" : "}";
    tail += "\n\n";
  }

  std::string Token(const Job& job, std::string_view text, bool with_role = false) const {
    std::string quoted = json::serialize(json::string(text));
    std::string out = head + R"("choices":[{"index":0,)";
    if (job.chat) {
      out += with_role ? R"("delta":{"role":"assistant","content":)" : R"("delta":{"content":)";
      out += quoted + "}";
    } else {
      out += R"("text":)" + quoted;
    }
    return out + tail;
  }

  std::string Final(const Job& job) const {
    std::string out = head + R"("choices":[{"index":0,)";
    out += job.chat ? R"("delta":{})" : R"("text":"")";
    out += R"(,"logprobs":null,"finish_reason":")" + FinishReason(job) + "\"}]";
    out += job.include_usage ? R"(,"usage":null})" : "}";
    return out + "\n\n";
  }

  std::string UsageChunk(const Job& job, int completion_tokens) const {
    return head + R"("choices":[],"usage":)" + json::serialize(Usage(job, completion_tokens)) +
           "}\n\n";
  }
};

// Runs one streamed generation: waits for a slot and the prefill, then writes one SSE event per
// token at the decode pace, the final chunk, the usage chunk when asked, and [DONE].
asio::awaitable<void> StreamGeneration(std::shared_ptr<Shared> s, Job job, uint64_t id,
                                       SteadyClock::time_point arrival, bool drop,
                                       http::ResponseStream& out) {
  Slot slot(s, id);
  const std::vector<uint64_t> blocks = BlockHashes(job.prompt, s->config.timing.block_tokens);
  Result<PrefillPlan> plan = co_await s->Admit(id, KvBlocks(*s, job), job.prompt_tokens, blocks);
  const std::string rid = (job.chat ? "chatcmpl-" : "cmpl-") + fmt::format("{:016x}", id);
  const ChunkFormat chunks(*s, job, rid, UnixSeconds());
  if (!plan.ok()) {
    // Headers are gone already: report the error in the stream, as vLLM does.
    json::object err{{"message", plan.status().message()},
                     {"type", std::string(http::OpenAiErrorType(plan.status().code()))},
                     {"code", static_cast<int>(http::HttpStatusFor(plan.status().code()))}};
    const std::string event = http::FormatSse(json::serialize(json::object{{"error", err}}));
    co_await out.Write(event);
    co_await out.Write(kDone);
    co_return;
  }
  asio::steady_timer timer(co_await asio::this_coro::executor);
  co_await SleepFor(timer, plan->prefill);
  const uint64_t seed = HashText(job.prompt);
  auto last = SteadyClock::now();
  s->ttft->Observe(Seconds(last - arrival));
  std::string first = job.chat ? chunks.Token(job, "", /*with_role=*/true) : std::string();
  first += chunks.Token(job, TokenText(seed, 0));
  s->generation_tokens->Increment();
  if (!co_await out.Write(first)) co_return;
  auto deadline = last;
  const int drop_at = drop ? std::max(1, job.output_tokens / 2) : -1;
  for (int i = 1; i < job.output_tokens; ++i) {
    if (out.stopping()) co_return;
    if (i == drop_at) {
      // Caught by the server, which then closes the connection without the terminating chunk:
      // to the client this is an engine that died mid-stream.
      throw std::runtime_error("simulated connection drop (--drop-rate)");
    }
    deadline += s->NextDecodeStep();
    co_await SleepUntil(timer, deadline);
    const auto now = SteadyClock::now();
    s->itl->Observe(Seconds(now - last));
    last = now;
    s->generation_tokens->Increment();
    if (!co_await out.Write(chunks.Token(job, TokenText(seed, i)))) co_return;
  }
  std::string tail = chunks.Final(job);
  if (job.include_usage) tail += chunks.UsageChunk(job, job.output_tokens);
  tail += kDone;
  s->e2e->Observe(Seconds(SteadyClock::now() - arrival));
  (job.max_tokens_given ? s->success_length : s->success_stop)->Increment();
  co_await out.Write(tail);
}

// Runs one generation to the end and answers it whole.
asio::awaitable<http::Response> WholeGeneration(std::shared_ptr<Shared> s, Job job, uint64_t id,
                                                SteadyClock::time_point arrival) {
  Slot slot(s, id);
  const std::vector<uint64_t> blocks = BlockHashes(job.prompt, s->config.timing.block_tokens);
  Result<PrefillPlan> plan = co_await s->Admit(id, KvBlocks(*s, job), job.prompt_tokens, blocks);
  if (!plan.ok()) co_return OpenAiError(plan.status());
  asio::steady_timer timer(co_await asio::this_coro::executor);
  co_await SleepFor(timer, plan->prefill);
  auto last = SteadyClock::now();
  s->ttft->Observe(Seconds(last - arrival));
  const uint64_t seed = HashText(job.prompt);
  std::string text = TokenText(seed, 0);
  auto deadline = last;
  for (int i = 1; i < job.output_tokens; ++i) {
    deadline += s->NextDecodeStep();
    co_await SleepUntil(timer, deadline);
    const auto now = SteadyClock::now();
    s->itl->Observe(Seconds(now - last));
    last = now;
    text += TokenText(seed, i);
  }
  s->generation_tokens->Increment(job.output_tokens);
  s->e2e->Observe(Seconds(SteadyClock::now() - arrival));
  (job.max_tokens_given ? s->success_length : s->success_stop)->Increment();
  const std::string rid = (job.chat ? "chatcmpl-" : "cmpl-") + fmt::format("{:016x}", id);
  json::object choice{{"index", 0}, {"logprobs", nullptr}, {"finish_reason", FinishReason(job)}};
  if (job.chat) {
    choice["message"] = json::object{{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  json::object body{{"id", rid},
                    {"object", job.chat ? "chat.completion" : "text_completion"},
                    {"created", UnixSeconds()},
                    {"model", s->config.model},
                    {"choices", json::array{std::move(choice)}},
                    {"usage", Usage(job, job.output_tokens)}};
  co_return http::Response::Json(status::ok, body);
}

asio::awaitable<void> InjectedDelay(const Shared& s) {
  if (s.config.failures.delay_ms <= 0) co_return;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(Micros(static_cast<int64_t>(s.config.failures.delay_ms * 1000)));
  co_await timer.async_wait(kUseTuple);
}

// The hang fault: parks a request for good once the engine is hung (/health too when the scope is
// "all"). The connection stays open and silent, as with a deadlocked engine.
asio::awaitable<void> HangIfHung(const Shared& s, bool health) {
  if (!s.hung.load() || (health && s.config.failures.hang_scope != "all")) co_return;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_at(asio::steady_timer::time_point::max());
  co_await timer.async_wait(kUseTuple);
}

asio::awaitable<http::Response> HandleGeneration(std::shared_ptr<Shared> s,
                                                 http::RequestContext& ctx, bool chat) {
  co_await HangIfHung(*s, /*health=*/false);
  const auto arrival = SteadyClock::now();
  Result<Job> job = chat ? ParseChat(*s, ctx.req.body()) : ParseCompletion(*s, ctx.req.body());
  if (!job.ok()) co_return OpenAiError(job.status());
  co_await InjectedDelay(*s);
  if (s->Draw(s->config.failures.error_rate)) {
    co_return OpenAiError(InternalError("simulated engine failure (--error-rate)"));
  }
  const uint64_t id = s->next_id++;
  if (!job->stream) co_return co_await WholeGeneration(s, std::move(*job), id, arrival);
  const bool drop = s->Draw(s->config.failures.drop_rate);
  co_return http::Response::Stream("text/event-stream", [s, job = std::move(*job), id, arrival,
                                                         drop](http::ResponseStream& out) {
    return StreamGeneration(s, job, id, arrival, drop, out);
  });
}

// Deterministic unit vector of `dim` floats from the hash of `text`.
std::vector<float> EmbeddingOf(std::string_view text, int dim) {
  uint64_t state = HashText(text);
  std::vector<float> v(static_cast<size_t>(dim));
  double norm = 0;
  for (float& x : v) {
    x = static_cast<float>(static_cast<double>(SplitMix64(state) >> 11) * 0x1.0p-53 * 2 - 1);
    norm += static_cast<double>(x) * x;
  }
  norm = std::sqrt(norm);
  if (norm > 0) {
    for (float& x : v) x = static_cast<float>(x / norm);
  }
  return v;
}

asio::awaitable<http::Response> HandleEmbeddings(std::shared_ptr<Shared> s,
                                                 http::RequestContext& ctx) {
  co_await HangIfHung(*s, /*health=*/false);
  const auto arrival = SteadyClock::now();
  json::object storage;
  JsonReader r = JsonReader::FromBody(ctx.req.body(), storage);
  if (Status st = LenientFinish(r); !st.ok()) co_return OpenAiError(st);
  if (Status st = CheckModel(*s, r.OptionalString("model")); !st.ok()) co_return OpenAiError(st);
  const json::value* input = r.OptionalValue("input");
  std::optional<int64_t> dims = r.OptionalInt("dimensions");
  std::string format = r.OptionalString("encoding_format").value_or("float");
  if (Status st = LenientFinish(r); !st.ok()) co_return OpenAiError(st);
  if (input == nullptr) co_return OpenAiError(InvalidArgumentError("input is required"));
  if (format != "float" && format != "base64") {
    co_return OpenAiError(InvalidArgumentError("encoding_format must be 'float' or 'base64'"));
  }
  const int dim = dims ? static_cast<int>(*dims) : s->config.embedding_dim;
  if (dims && (*dims < 1 || *dims > s->config.embedding_dim)) {
    co_return OpenAiError(InvalidArgumentError("dimensions must be in [1, " +
                                               std::to_string(s->config.embedding_dim) + "]"));
  }
  // One entry per input: a string, a token array, or each element of an array of either.
  std::vector<std::string> texts;
  auto add = [&](const json::value& v) -> Status {
    std::string text;
    RETURN_IF_ERROR(AppendPromptInput(v, text, "input", v.is_array() ? 1 : 0));
    texts.push_back(std::move(text));
    return OkStatus();
  };
  Status parsed;
  if (input->is_array() && !input->as_array().empty() &&
      (input->as_array()[0].is_string() || input->as_array()[0].is_array())) {
    for (const json::value& e : input->as_array()) {
      if (parsed = add(e); !parsed.ok()) break;
    }
  } else {
    parsed = add(*input);
  }
  if (!parsed.ok()) co_return OpenAiError(parsed);
  co_await InjectedDelay(*s);
  if (s->Draw(s->config.failures.error_rate)) {
    co_return OpenAiError(InternalError("simulated engine failure (--error-rate)"));
  }

  // An embedding is a prefill without decode: it takes a slot and its prefill time.
  std::string all;
  for (const std::string& t : texts) all += t;
  Job job;
  job.prompt_tokens = std::max<int64_t>(1, CountTokens(all));
  const uint64_t id = s->next_id++;
  {
    Slot slot(s, id);
    Result<PrefillPlan> plan = co_await s->Admit(id, KvBlocks(*s, job), job.prompt_tokens,
                                                 BlockHashes(all, s->config.timing.block_tokens));
    if (!plan.ok()) co_return OpenAiError(plan.status());
    asio::steady_timer timer(co_await asio::this_coro::executor);
    co_await SleepFor(timer, plan->prefill);
  }
  s->e2e->Observe(Seconds(SteadyClock::now() - arrival));

  json::array data;
  for (size_t i = 0; i < texts.size(); ++i) {
    std::vector<float> v = EmbeddingOf(texts[i], dim);
    json::object item{{"object", "embedding"}, {"index", i}};
    if (format == "base64") {
      item["embedding"] = Base64(v.data(), v.size() * sizeof(float));
    } else {
      json::array a;
      a.reserve(v.size());
      for (float x : v) a.emplace_back(static_cast<double>(x));
      item["embedding"] = std::move(a);
    }
    data.emplace_back(std::move(item));
  }
  json::object body{{"object", "list"},
                    {"data", std::move(data)},
                    {"model", s->config.model},
                    {"usage", json::object{{"prompt_tokens", job.prompt_tokens},
                                           {"total_tokens", job.prompt_tokens}}}};
  co_return http::Response::Json(status::ok, body);
}

// Whether `ctx` carries `key` as its bearer token (compared in constant time).
bool HasKey(const http::RequestContext& ctx, const std::string& key) {
  auto auth = ctx.req.find(http::bhttp::field::authorization);
  if (auth == ctx.req.end()) return false;
  constexpr std::string_view kBearer = "Bearer ";
  const std::string_view v = auth->value();
  return v.starts_with(kBearer) && ConstantTimeEquals(v.substr(kBearer.size()), key);
}

// `handler` behind the engine's secret, as llama.cpp's and vLLM's servers guard theirs: a request
// without it is answered 401 before anything else (a hung engine still refuses it).
http::Handler RequireKey(const EngineSimConfig& config, http::Handler handler) {
  if (config.api_key.empty()) return handler;
  return [key = config.api_key, handler = std::move(handler)](
             http::RequestContext& ctx) -> asio::awaitable<http::Response> {
    if (!HasKey(ctx, key)) {
      co_return OpenAiError(UnauthenticatedError(
          "invalid API key: this engine requires its secret as 'Authorization: Bearer <key>'"));
    }
    co_return co_await handler(ctx);
  };
}

}  // namespace

EngineSim::EngineSim(asio::io_context& ioc, EngineSimConfig config)
    : ioc_(ioc), config_(std::move(config)), shared_(std::make_shared<Shared>(config_, registry_)) {
  AddRoutes();
}

EngineSim::~EngineSim() {
  Stop();
  shared_->Close();
}

void EngineSim::AddRoutes() {
  std::shared_ptr<Shared> s = shared_;
  // Every endpoint but /health requires the engine's secret, when it has one.
  auto add = [this](verb method, std::string pattern, http::Handler handler) {
    router_.Add(method, std::move(pattern), RequireKey(config_, std::move(handler)));
  };
  add(verb::post, "/v1/chat/completions",
      [s](http::RequestContext& ctx) { return HandleGeneration(s, ctx, /*chat=*/true); });
  add(verb::post, "/v1/completions",
      [s](http::RequestContext& ctx) { return HandleGeneration(s, ctx, /*chat=*/false); });
  add(verb::post, "/v1/embeddings",
      [s](http::RequestContext& ctx) { return HandleEmbeddings(s, ctx); });
  add(verb::get, "/v1/models", [this, s](http::RequestContext&) -> asio::awaitable<http::Response> {
    co_await HangIfHung(*s, /*health=*/false);
    json::object model{{"id", config_.model},
                       {"object", "model"},
                       {"created", UnixSeconds()},
                       {"owned_by", "segma-engine-sim"},
                       {"root", config_.model},
                       {"parent", nullptr},
                       {"max_model_len", config_.timing.max_model_len}};
    co_return http::Response::Json(status::ok,
                                   json::object{{"object", "list"}, {"data", json::array{model}}});
  });
  router_.Add(verb::get, "/health", [s](http::RequestContext&) -> asio::awaitable<http::Response> {
    co_await HangIfHung(*s, /*health=*/true);
    co_return http::Response::Text(status::ok, "");
  });
  add(verb::get, "/metrics", [this, s](http::RequestContext&) -> asio::awaitable<http::Response> {
    co_await HangIfHung(*s, /*health=*/false);
    co_return http::Response::Text(status::ok, registry_.Serialize(),
                                   "text/plain; version=0.0.4; charset=utf-8");
  });
}

Result<uint16_t> EngineSim::Start() {
  http::ServerOptions opts;
  opts.name = "engine-sim";
  opts.access_log = config_.access_log;
  // Long generations are legitimate: a stalled *write* still ends after write_timeout.
  opts.idle_timeout = std::chrono::seconds(300);
  server_ = std::make_unique<http::HttpServer>(ioc_, router_, registry_, opts);
  Result<uint16_t> port = server_->Listen(config_.address, config_.port);
  if (port.ok() && config_.failures.hang_after_ms >= 0) {
    hang_timer_ = std::make_unique<asio::steady_timer>(
        ioc_, Micros(static_cast<int64_t>(config_.failures.hang_after_ms * 1000)));
    hang_timer_->async_wait([s = shared_](boost::system::error_code ec) {
      if (ec) return;
      s->hung = true;
      Logger("engine-sim")
          ->warn("hang fault: no request ({}) is answered from now on",
                 s->config.failures.hang_scope == "all" ? "/health included" : "but /health");
    });
  }
  return port;
}

void EngineSim::Stop() {
  if (hang_timer_) hang_timer_->cancel();
  if (server_) server_->Stop();
}

}  // namespace segma::sim
