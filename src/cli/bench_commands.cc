#include "cli/bench_commands.h"

#include <cstdlib>
#include <fstream>
#include <iostream>

#include <boost/json/serialize.hpp>

#include "loadgen/loadgen.h"

namespace segma::cli {
namespace {

struct LoadFlags {
  loadgen::Options options;
  std::string endpoint = "chat";
  bool no_stream = false;
  std::string json_path;
  std::string samples_path;
  bool fail_on_error = false;
  std::vector<std::string> headers;  // "Name: value"
};

int RunLoad(LoadFlags& f) {
  loadgen::Options& o = f.options;
  for (const std::string& h : f.headers) {
    const size_t colon = h.find(':');
    if (colon == std::string::npos || colon == 0) {
      std::cerr << "segma bench load: --header wants 'Name: value', not '" << h << "'\n";
      return 2;
    }
    const size_t start = h.find_first_not_of(' ', colon + 1);
    o.headers.emplace_back(h.substr(0, colon),
                           start == std::string::npos ? std::string() : h.substr(start));
  }
  if (f.endpoint == "chat") {
    o.endpoint = loadgen::Endpoint::kChat;
  } else if (f.endpoint == "completions") {
    o.endpoint = loadgen::Endpoint::kCompletions;
  } else {
    o.endpoint = loadgen::Endpoint::kEmbeddings;
  }
  o.stream = !f.no_stream && o.endpoint != loadgen::Endpoint::kEmbeddings;
  Result<loadgen::Report> report = loadgen::Run(o);
  if (!report.ok()) {
    std::cerr << "segma bench load: " << report.status().message() << "\n";
    return 2;
  }
  std::cout << loadgen::FormatReport(*report);
  if (!f.json_path.empty()) {
    const std::string json = boost::json::serialize(loadgen::ReportToJson(*report)) + "\n";
    if (f.json_path == "-") {
      std::cout << json;
    } else {
      std::ofstream out(f.json_path, std::ios::app);
      out << json;
      if (!out) {
        std::cerr << "segma bench load: cannot write " << f.json_path << "\n";
        return 2;
      }
    }
  }
  if (!f.samples_path.empty()) {
    boost::json::object samples{
        {"latency_s",
         boost::json::array(report->latency_values.begin(), report->latency_values.end())},
        {"ttft_s", boost::json::array(report->ttft_values.begin(), report->ttft_values.end())}};
    std::ofstream out(f.samples_path, std::ios::trunc);
    out << boost::json::serialize(samples) << "\n";
    if (!out) {
      std::cerr << "segma bench load: cannot write " << f.samples_path << "\n";
      return 2;
    }
  }
  return f.fail_on_error && report->errors > 0 ? 1 : 0;
}

}  // namespace

void AddBenchCommands(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Load tools for benchmarks (bench/)");
  bench->require_subcommand(1);
  // Lives as long as the CLI app (main's stack frame outlives parsing and callbacks).
  static LoadFlags f;
  loadgen::Options& o = f.options;
  CLI::App* load = bench->add_subcommand(
      "load",
      "Drive an OpenAI-compatible endpoint with N concurrent users; prints latency, TTFT, "
      "inter-token latency and tokens/s");
  load->add_option("--url", o.url, "Base URL, http://host:port")->required();
  load->add_option("--key", o.api_key, "API key (Bearer)")->envname("SEGMA_API_KEY");
  load->add_option("--header,-H", f.headers, "Extra request header 'Name: value' (repeatable)");
  load->add_option("--model", o.model, "Model name")->required();
  load->add_option("--endpoint", f.endpoint, "chat|completions|embeddings")
      ->check(CLI::IsMember({"chat", "completions", "embeddings"}))
      ->capture_default_str();
  load->add_option("--concurrency,-c", o.concurrency, "Concurrent users (connections)")
      ->check(CLI::Range(1, 100'000))
      ->capture_default_str();
  load->add_option("--requests,-n", o.requests, "Recorded requests (0: run for --duration)")
      ->check(CLI::Range(int64_t{0}, int64_t{1'000'000'000}))
      ->capture_default_str();
  load->add_option("--duration", o.duration_s, "Seconds to run when --requests is 0")
      ->check(CLI::Range(0.01, 86'400.0))
      ->capture_default_str();
  load->add_option("--warmup", o.warmup_requests, "Unrecorded requests sent first")
      ->check(CLI::Range(int64_t{0}, int64_t{1'000'000'000}))
      ->capture_default_str();
  load->add_flag("--no-stream", f.no_stream, "Ask for whole answers instead of SSE streams");
  load->add_option("--max-tokens", o.max_tokens, "max_tokens of each request")
      ->check(CLI::Range(1, 1'000'000))
      ->capture_default_str();
  load->add_flag("--ignore-eos", o.ignore_eos, "Ask llama.cpp to generate all max_tokens");
  load->add_option("--prompt-words", o.prompt_words, "Distinct words per prompt")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  load->add_option("--prefix-groups", o.prefix_groups,
                   "Shared prompt prefixes to draw from (0: none)")
      ->check(CLI::Range(0, 1'000'000));
  load->add_option("--prefix-words", o.prefix_words, "Words in each shared prefix")
      ->check(CLI::Range(0, 1'000'000));
  load->add_option("--threads", o.threads, "I/O threads of the generator")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  load->add_option("--timeout", o.request_timeout_s, "Per-request timeout, s")
      ->check(CLI::Range(0.001, 86'400.0))
      ->capture_default_str();
  load->add_option("--stall", o.stall_threshold_s, "A gap between chunks above this is a stall, s")
      ->check(CLI::Range(0.0, 86'400.0))
      ->capture_default_str();
  load->add_option("--seed", o.seed, "Prompt seed")->capture_default_str();
  load->add_option("--json", f.json_path,
                   "Append the report as one JSON line to FILE (- : stdout)");
  load->add_option("--samples", f.samples_path,
                   "Write every answered request's latency and TTFT (seconds) to FILE as JSON");
  load->add_flag("--fail-on-error", f.fail_on_error, "Exit 1 when any request failed");
  load->callback([] { std::exit(RunLoad(f)); });
}

}  // namespace segma::cli
