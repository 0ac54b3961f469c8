// ParseUsage: the token counts of an OpenAI response body, read with Boost.JSON's SAX parser.
// Every non-streaming response passes through here; building a DOM of the whole body (choices,
// message text, logprobs) only to read three numbers cost more than the rest of the gateway's
// JSON work together. The scan allocates nothing unless a key is split across parser buffers.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/basic_parser_impl.hpp>

#include "gateway/openai_proxy.h"

namespace segma::gateway {

namespace {

using boost::system::error_code;
using JsonStringView = boost::json::string_view;

class UsageHandler {
 public:
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);

  bool found = false;
  int64_t prompt = 0, completion = 0, cached = 0;

  bool on_document_begin(error_code&) { return true; }
  bool on_document_end(error_code&) { return true; }
  bool on_object_begin(error_code&) {
    Level level = Level::kOther;
    if (levels_.empty()) {
      level = Level::kTop;
    } else if (levels_.back() == Level::kTop && key_ == "usage") {
      level = Level::kUsage;
      found = true;
      prompt = completion = cached = 0;  // the last "usage" member counts, like a DOM lookup
    } else if (levels_.back() == Level::kUsage && key_ == "prompt_tokens_details") {
      level = Level::kDetails;
      cached = 0;
    }
    levels_.push_back(level);
    return true;
  }
  bool on_object_end(std::size_t, error_code&) { return Pop(); }
  bool on_array_begin(error_code&) {
    levels_.push_back(Level::kOther);
    return true;
  }
  bool on_array_end(std::size_t, error_code&) { return Pop(); }
  bool on_key_part(JsonStringView s, std::size_t, error_code&) {
    partial_key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(JsonStringView s, std::size_t, error_code&) {
    if (partial_key_.empty()) {
      key_ = std::string_view(s.data(), s.size());
    } else {
      partial_key_.append(s.data(), s.size());
      whole_key_.swap(partial_key_);
      partial_key_.clear();
      key_ = whole_key_;
    }
    return true;
  }
  bool on_string_part(JsonStringView, std::size_t, error_code&) { return true; }
  bool on_string(JsonStringView, std::size_t, error_code&) { return true; }
  bool on_number_part(JsonStringView, error_code&) { return true; }
  bool on_int64(int64_t i, JsonStringView, error_code&) {
    Count(i);
    return true;
  }
  bool on_uint64(uint64_t u, JsonStringView, error_code&) {
    Count(static_cast<int64_t>(u));
    return true;
  }
  bool on_double(double, JsonStringView, error_code&) { return true; }
  bool on_bool(bool, error_code&) { return true; }
  bool on_null(error_code&) { return true; }
  bool on_comment_part(JsonStringView, error_code&) { return true; }
  bool on_comment(JsonStringView, error_code&) { return true; }

 private:
  enum class Level : uint8_t { kOther, kTop, kUsage, kDetails };

  bool Pop() {
    levels_.pop_back();
    return true;
  }
  void Count(int64_t v) {
    if (levels_.empty()) return;
    if (levels_.back() == Level::kUsage) {
      if (key_ == "prompt_tokens") prompt = v;
      if (key_ == "completion_tokens") completion = v;
    } else if (levels_.back() == Level::kDetails && key_ == "cached_tokens") {
      cached = v;
    }
  }

  std::vector<Level> levels_;
  // The current member's key: a view into the parsed text, or into whole_key_ when the parser
  // delivered it in parts.
  std::string_view key_;
  std::string partial_key_, whole_key_;
};

}  // namespace

bool ParseUsage(std::string_view body, int64_t& prompt, int64_t& completion, int64_t& cached) {
  if (body.find("\"usage\"") == std::string_view::npos) return false;
  boost::json::basic_parser<UsageHandler> parser(boost::json::parse_options{});
  error_code ec;
  const size_t n = parser.write_some(false, body.data(), body.size(), ec);
  if (ec || n != body.size() || !parser.done()) return false;
  const UsageHandler& h = parser.handler();
  if (!h.found) return false;
  prompt = h.prompt;
  completion = h.completion;
  cached = h.cached;
  return true;
}

}  // namespace segma::gateway
