#pragma once

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace segma {

// Returns the named module logger ("server", "worker", "gateway", "store", "scheduler", ...),
// creating it on first use with the process-wide level and sink. Thread-safe.
std::shared_ptr<spdlog::logger> Logger(const std::string& module);

// Sets the level of every module logger ("trace".."off"); unknown names mean "info".
void SetLogLevel(const std::string& level);

}  // namespace segma
