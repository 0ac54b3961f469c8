// `segma engine-guard` for the engine tests, without the whole segma binary: the same parser and
// loop (engines::ParseEngineGuardArgs, engines::RunEngineGuard).

#include <iostream>
#include <string>
#include <vector>

#include "worker/engines/engine_guard.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "engine-guard") args.erase(args.begin());
  segma::Result<segma::engines::EngineGuardOptions> options =
      segma::engines::ParseEngineGuardArgs(args);
  if (!options.ok()) {
    std::cerr << options.status().ToString() << "\n";
    return 2;
  }
  return segma::engines::RunEngineGuard(*options, segma::SystemClock::Get(), std::cerr);
}
