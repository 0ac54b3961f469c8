#include "cli/sim_commands.h"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <fmt/format.h>

#include "common/logging.h"
#include "scheduler/estimate/test_model.h"
#include "sim/engine_sim.h"

namespace segma::cli {

namespace {

struct EngineSimFlags {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;
  std::string model;
  double params_b = 8;
  std::string gpu = "H100";
  int tp = 1;
  int threads = 1;
  double startup_delay_ms = 0;
  bool access_log = false;
  bool no_prefix_caching = false;
  std::string api_key_file;
  sim::EngineSimConfig config;  // timing overrides are applied only when their flag was given
};

struct MakeTestFlags {
  std::string out;
  std::string shape = "tiny";
  std::string type = "f16";
  std::string vocab;
  uint64_t seed = 1;
};

// The first line of `path` (llama.cpp's --api-key-file takes one key per line).
Result<std::string> ReadApiKeyFile(const std::string& path) {
  std::ifstream in(path);
  std::string key;
  if (!in || !std::getline(in, key)) {
    return NotFoundError(fmt::format("cannot read the API key file {}", path));
  }
  if (!key.empty() && key.back() == '\r') key.pop_back();
  if (key.empty()) return InvalidArgumentError(fmt::format("{} holds no API key", path));
  return key;
}

int Die(const Status& s) {
  std::cerr << "segma: " << s.ToString() << "\n";
  return 1;
}

void SetLogLevelFrom(CLI::App& app) {
  if (const CLI::Option* opt = app.get_option_no_throw("--log-level"); opt != nullptr) {
    SetLogLevel(opt->count() > 0 ? opt->as<std::string>() : "info");
  }
}

// Timing flags are parsed into a scratch TimingParams; those given override the defaults derived
// from --params-b/--gpu/--tp.
struct TimingOverrides {
  sim::TimingParams v;
  std::vector<std::pair<CLI::Option*, std::function<void(sim::TimingParams&)>>> fields;
};

template <typename T>
void AddTimingFlag(CLI::App* cmd, TimingOverrides& o, const std::string& name,
                   T sim::TimingParams::*member, const std::string& help, T lo, T hi) {
  CLI::Option* opt = cmd->add_option(name, o.v.*member, help)->check(CLI::Range(lo, hi));
  o.fields.emplace_back(opt, [&o, member](sim::TimingParams& d) { d.*member = o.v.*member; });
}

void AddEngineSim(CLI::App& app, EngineSimFlags& f, TimingOverrides& o) {
  CLI::App* cmd = app.add_subcommand(
      "engine-sim", "Simulated OpenAI-compatible engine with vLLM metrics (docs/engine-sim.md)");
  cmd->add_option("--host", f.host, "Listen address")->capture_default_str();
  cmd->add_option("--port", f.port, "Listen port (0: any)")->capture_default_str();
  cmd->add_option("--model", f.model, "Served model name")->required();
  cmd->add_option("--params-b", f.params_b, "Model size in billions of parameters (defaults)")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 10000.0));
  cmd->add_option("--gpu", f.gpu, "H100|H200|A100|L40S|RTX-PRO-6000|CPU (defaults)")
      ->capture_default_str();
  cmd->add_option("--tp", f.tp, "Tensor-parallel GPUs (defaults)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  cmd->add_option("--threads", f.threads, "I/O threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  cmd->add_option("--startup-delay-ms", f.startup_delay_ms,
                  "Wait this long before listening (a slow engine start)")
      ->check(CLI::Range(0.0, 3'600'000.0));
  cmd->add_flag("--access-log", f.access_log, "Log every request");
  cmd->add_option("--api-key-file", f.api_key_file,
                  "File whose first line is the secret every endpoint but /health requires "
                  "(Authorization: Bearer); without it the engine is open");

  using P = sim::TimingParams;
  AddTimingFlag(cmd, o, "--ttft-ms,--prefill-overhead-ms", &P::overhead_ms,
                "Fixed part of TTFT, ms", 0.0, 1e7);
  AddTimingFlag(cmd, o, "--prefill-us-per-token", &P::prefill_us_per_token,
                "Prefill time per uncached prompt token, µs", 0.0, 1e7);
  AddTimingFlag(cmd, o, "--decode-ms-per-token", &P::decode_ms_per_token,
                "Decode step at batch size 1, ms", 0.0, 1e7);
  AddTimingFlag(cmd, o, "--max-concurrency,--max-num-seqs", &P::max_concurrency,
                "Sequences running at once; the rest wait (FIFO)", 1, 1'000'000);
  AddTimingFlag(cmd, o, "--max-waiting", &P::max_waiting,
                "Waiting queue bound (0: unbounded); beyond it requests get 503", 0, 10'000'000);
  AddTimingFlag(cmd, o, "--load-slowdown", &P::load_slowdown,
                "Step-time growth at a full batch: factor 1 + x·(running−1)/(max−1)", 0.0, 1000.0);
  AddTimingFlag(cmd, o, "--kv-blocks", &P::kv_capacity_blocks,
                "KV cache capacity in blocks (also bounds the prefix cache)", int64_t{1},
                int64_t{1'000'000'000});
  AddTimingFlag(cmd, o, "--block-size", &P::block_tokens, "KV/prefix block size in tokens", 1,
                4096);
  AddTimingFlag(cmd, o, "--max-model-len", &P::max_model_len, "Context length in tokens",
                int64_t{16}, int64_t{100'000'000});
  AddTimingFlag(cmd, o, "--default-max-tokens", &P::default_max_tokens,
                "Output tokens when a request gives no max_tokens", 1, 1'000'000);
  AddTimingFlag(cmd, o, "--max-tokens-cap", &P::max_tokens_cap, "Upper bound on max_tokens", 1,
                1'000'000);
  AddTimingFlag(cmd, o, "--speed", &P::speed,
                "Divides every duration; 0 answers at once (gateway benchmarks)", 0.0, 1e6);
  cmd->add_flag("--no-prefix-caching", f.no_prefix_caching, "Disable the prefix cache");

  sim::FailureOptions& fo = f.config.failures;
  cmd->add_option("--error-rate", fo.error_rate, "Fraction of requests answered 500")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--delay-ms", fo.delay_ms, "Extra delay before each /v1 request")
      ->check(CLI::Range(0.0, 3'600'000.0));
  cmd->add_option("--drop-rate", fo.drop_rate,
                  "Fraction of streams whose connection drops mid-stream")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--hang-after-ms", fo.hang_after_ms,
                  "Hang this long after listening: no request gets an answer from then on "
                  "(negative: never)")
      ->check(CLI::Range(-1.0, 1e9));
  cmd->add_option("--hang-scope", fo.hang_scope,
                  "What the hang stops: all (/health too) or inference (all but /health)")
      ->check(CLI::IsMember({"all", "inference"}))
      ->capture_default_str();
  cmd->add_option("--embedding-dim", f.config.embedding_dim, "Embedding vector size")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  cmd->add_option("--seed", f.config.seed, "Seed of the failure-injection draws")
      ->capture_default_str();
}

int RunEngineSim(EngineSimFlags f, const TimingOverrides& o) {
  Result<sim::GpuType> gpu = sim::ParseGpuType(f.gpu);
  if (!gpu.ok()) return Die(gpu.status());
  Result<sim::TimingParams> timing = sim::DefaultTiming(f.params_b, *gpu, f.tp);
  if (!timing.ok()) return Die(timing.status());
  for (const auto& [opt, copy] : o.fields) {
    if (opt->count() > 0) copy(*timing);
  }
  if (f.no_prefix_caching) timing->prefix_caching = false;
  f.config.timing = *timing;
  f.config.model = f.model;
  f.config.address = f.host;
  f.config.port = f.port;
  f.config.access_log = f.access_log;
  if (!f.api_key_file.empty()) {
    Result<std::string> key = ReadApiKeyFile(f.api_key_file);
    if (!key.ok()) return Die(key.status());
    f.config.api_key = *key;
  }
  if (f.startup_delay_ms > 0) {
    std::this_thread::sleep_for(
        std::chrono::microseconds(static_cast<int64_t>(f.startup_delay_ms * 1000)));
  }

  boost::asio::io_context ioc(f.threads);
  sim::EngineSim engine(ioc, f.config);
  Result<uint16_t> port = engine.Start();
  if (!port.ok()) return Die(port.status());
  const sim::TimingParams& t = f.config.timing;
  Logger("engine-sim")
      ->info(
          "engine-sim serving '{}' on {}:{} ({}B on {}×{}): overhead {:.1f} ms + {:.0f} µs/prompt "
          "token, {:.1f} ms/output token, max {} sequences, {} KV blocks, speed {}",
          f.model, f.host, *port, f.params_b, f.tp, f.gpu, t.overhead_ms, t.prefill_us_per_token,
          t.decode_ms_per_token, t.max_concurrency, t.kv_capacity_blocks, t.speed);
  boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code, int) {
    engine.Stop();
    ioc.stop();
  });
  std::vector<std::thread> extra;
  for (int i = 1; i < f.threads; ++i) extra.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (auto& th : extra) th.join();
  return 0;
}

// The vocabulary used when --vocab is not given: llama.cpp's SentencePiece llama vocab from the
// cache that scripts/build-llama fills ($SEGMA_LLAMA_CACHE, else /var/cache/segma/llama.cpp-*).
std::string FindDefaultVocab() {
  namespace fs = std::filesystem;
  constexpr std::string_view kRel = "src/models/ggml-vocab-llama-spm.gguf";
  std::vector<fs::path> candidates;
  if (const char* cache = std::getenv("SEGMA_LLAMA_CACHE"); cache != nullptr && *cache != '\0') {
    candidates.push_back(fs::path(cache) / kRel);
  }
  std::error_code ec;
  std::vector<fs::path> versions;
  for (fs::directory_iterator it("/var/cache/segma", ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().starts_with("llama.cpp-")) versions.push_back(it->path());
  }
  std::sort(versions.rbegin(), versions.rend());  // newest version name first
  for (const fs::path& v : versions) candidates.push_back(v / kRel);
  for (const fs::path& c : candidates) {
    if (fs::is_regular_file(c, ec)) return c.string();
  }
  return "";
}

int RunMakeTest(const MakeTestFlags& f) {
  Result<estimate::TestModelSize> size = estimate::ParseTestModelSize(f.shape);
  if (!size.ok()) return Die(size.status());
  Result<estimate::GgmlType> type = estimate::ParseGgmlType(f.type);
  if (!type.ok()) return Die(type.status());
  estimate::TestModelOptions opts;
  opts.path = f.out;
  opts.size = *size;
  opts.type = *type;
  opts.seed = f.seed;
  opts.vocab_path = f.vocab.empty() ? FindDefaultVocab() : f.vocab;
  if (opts.vocab_path.empty()) {
    return Die(NotFoundError(
        "no vocabulary GGUF found: pass --vocab FILE (e.g. llama.cpp's "
        "models/ggml-vocab-llama-spm.gguf), set SEGMA_LLAMA_CACHE, or run scripts/build-llama"));
  }
  if (std::error_code ec; !std::filesystem::is_regular_file(opts.vocab_path, ec)) {
    return Die(NotFoundError("vocabulary file '" + opts.vocab_path + "' not found"));
  }
  if (Status s = estimate::WriteTestModel(opts); !s.ok()) return Die(s);
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(f.out, ec);
  std::cout << fmt::format("wrote {} ({} layout, {}, vocab {}, {:.1f} MiB)\n", f.out, f.shape,
                           f.type, opts.vocab_path, ec ? 0.0 : bytes / 1048576.0);
  return 0;
}

CLI::App* FindOrAddSubcommand(CLI::App& app, const std::string& name, const std::string& help) {
  for (CLI::App* sub : app.get_subcommands([&](CLI::App* a) { return a->get_name() == name; })) {
    return sub;
  }
  return app.add_subcommand(name, help);
}

}  // namespace

void AddSimCommands(CLI::App& app) {
  // CLI11 keeps pointers to these until parsing ends, i.e. for the life of the process.
  static EngineSimFlags sim_flags;
  static TimingOverrides overrides;
  static MakeTestFlags make_flags;

  AddEngineSim(app, sim_flags, overrides);
  app.get_subcommand("engine-sim")->callback([&app] {
    SetLogLevelFrom(app);
    std::exit(RunEngineSim(sim_flags, overrides));
  });

  CLI::App* model = FindOrAddSubcommand(app, "model", "Model files");
  model->require_subcommand(1);
  CLI::App* make = model->add_subcommand(
      "make-test", "Write a random-weight llama GGUF with a real vocabulary (offline smoke tests)");
  make->add_option("--out", make_flags.out, "Output file")->required();
  make->add_option("--shape", make_flags.shape, "tiny|7b|8b|32b")->capture_default_str();
  make->add_option("--type", make_flags.type, "Weight type: f16|q8_0|bf16|f32")
      ->capture_default_str();
  make->add_option("--vocab", make_flags.vocab,
                   "Vocab-only GGUF (default: llama.cpp's ggml-vocab-llama-spm.gguf from the "
                   "scripts/build-llama cache)");
  make->add_option("--seed", make_flags.seed, "Weight seed")->capture_default_str();
  make->callback([&app] {
    SetLogLevelFrom(app);
    std::exit(RunMakeTest(make_flags));
  });
}

}  // namespace segma::cli
