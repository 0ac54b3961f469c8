#include "loadgen/loadgen.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>
#include <fmt/format.h>

#include "common/openai_chunk.h"
#include "common/random.h"

namespace segma::loadgen {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

constexpr std::string_view kWords[] = {
    "ledger",  "budget",   "audit",   "revenue", "treasury", "invoice", "balance",  "account",
    "fiscal",  "payment",  "reserve", "credit",  "deposit",  "asset",   "tariff",   "customs",
    "pension", "grant",    "levy",    "bond",    "yield",    "summary", "quarter",  "region",
    "report",  "forecast", "policy",  "council", "statute",  "margin",  "transfer", "expense"};

void AppendWords(std::string& out, uint64_t state, int n) {
  for (int i = 0; i < n; ++i) {
    out += kWords[SplitMix64(state) % std::size(kWords)];
    out += ' ';
  }
}

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string_view PathFor(Endpoint e) {
  switch (e) {
    case Endpoint::kChat:
      return "/v1/chat/completions";
    case Endpoint::kCompletions:
      return "/v1/completions";
    case Endpoint::kEmbeddings:
      return "/v1/embeddings";
  }
  return "/v1/chat/completions";
}

std::string BodyFor(const Options& o, int64_t seq) {
  boost::json::object body;
  body["model"] = o.model;
  const std::string prompt = PromptFor(o, seq);
  switch (o.endpoint) {
    case Endpoint::kChat: {
      boost::json::array messages;
      messages.push_back(boost::json::object{{"role", "user"}, {"content", prompt}});
      body["messages"] = std::move(messages);
      break;
    }
    case Endpoint::kCompletions:
      body["prompt"] = prompt;
      break;
    case Endpoint::kEmbeddings:
      body["input"] = prompt;
      return boost::json::serialize(body);
  }
  body["max_tokens"] = o.max_tokens;
  body["temperature"] = 0;
  if (o.ignore_eos) body["ignore_eos"] = true;
  if (o.stream) {
    body["stream"] = true;
    body["stream_options"] = boost::json::object{{"include_usage", true}};
  }
  return boost::json::serialize(body);
}

// Reads the integer after `"key":` in `text`, or -1.
int64_t FindInt(std::string_view text, std::string_view key) {
  const size_t at = text.find(key);
  if (at == std::string_view::npos) return -1;
  size_t i = at + key.size();
  while (i < text.size() && (text[i] == ' ' || text[i] == ':')) ++i;
  int64_t v = 0;
  bool any = false;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    v = v * 10 + (text[i++] - '0');
    any = true;
  }
  return any ? v : -1;
}

// What one request measured.
struct Sample {
  bool ok = false;
  std::string status;  // "200", "connect", …
  double latency = 0;
  double ttft = -1;
  double first_token = -1, last_token = -1;  // since the request was sent
  int64_t token_events = 0;
  int64_t usage_tokens = -1;
  int64_t usage_prompt_tokens = -1;
  int64_t seq = 0;
  bool saw_done = false;
  bool stream_error = false;  // an SSE event carried {"error": …} (the engine gave up mid-stream)
  std::vector<double> gaps;
};

// Incremental SSE reader: splits the body into events and notes token times.
class StreamScanner {
 public:
  explicit StreamScanner(Sample& s) : s_(s) {}

  void Feed(std::string_view bytes, double t) {
    pending_.append(bytes);
    size_t start = 0;
    for (;;) {
      const size_t end = pending_.find("\n\n", start);
      if (end == std::string::npos) break;
      Event(std::string_view(pending_).substr(start, end - start), t);
      start = end + 2;
    }
    pending_.erase(0, start);
  }

 private:
  void Event(std::string_view event, double t) {
    if (!event.starts_with("data:")) return;
    std::string_view data = event.substr(5);
    if (data.starts_with(' ')) data.remove_prefix(1);
    if (data == "[DONE]") {
      s_.saw_done = true;
      return;
    }
    if (data.starts_with("{\"error\"")) {
      s_.stream_error = true;
      return;
    }
    if (const int64_t n = FindInt(data, "\"completion_tokens\""); n >= 0) s_.usage_tokens = n;
    if (const int64_t n = FindInt(data, "\"prompt_tokens\""); n >= 0) s_.usage_prompt_tokens = n;
    if (!CarriesGeneratedText(data)) return;
    ++s_.token_events;
    if (s_.first_token < 0) {
      s_.first_token = t;
    } else {
      s_.gaps.push_back(t - s_.last_token);
    }
    s_.last_token = t;
  }

  Sample& s_;
  std::string pending_;
};

class Runner {
 public:
  explicit Runner(const Options& o, tcp::endpoint ep, std::string host)
      : o_(o), ep_(std::move(ep)), host_(std::move(host)) {}

  Report Run() {
    asio::io_context io(o_.threads);
    start_ = SteadyClock::now();
    end_ = start_ + std::chrono::duration_cast<SteadyClock::duration>(
                        std::chrono::duration<double>(o_.duration_s));
    for (int u = 0; u < o_.concurrency; ++u) {
      asio::co_spawn(io, User(), asio::detached);
    }
    std::vector<std::thread> threads;
    for (int i = 1; i < o_.threads; ++i) threads.emplace_back([&io] { io.run(); });
    io.run();
    for (std::thread& t : threads) t.join();
    return Summarize();
  }

 private:
  // Claims the next request number; false when the run is over.
  bool Claim(int64_t& seq) {
    seq = next_.fetch_add(1);
    if (o_.requests > 0) return seq < o_.warmup_requests + o_.requests;
    return SteadyClock::now() < end_;
  }

  bool Recorded(int64_t seq) const { return seq >= o_.warmup_requests; }

  asio::awaitable<void> User() {
    beast::tcp_stream stream(co_await asio::this_coro::executor);
    beast::flat_buffer buffer;
    bool connected = false;
    const std::string_view path = PathFor(o_.endpoint);
    std::vector<char> chunk(64 * 1024);
    int64_t seq = 0;
    while (Claim(seq)) {
      Sample s;
      s.seq = seq;
      const std::string body = BodyFor(o_, seq);
      const SteadyClock::time_point t0 = SteadyClock::now();
      const bool recorded = Recorded(seq);
      if (recorded) MarkFirstSend(t0);
      stream.expires_after(std::chrono::duration_cast<SteadyClock::duration>(
          std::chrono::duration<double>(o_.request_timeout_s)));
      beast::error_code ec;
      http::request<http::string_body> req{http::verb::post, path, 11};
      req.set(http::field::host, host_);
      req.set(http::field::content_type, "application/json");
      if (!o_.api_key.empty()) req.set(http::field::authorization, "Bearer " + o_.api_key);
      for (const auto& [name, value] : o_.headers) req.set(name, value);
      if (!o_.request_id_prefix.empty()) {
        req.set("x-request-id", o_.request_id_prefix + std::to_string(seq));
      }
      req.body() = body;
      req.prepare_payload();
      std::optional<http::response_parser<http::buffer_body>> parser;
      for (int attempt = 0;; ++attempt) {
        parser.emplace();
        parser->body_limit(boost::none);
        const bool reused = connected;
        if (!connected) {
          co_await stream.async_connect(ep_, asio::redirect_error(asio::use_awaitable, ec));
          if (ec) break;
          stream.socket().set_option(tcp::no_delay(true));
          connected = true;
        }
        co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
        if (!ec) {
          co_await http::async_read_header(stream, buffer, *parser,
                                           asio::redirect_error(asio::use_awaitable, ec));
        }
        if (!ec || !reused || attempt > 0) break;
        // The server closed a kept-alive connection between two requests (llama.cpp does after
        // a stream): open a new one and send again, as HTTP clients do.
        beast::error_code ignored;
        stream.socket().close(ignored);
        buffer.clear();
        connected = false;
        ec = {};
      }
      if (ec && !connected) {
        s.status = "connect";
        Finish(std::move(s), t0, recorded);
        asio::steady_timer wait(stream.get_executor(), std::chrono::milliseconds(50));
        co_await wait.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      StreamScanner scanner(s);
      std::string whole;  // non-streaming answers, for usage
      while (!ec && !parser->is_done()) {
        parser->get().body().data = chunk.data();
        parser->get().body().size = chunk.size();
        co_await http::async_read_some(stream, buffer, *parser,
                                       asio::redirect_error(asio::use_awaitable, ec));
        if (ec == http::error::need_buffer) ec = {};
        const size_t n = chunk.size() - parser->get().body().size;
        if (n == 0) continue;
        const std::string_view got(chunk.data(), n);
        if (o_.stream) {
          scanner.Feed(got, Seconds(SteadyClock::now() - t0));
        } else {
          whole.append(got);
        }
      }
      if (ec) {
        s.status = ec == beast::error::timeout ? "timeout" : "read";
        stream.socket().close(ec);
        buffer.clear();
        connected = false;
        Finish(std::move(s), t0, recorded);
        continue;
      }
      const unsigned code = parser->get().result_int();
      s.status = s.stream_error ? "stream-error" : std::to_string(code);
      s.ok = code >= 200 && code < 300 && !s.stream_error;
      if (!o_.stream) {
        s.usage_tokens = FindInt(whole, "\"completion_tokens\"");
        s.usage_prompt_tokens = FindInt(whole, "\"prompt_tokens\"");
      }
      if (!parser->get().keep_alive()) {
        stream.socket().shutdown(tcp::socket::shutdown_both, ec);
        stream.socket().close(ec);
        buffer.clear();
        connected = false;
      }
      Finish(std::move(s), t0, recorded);
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  void MarkFirstSend(SteadyClock::time_point t) {
    std::lock_guard lock(mu_);
    if (!first_send_ || t < *first_send_) first_send_ = t;
  }

  void Finish(Sample s, SteadyClock::time_point t0, bool recorded) {
    const SteadyClock::time_point now = SteadyClock::now();
    s.latency = Seconds(now - t0);
    if (!recorded) return;
    std::lock_guard lock(mu_);
    last_done_ = std::max(last_done_, now);
    samples_.push_back(std::move(s));
  }

  Report Summarize() {
    Report r;
    r.options = o_;
    std::vector<double> latency, ttft, itl, rate;
    for (Sample& s : samples_) {
      ++r.requests;
      ++r.by_status[s.status];
      if (!s.ok) {
        ++r.errors;
        continue;
      }
      ++r.ok;
      if (!o_.request_id_prefix.empty()) r.ok_sequence_numbers.push_back(s.seq);
      latency.push_back(s.latency);
      if (o_.endpoint == Endpoint::kEmbeddings) continue;
      const int64_t tokens = s.usage_tokens >= 0 ? s.usage_tokens : s.token_events;
      r.completion_tokens += tokens;
      r.prompt_tokens += std::max<int64_t>(0, s.usage_prompt_tokens);
      if (!o_.stream) {
        ttft.push_back(s.latency);
        continue;
      }
      if (!s.saw_done) ++r.missing_done;
      if (s.usage_tokens >= 0 && s.usage_tokens != s.token_events) ++r.token_event_mismatch;
      if (s.first_token >= 0) ttft.push_back(s.first_token);
      for (double g : s.gaps) {
        itl.push_back(g);
        r.max_gap_s = std::max(r.max_gap_s, g);
        if (g > o_.stall_threshold_s) ++r.stalls;
      }
      if (tokens > 1 && s.last_token > s.first_token) {
        rate.push_back(static_cast<double>(tokens - 1) / (s.last_token - s.first_token));
      }
    }
    if (first_send_) r.wall_s = Seconds(last_done_ - *first_send_);
    if (r.wall_s > 0) {
      r.requests_per_s = static_cast<double>(r.ok) / r.wall_s;
      r.output_tokens_per_s = static_cast<double>(r.completion_tokens) / r.wall_s;
    }
    r.latency_values = latency;
    r.ttft_values = ttft;
    r.latency = loadgen::Summarize(latency);
    r.ttft = loadgen::Summarize(ttft);
    r.itl = loadgen::Summarize(itl);
    r.tokens_per_s_per_user = loadgen::Summarize(rate);
    return r;
  }

  const Options& o_;
  const tcp::endpoint ep_;
  const std::string host_;
  SteadyClock::time_point start_, end_;
  std::atomic<int64_t> next_{0};
  std::mutex mu_;
  std::optional<SteadyClock::time_point> first_send_;
  SteadyClock::time_point last_done_{};
  std::vector<Sample> samples_;
};

boost::json::object DistributionToJson(const Distribution& d, double scale) {
  return {{"count", d.count},     {"min", d.min * scale}, {"mean", d.mean * scale},
          {"p50", d.p50 * scale}, {"p90", d.p90 * scale}, {"p95", d.p95 * scale},
          {"p99", d.p99 * scale}, {"max", d.max * scale}};
}

std::string_view EndpointName(Endpoint e) { return PathFor(e).substr(4); }

}  // namespace

Distribution Summarize(std::vector<double>& values) {
  Distribution d;
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  d.count = static_cast<int64_t>(values.size());
  double sum = 0;
  for (double v : values) sum += v;
  d.mean = sum / static_cast<double>(values.size());
  auto rank = [&](double q) {
    const size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size())));
    return values[std::clamp<size_t>(i, 1, values.size()) - 1];
  };
  d.p50 = rank(0.50);
  d.p90 = rank(0.90);
  d.p95 = rank(0.95);
  d.p99 = rank(0.99);
  d.min = values.front();
  d.max = values.back();
  return d;
}

std::string PromptFor(const Options& o, int64_t seq) {
  std::string prompt;
  uint64_t state = o.seed * 0x2545f4914f6cdd1dULL + static_cast<uint64_t>(seq);
  if (o.prefix_groups > 0 && o.prefix_words > 0) {
    const uint64_t group = SplitMix64(state) % static_cast<uint64_t>(o.prefix_groups);
    prompt += fmt::format("Context {}: ", group);
    AppendWords(prompt, o.seed ^ (group * 0x9e3779b97f4a7c15ULL), o.prefix_words);
  }
  prompt += fmt::format("Request {}: ", seq);
  AppendWords(prompt, state, o.prompt_words);
  return prompt;
}

Result<Report> Run(const Options& o) {
  if (o.concurrency < 1 || o.concurrency > 100'000) {
    return InvalidArgumentError("concurrency must be in [1, 100000]");
  }
  if (o.threads < 1 || o.threads > 256) return InvalidArgumentError("threads must be in [1, 256]");
  if (o.requests <= 0 && !(o.duration_s > 0)) {
    return InvalidArgumentError("give a number of requests or a positive duration");
  }
  if (o.model.empty()) return InvalidArgumentError("model is required");
  boost::system::result<boost::urls::url_view> url = boost::urls::parse_uri(o.url);
  if (!url || url->scheme() != "http" || url->host().empty()) {
    return InvalidArgumentError(fmt::format("'{}' is not an http://host:port URL", o.url));
  }
  const std::string host(url->host());
  const std::string port = url->has_port() ? std::string(url->port()) : "80";
  asio::io_context io;
  tcp::resolver resolver(io);
  beast::error_code ec;
  const tcp::resolver::results_type results = resolver.resolve(host, port, ec);
  if (ec || results.empty()) {
    return UnavailableError(fmt::format("cannot resolve {}: {}", host, ec.message()));
  }
  Runner runner(o, results.begin()->endpoint(), host + ":" + port);
  return runner.Run();
}

std::string FormatReport(const Report& r) {
  const Options& o = r.options;
  std::string out = fmt::format(
      "{} {} c={} stream={} max_tokens={}: {} requests, {} ok, {} errors in {:.2f} s "
      "({:.1f} req/s)\n",
      o.url, EndpointName(o.endpoint), o.concurrency, o.stream, o.max_tokens, r.requests, r.ok,
      r.errors, r.wall_s, r.requests_per_s);
  auto line = [&](std::string_view name, const Distribution& d) {
    out += fmt::format("  {:<12} p50 {:.3f}  p90 {:.3f}  p95 {:.3f}  p99 {:.3f}  max {:.3f} ms\n",
                       name, d.p50 * 1e3, d.p90 * 1e3, d.p95 * 1e3, d.p99 * 1e3, d.max * 1e3);
  };
  line("latency", r.latency);
  if (o.endpoint != Endpoint::kEmbeddings) {
    line("ttft", r.ttft);
    if (o.stream) line("itl", r.itl);
    out += fmt::format(
        "  tokens: {} completion, {:.1f} tok/s total, per user p50 {:.1f} mean {:.1f} min {:.1f} "
        "tok/s\n",
        r.completion_tokens, r.output_tokens_per_s, r.tokens_per_s_per_user.p50,
        r.tokens_per_s_per_user.mean, r.tokens_per_s_per_user.min);
  }
  if (o.stream) {
    out += fmt::format(
        "  streams: {} without [DONE], {} token/usage mismatches, {} stalls > {} s, "
        "max gap {:.1f} ms\n",
        r.missing_done, r.token_event_mismatch, r.stalls, o.stall_threshold_s, r.max_gap_s * 1e3);
  }
  if (r.errors > 0) {
    out += "  status:";
    for (const auto& [status, n] : r.by_status) out += fmt::format(" {}={}", status, n);
    out += '\n';
  }
  return out;
}

boost::json::object ReportToJson(const Report& r) {
  const Options& o = r.options;
  boost::json::object status;
  for (const auto& [k, n] : r.by_status) status[k] = n;
  return {
      {"url", o.url},
      {"endpoint", EndpointName(o.endpoint)},
      {"concurrency", o.concurrency},
      {"stream", o.stream},
      {"max_tokens", o.max_tokens},
      {"prompt_words", o.prompt_words},
      {"requests", r.requests},
      {"ok", r.ok},
      {"errors", r.errors},
      {"by_status", std::move(status)},
      {"wall_s", r.wall_s},
      {"requests_per_s", r.requests_per_s},
      {"latency_ms", DistributionToJson(r.latency, 1e3)},
      {"ttft_ms", DistributionToJson(r.ttft, 1e3)},
      {"itl_ms", DistributionToJson(r.itl, 1e3)},
      {"tokens_per_s_per_user", DistributionToJson(r.tokens_per_s_per_user, 1)},
      {"completion_tokens", r.completion_tokens},
      {"output_tokens_per_s", r.output_tokens_per_s},
      {"token_event_mismatch", r.token_event_mismatch},
      {"missing_done", r.missing_done},
      {"stalls", r.stalls},
      {"max_gap_ms", r.max_gap_s * 1e3},
  };
}

}  // namespace segma::loadgen
