#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "common/status.h"

namespace segma {

// Returns the named module logger ("server", "worker", "gateway", "store", "scheduler", ...),
// creating it on first use with the process-wide level, format and sink. Thread-safe.
std::shared_ptr<spdlog::logger> Logger(const std::string& module);

// Sets the level of every module logger ("trace".."off"); unknown names mean "info".
void SetLogLevel(const std::string& level);

// "text" (the default: `2026-12-03T19:37:05.123Z I [server] message`) or "json": one JSON object
// per line for log shippers (Loki, ...) with time (RFC 3339, UTC, ms), level, component (the
// module), message, and the ids the message names (LogIds). Applies to every module logger,
// existing and future. kInvalidArgument for another format.
Status SetLogFormat(std::string_view format);

// The JSON log line (without the newline) of one message. Ids are taken from the message:
// "[req=ID]" becomes request_id (and leaves the message), other "[key=value]" tags become fields
// (instance → instance_id, worker → worker_id, model → model, project → project_id), and
// "instance N" / "worker N" in the text become instance_id / worker_id when no tag set them.
std::string JsonLogLine(std::chrono::system_clock::time_point time, std::string_view level,
                        std::string_view component, std::string_view message);

}  // namespace segma
