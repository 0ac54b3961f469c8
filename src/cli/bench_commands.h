#pragma once

#include <CLI/CLI.hpp>

namespace segma::cli {

// Adds `segma bench load`: the project's load generator for OpenAI-compatible endpoints
// (src/loadgen), used by bench/gateway and bench/gpu:
//   segma bench load --url http://127.0.0.1:8080 --key sk-… --model m --concurrency 8
//       --requests 64 --max-tokens 128 [--no-stream] [--json FILE]
void AddBenchCommands(CLI::App& app);

}  // namespace segma::cli
