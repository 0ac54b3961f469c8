#include "common/logging.h"

#include <time.h>

#include <cctype>
#include <map>
#include <mutex>

#include <fmt/format.h>
#include <spdlog/formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace segma {

namespace {

std::mutex g_mu;
spdlog::level::level_enum g_level = spdlog::level::info;
bool g_json = false;  // guarded by g_mu

constexpr const char* kTextPattern = "%Y-%m-%dT%H:%M:%S.%eZ %^%L%$ [%n] %v";

void AppendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          fmt::format_to(std::back_inserter(out), "\\u{:04x}", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

std::string_view FieldFor(std::string_view tag) {
  if (tag == "req") return "request_id";
  if (tag == "instance") return "instance_id";
  if (tag == "worker") return "worker_id";
  if (tag == "model") return "model";
  if (tag == "project") return "project_id";
  return {};
}

// The number after `word ` in `text` ("instance 42" → "42"), at a word boundary; "" if none.
std::string NumberAfter(std::string_view text, std::string_view word) {
  for (size_t at = text.find(word); at != std::string_view::npos; at = text.find(word, at + 1)) {
    if (at > 0 && std::isalnum(static_cast<unsigned char>(text[at - 1]))) continue;
    size_t i = at + word.size();
    if (i >= text.size() || text[i] != ' ') continue;
    ++i;
    const size_t start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    if (i > start && (i == text.size() || !std::isalnum(static_cast<unsigned char>(text[i])))) {
      return std::string(text.substr(start, i - start));
    }
  }
  return {};
}

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const spdlog::string_view_t level = spdlog::level::to_string_view(msg.level);
    const std::string line =
        JsonLogLine(msg.time, std::string_view(level.data(), level.size()),
                    std::string_view(msg.logger_name.data(), msg.logger_name.size()),
                    std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(line.data(), line.data() + line.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

void ApplyFormat(spdlog::logger& logger, bool json) {
  if (json) {
    logger.set_formatter(std::make_unique<JsonFormatter>());
  } else {
    logger.set_pattern(kTextPattern, spdlog::pattern_time_type::utc);
  }
}

}  // namespace

std::string JsonLogLine(std::chrono::system_clock::time_point time, std::string_view level,
                        std::string_view component, std::string_view message) {
  std::map<std::string, std::string> ids;
  std::string text;
  text.reserve(message.size());
  // [key=value] tags: fields; [req=…] also leaves the message.
  for (size_t i = 0; i < message.size();) {
    if (message[i] == '[') {
      const size_t eq = message.find('=', i);
      const size_t close = message.find(']', i);
      if (eq != std::string_view::npos && close != std::string_view::npos && eq < close) {
        const std::string_view field = FieldFor(message.substr(i + 1, eq - i - 1));
        if (!field.empty()) {
          ids[std::string(field)] = std::string(message.substr(eq + 1, close - eq - 1));
          if (field == "request_id") {
            i = close + 1;
            while (i < message.size() && message[i] == ' ') ++i;
            continue;
          }
        }
      }
    }
    text += message[i++];
  }
  if (!ids.contains("instance_id")) {
    if (std::string n = NumberAfter(text, "instance"); !n.empty()) ids["instance_id"] = n;
  }
  if (!ids.contains("worker_id")) {
    if (std::string n = NumberAfter(text, "worker"); !n.empty()) ids["worker_id"] = n;
  }
  const auto since_epoch = time.time_since_epoch();
  const time_t secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch).count();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch).count() % 1000;
  struct tm tm {};
  gmtime_r(&secs, &tm);
  std::string out;
  out.reserve(text.size() + 128);
  fmt::format_to(std::back_inserter(out),
                 "{{\"time\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\"", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  out += ",\"level\":";
  AppendJsonString(out, level);
  out += ",\"component\":";
  AppendJsonString(out, component);
  out += ",\"message\":";
  AppendJsonString(out, text);
  for (const auto& [k, v] : ids) {
    out += ",\"";
    out += k;
    out += "\":";
    AppendJsonString(out, v);
  }
  out += '}';
  return out;
}

std::shared_ptr<spdlog::logger> Logger(const std::string& module) {
  if (auto existing = spdlog::get(module)) return existing;
  std::lock_guard lock(g_mu);
  if (auto existing = spdlog::get(module)) return existing;
  auto logger = spdlog::stderr_color_mt(module);
  ApplyFormat(*logger, g_json);
  logger->set_level(g_level);
  return logger;
}

void SetLogLevel(const std::string& level) {
  std::lock_guard lock(g_mu);
  g_level = spdlog::level::from_str(level);
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { l->set_level(g_level); });
}

Status SetLogFormat(std::string_view format) {
  if (format != "text" && format != "json") {
    return InvalidArgumentError(fmt::format("log format must be text or json, got '{}'", format));
  }
  std::lock_guard lock(g_mu);
  g_json = format == "json";
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { ApplyFormat(*l, g_json); });
  return OkStatus();
}

}  // namespace segma
