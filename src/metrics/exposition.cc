#include "metrics/exposition.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

namespace segma::metrics {

void AppendEscapedLabelValue(std::string& out, std::string_view value) {
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
}

void AppendLabels(std::string& out, const LabelPairs& labels) {
  if (labels.empty()) return;
  out += '{';
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ',';
    first = false;
    out += k;
    out += "=\"";
    AppendEscapedLabelValue(out, v);
    out += '"';
  }
  out += '}';
}

void AppendValue(std::string& out, double value) {
  if (std::isnan(value)) {
    out += "NaN";
  } else if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
  } else if (value == std::floor(value) && std::fabs(value) < 1e15) {
    fmt::format_to(std::back_inserter(out), "{}", static_cast<int64_t>(value));
  } else {
    fmt::format_to(std::back_inserter(out), "{}", value);
  }
}

void TextWriter::Family(std::string_view name, std::string_view type, std::string_view help) {
  if (!help.empty()) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += '\n';
  }
  out_ += "# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void TextWriter::Sample(std::string_view name, const LabelPairs& labels, double value) {
  out_ += name;
  AppendLabels(out_, labels);
  out_ += ' ';
  AppendValue(out_, value);
  out_ += '\n';
}

namespace {

bool NameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':';
}

std::string_view TrimLeft(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  return s;
}

bool ParseDouble(std::string_view s, double& out) {
  if (s == "+Inf" || s == "Inf") {
    out = HUGE_VAL;
    return true;
  }
  if (s == "-Inf") {
    out = -HUGE_VAL;
    return true;
  }
  if (s == "NaN") {
    out = NAN;
    return true;
  }
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// `name{a="x",b="y"} value [ts]`; false when malformed.
bool ParseSampleLine(std::string_view line, ParsedSample& s) {
  size_t i = 0;
  while (i < line.size() && NameChar(line[i])) ++i;
  if (i == 0) return false;
  s.name = std::string(line.substr(0, i));
  s.labels.clear();
  if (i < line.size() && line[i] == '{') {
    ++i;
    for (;;) {
      while (i < line.size() && (line[i] == ' ' || line[i] == ',')) ++i;
      if (i >= line.size()) return false;
      if (line[i] == '}') {
        ++i;
        break;
      }
      const size_t k = i;
      while (i < line.size() && NameChar(line[i])) ++i;
      if (i == k || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') return false;
      std::string key(line.substr(k, i - k));
      i += 2;
      std::string value;
      for (;; ++i) {
        if (i >= line.size()) return false;
        const char c = line[i];
        if (c == '"') break;
        if (c == '\\' && i + 1 < line.size()) {
          const char e = line[++i];
          value += e == 'n' ? '\n' : e;
        } else {
          value += c;
        }
      }
      ++i;  // the closing quote
      s.labels.emplace_back(std::move(key), std::move(value));
    }
  }
  std::string_view rest = TrimLeft(line.substr(i));
  const size_t end = rest.find_first_of(" \t");
  return ParseDouble(rest.substr(0, end), s.value);
}

bool BelongsTo(std::string_view sample, std::string_view family) {
  if (!sample.starts_with(family)) return false;
  const std::string_view suffix = sample.substr(family.size());
  return suffix.empty() || suffix == "_bucket" || suffix == "_sum" || suffix == "_count" ||
         suffix == "_total" || suffix == "_created";
}

}  // namespace

std::vector<ParsedFamily> ParseText(std::string_view text) {
  std::vector<ParsedFamily> out;
  std::string help_name;
  std::string help;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    line = TrimLeft(line);
    if (line.empty()) continue;
    if (line.front() == '#') {
      std::string_view rest = TrimLeft(line.substr(1));
      const bool is_type = rest.starts_with("TYPE ");
      const bool is_help = rest.starts_with("HELP ");
      if (!is_type && !is_help) continue;
      rest = TrimLeft(rest.substr(5));
      const size_t sp = rest.find(' ');
      const std::string_view name = rest.substr(0, sp);
      const std::string_view arg =
          sp == std::string_view::npos ? std::string_view() : TrimLeft(rest.substr(sp + 1));
      if (is_help) {
        help_name = std::string(name);
        help = std::string(arg);
      } else {
        ParsedFamily f;
        f.name = std::string(name);
        f.type = arg.empty() ? "untyped" : std::string(arg);
        if (help_name == name) f.help = help;
        out.push_back(std::move(f));
      }
      continue;
    }
    ParsedSample s;
    if (!ParseSampleLine(line, s)) continue;
    if (out.empty() || !BelongsTo(s.name, out.back().name)) {
      ParsedFamily f;
      f.name = s.name;
      out.push_back(std::move(f));
    }
    out.back().samples.push_back(std::move(s));
  }
  return out;
}

}  // namespace segma::metrics
