#pragma once

// Small helpers shared by the engine tests (supervisor_test.cc, engine_guard_test.cc).

#include <chrono>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

namespace segma::engines {

// The whole file, or "" when it cannot be read.
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Polls `pred` every 20 ms until it holds or `timeout` passes; returns its last value.
template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(15)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

}  // namespace segma::engines
