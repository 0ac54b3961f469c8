#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace segma::http {

// One server-sent event: the joined "data:" lines and the optional "event:" name.
struct SseEvent {
  std::string event;
  std::string data;
};

// Incremental parser of a text/event-stream body: feed it bytes as they arrive, in any split.
// Comments (":…") are skipped. Events larger than `max_event_bytes` are an error (the stream is
// hostile or broken). Not thread-safe.
class SseParser {
 public:
  explicit SseParser(size_t max_event_bytes = 8 * 1024 * 1024) : max_(max_event_bytes) {}
  // Appends complete events to `out`. Returns false if an event grew past the limit.
  bool Feed(std::string_view bytes, std::vector<SseEvent>& out);

 private:
  void Line(std::string_view line, std::vector<SseEvent>& out);
  const size_t max_;
  std::string pending_;  // bytes of an incomplete line
  SseEvent current_;
  bool has_data_ = false;
};

// Formats one event: "data: <data>\n\n" (with "event: <name>\n" first when given).
std::string FormatSse(std::string_view data, std::string_view event = {});

}  // namespace segma::http
