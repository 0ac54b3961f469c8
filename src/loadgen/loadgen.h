#pragma once

// The project's own load generator for OpenAI-compatible endpoints (`segma bench load`).
//
// Each virtual user is one keep-alive HTTP/1.1 connection that sends a request, reads the answer
// to the end and sends the next. Streaming answers are read as they arrive, so that time to first
// token and the gaps between tokens are measured where the client sees them. Every prompt is
// distinct (the request's sequence number and user are in it) unless shared prefixes are asked
// for, so that an engine's prefix cache does not flatter the numbers.
//
//   loadgen::Options o;
//   o.url = "http://127.0.0.1:8080";
//   o.model = "llama-8b";
//   o.concurrency = 8;
//   o.requests = 64;
//   ASSIGN_OR_RETURN(loadgen::Report r, loadgen::Run(o));
//   std::cout << loadgen::FormatReport(r);

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <boost/json/object.hpp>

#include "common/status.h"

namespace segma::loadgen {

enum class Endpoint { kChat, kCompletions, kEmbeddings };

struct Options {
  std::string url;  // http://host:port; the endpoint's path is appended
  Endpoint endpoint = Endpoint::kChat;
  std::string api_key;  // sent as "Authorization: Bearer …" when not empty
  std::vector<std::pair<std::string, std::string>> headers;  // extra request headers
  std::string model;
  int concurrency = 1;
  // Stop after this many recorded requests (0: run for `duration_s`).
  int64_t requests = 0;
  double duration_s = 10;
  // Requests sent first and not recorded (connections opened, caches and pools warm).
  int64_t warmup_requests = 0;
  bool stream = true;
  int max_tokens = 16;
  bool ignore_eos = false;  // llama.cpp: generate max_tokens even when EOS comes first
  int prompt_words = 32;    // distinct words after the shared prefix
  // When > 0: every prompt starts with one of `prefix_groups` shared prefixes of `prefix_words`
  // words (prefix-cache experiments); the group is drawn per request from `seed`.
  int prefix_groups = 0;
  int prefix_words = 0;
  int threads = 1;  // I/O threads of the generator
  double request_timeout_s = 600;
  double stall_threshold_s = 1.0;  // a gap between two chunks longer than this is a stall
  uint64_t seed = 1;
  // When set, request `seq` carries "x-request-id: <prefix><seq>" (a gateway uses it as the
  // request's id, e.g. in usage records) and the report lists the answered sequence numbers.
  std::string request_id_prefix;
};

// Percentiles in seconds (nearest rank); all zero when there was no sample.
struct Distribution {
  int64_t count = 0;
  double min = 0, mean = 0, p50 = 0, p90 = 0, p95 = 0, p99 = 0, max = 0;
};

struct Report {
  Options options;
  int64_t requests = 0;                      // recorded requests
  int64_t ok = 0;                            // 2xx answered to the end
  int64_t errors = 0;                        // transport errors and non-2xx
  std::map<std::string, int64_t> by_status;  // "200", "429", "connect", "timeout", …
  double wall_s = 0;  // first recorded request sent → last recorded answer read
  double requests_per_s = 0;
  Distribution latency;  // end to end
  Distribution ttft;     // first token event (streaming) or the whole answer
  // The same per answered request, in seconds and in the order the answers came: pooling runs
  // that alternate between peers needs the values, not their percentiles (bench/gateway).
  std::vector<double> latency_values;
  std::vector<double> ttft_values;
  Distribution itl;                          // gaps between token events
  Distribution tokens_per_s_per_user;        // per request: (completion tokens − 1) / decode time
  int64_t completion_tokens = 0;             // from usage when reported, else token events
  int64_t prompt_tokens = 0;                 // from usage when reported
  std::vector<int64_t> ok_sequence_numbers;  // with request_id_prefix: the requests answered 2xx
  double output_tokens_per_s = 0;            // completion_tokens / wall_s
  int64_t token_event_mismatch = 0;  // streams whose token events ≠ usage.completion_tokens
  int64_t missing_done = 0;          // streams that ended without `data: [DONE]`
  int64_t stalls = 0;                // gaps above stall_threshold_s
  double max_gap_s = 0;
};

// Runs the load and blocks until it is done. Fails only on bad options (unparsable URL, …);
// request failures are counted in the report.
Result<Report> Run(const Options& options);

// A few readable lines; all times in ms.
std::string FormatReport(const Report& report);
boost::json::object ReportToJson(const Report& report);

// Nearest-rank summary of `values` (sorted in place).
Distribution Summarize(std::vector<double>& values);

// The prompt of request `seq` (exposed for tests): distinct per seq, with the shared prefix first.
std::string PromptFor(const Options& options, int64_t seq);

}  // namespace segma::loadgen
