#pragma once

#include <CLI/CLI.hpp>

namespace segma::cli {

// Adds the offline/test tools:
//   segma engine-sim --port N --model NAME [--params-b 8] [--gpu H100] [timing flags…]
//     an OpenAI-compatible simulated engine with vLLM's metric names (docs/engine-sim.md);
//   segma model make-test --out FILE [--shape tiny|7b|8b] [--type f16|q8_0] [--vocab FILE]
//     a random-weight llama GGUF with a real vocabulary, to smoke-test a worker offline.
// Reuses an existing `model` subcommand when another module added one.
void AddSimCommands(CLI::App& app);

}  // namespace segma::cli
