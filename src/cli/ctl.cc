#include "cli/ctl.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <string_view>

#include <fmt/format.h>
#include <sys/stat.h>

#include "common/json.h"
#include "http/client.h"

namespace segma::cli {

namespace {

using boost::beast::http::verb;

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
// A watch stream carries a keep-alive comment every 15 s: a longer silence means the server is
// gone.
constexpr std::chrono::seconds kWatchReadTimeout{60};

struct CtlOptions {
  std::string server;
  std::string token;
  std::string output = "table";
};

std::string CredentialsPath() {
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.config/segma/credentials.json";
}

void SaveCredentials(const std::string& server, const std::string& token) {
  const std::string path = CredentialsPath();
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::trunc)
      << json::serialize(json::object{{"server", server}, {"token", token}}) << "\n";
  ::chmod(path.c_str(), 0600);
}

void LoadCredentials(CtlOptions& o) {
  std::ifstream in(CredentialsPath());
  if (!in) return;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Result<json::value> v = ParseJson(text);
  if (!v.ok() || !v->is_object()) return;
  const json::object& obj = v->as_object();
  if (o.token.empty() && obj.contains("token") && obj.at("token").is_string()) {
    o.token = std::string(obj.at("token").as_string());
  }
  if (o.server.empty() && obj.contains("server") && obj.at("server").is_string()) {
    o.server = std::string(obj.at("server").as_string());
  }
}

[[noreturn]] void Fail(const std::string& message) {
  std::cout.flush();
  std::cerr << "error: " << message << "\n";
  std::exit(1);
}

// Exits with the API's error message for a response with status >= 400.
[[noreturn]] void FailWith(const http::ClientResponse& res) {
  Result<json::value> v = res.Json();
  if (v.ok() && v->is_object() && v->as_object().contains("error")) {
    const json::value& e = v->as_object().at("error");
    if (e.is_object() && e.as_object().contains("message") &&
        e.as_object().at("message").is_string()) {
      Fail(
          fmt::format("{} ({})", std::string(e.as_object().at("message").as_string()), res.status));
    }
  }
  Fail(fmt::format("HTTP {}: {}", res.status, res.body.substr(0, 300)));
}

std::string UrlEncode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

// A list path with its query: Add() appends key=value, encoded.
struct ListPath {
  std::string path;
  ListPath& Add(const std::string& key, const std::string& value) {
    path += (path.find('?') == std::string::npos ? "?" : "&") + key + "=" + UrlEncode(value);
    return *this;
  }
};

// An answer of the API: parsed, and the body exactly as received (for -o json).
struct Answer {
  json::value json;
  std::string raw;
};

// Sends one request; prints the API's error and exits on failure.
Answer Call(const CtlOptions& o, verb method, const std::string& path,
            const std::optional<json::value>& body = std::nullopt) {
  http::ClientRequest req;
  req.method = method;
  req.url = o.server + path;
  req.Bearer(o.token);
  if (body) req.JsonBody(*body);
  Result<http::ClientResponse> res = http::FetchSync(std::move(req));
  if (!res.ok()) Fail(res.status().message());
  if (res->status >= 400) FailWith(*res);
  if (res->status == 204) return {json::object(), ""};
  Result<json::value> v = res->Json();
  if (!v.ok()) Fail("the server answered with something that is not JSON");
  return {*std::move(v), std::move(res->body)};
}

// GET of a text resource (logs, CSV); exits on failure.
std::string CallText(const CtlOptions& o, const std::string& path) {
  http::ClientRequest req;
  req.url = o.server + path;
  req.Bearer(o.token);
  Result<http::ClientResponse> res = http::FetchSync(std::move(req));
  if (!res.ok()) Fail(res.status().message());
  if (res->status >= 400) FailWith(*res);
  return std::move(res->body);
}

// GETs `path` and hands each piece of the body to `on_data` as it arrives, until the body ends
// (returns normally) or the transport fails (exits).
void StreamText(const CtlOptions& o, const std::string& path, std::chrono::milliseconds timeout,
                std::function<bool(std::string_view)> on_data) {
  http::ClientRequest req;
  req.url = o.server + path;
  req.Bearer(o.token);
  req.timeout = timeout;
  Result<http::ClientResponse> res = http::StreamSync(std::move(req), std::move(on_data));
  if (!res.ok()) Fail(res.status().message());
  if (res->status >= 400) FailWith(*res);
}

std::optional<double> Number(const json::value& v) {
  if (v.is_int64()) return static_cast<double>(v.as_int64());
  if (v.is_uint64()) return static_cast<double>(v.as_uint64());
  if (v.is_double()) return v.as_double();
  return std::nullopt;
}

// Plain decimal, never scientific notation: integers as such, others with up to two decimals.
std::string FormatNumber(double d) {
  if (!std::isfinite(d)) return "-";
  if (d == std::floor(d) && std::fabs(d) < 1e15) return fmt::format("{:.0f}", d);
  std::string s = fmt::format("{:.2f}", d);
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

std::string FormatGiB(double bytes) { return fmt::format("{:.1f} GiB", bytes / kGiB); }

// A number with a unit ("31 W"), or "-" when the field is absent.
std::string WithUnit(const json::value& v, std::string_view unit) {
  std::optional<double> n = Number(v);
  return n ? FormatNumber(*n) + std::string(unit) : "-";
}

// Rounded to a whole number: readings such as 53.24 % or 421.79 W.
std::string Rounded(const json::value& v, std::string_view unit) {
  std::optional<double> n = Number(v);
  return n && std::isfinite(*n) ? fmt::format("{:.0f}{}", *n, unit) : "-";
}

std::string GiBCell(const json::value& v) {
  std::optional<double> n = Number(v);
  return n ? FormatGiB(*n) : "-";
}

std::string Cell(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "-";
    case json::kind::bool_:
      return v.as_bool() ? "true" : "false";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      return FormatNumber(*Number(v));
    case json::kind::string:
      return v.as_string().empty() ? "-" : std::string(v.as_string());
    case json::kind::array: {
      std::string out;
      for (const json::value& e : v.as_array()) out += (out.empty() ? "" : ",") + Cell(e);
      return out.empty() ? "-" : out;
    }
    case json::kind::object: {
      std::string out;
      for (const auto& kv : v.as_object()) {
        out += out.empty() ? "" : ",";
        out += kv.key();
        if (!kv.value().is_object() && !kv.value().is_array()) out += "=" + Cell(kv.value());
      }
      return out.empty() ? "-" : out;
    }
  }
  return "-";
}

// Looks up "a.b" paths in an object.
json::value Field(const json::object& o, const std::string& path) {
  const json::object* cur = &o;
  size_t start = 0;
  for (;;) {
    size_t dot = path.find('.', start);
    std::string key =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    auto it = cur->find(key);
    if (it == cur->end()) return nullptr;
    if (dot == std::string::npos) return it->value();
    if (!it->value().is_object()) return nullptr;
    cur = &it->value().as_object();
    start = dot + 1;
  }
}

std::string Str(const json::object& o, const std::string& path) {
  json::value v = Field(o, path);
  return v.is_string() ? std::string(v.as_string()) : "";
}

// One column of a table: its header and how a row's cell is made.
struct Column {
  std::string header;
  std::function<std::string(const json::object&)> cell;
  // Keeps the lines of a watch aligned when a cell grows later ("UNSCHEDULABLE").
  size_t min_width = 0;
};

// The column of a field path: "worker_name" → header "WORKER NAME".
Column PathColumn(const std::string& path) {
  std::string h = path;
  for (char& ch : h) ch = ch == '.' || ch == '_' ? ' ' : static_cast<char>(std::toupper(ch));
  return {h, [path](const json::object& row) { return Cell(Field(row, path)); }};
}

std::vector<Column> PathColumns(const std::vector<std::string>& paths) {
  std::vector<Column> out;
  out.reserve(paths.size());
  for (const std::string& p : paths) out.push_back(PathColumn(p));
  return out;
}

std::vector<Column> operator+(std::vector<Column> a, const std::vector<Column>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<std::string> Cells(const json::object& row, const std::vector<Column>& columns) {
  std::vector<std::string> out;
  out.reserve(columns.size());
  for (const Column& c : columns) out.push_back(c.cell(row));
  return out;
}

std::vector<std::string> Headers(const std::vector<Column>& columns) {
  std::vector<std::string> out;
  out.reserve(columns.size());
  for (const Column& c : columns) out.push_back(c.header);
  return out;
}

// Display width: UTF-8 continuation bytes ("°") take no column.
size_t Width(const std::string& s) {
  return static_cast<size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

void Widen(std::vector<size_t>& width, const std::vector<std::string>& line) {
  if (width.size() < line.size()) width.resize(line.size());
  for (size_t i = 0; i < line.size(); ++i) width[i] = std::max(width[i], Width(line[i]));
}

void PrintLine(const std::vector<std::string>& line, const std::vector<size_t>& width) {
  std::string out;
  for (size_t i = 0; i < line.size(); ++i) {
    out += line[i];
    if (i + 1 < line.size()) out.append(width[i] + 2 - std::min(width[i], Width(line[i])), ' ');
  }
  std::cout << out << "\n";
}

std::vector<json::object> Rows(const json::value& v) {
  std::vector<json::object> rows;
  if (v.is_object() && v.as_object().contains("items") && v.as_object().at("items").is_array()) {
    for (const json::value& item : v.as_object().at("items").as_array()) {
      if (item.is_object()) rows.push_back(item.as_object());
    }
  } else if (v.is_object()) {
    rows.push_back(v.as_object());
  }
  return rows;
}

void PrintRaw(const std::string& raw) {
  std::cout << raw;
  if (!raw.empty() && raw.back() != '\n') std::cout << "\n";
}

// -o json: the body exactly as received; table: one row per item (or the object itself).
void PrintColumns(const CtlOptions& o, const Answer& a, const std::vector<Column>& columns) {
  if (o.output == "json") {
    PrintRaw(a.raw);
    return;
  }
  std::vector<std::vector<std::string>> lines{Headers(columns)};
  for (const json::object& row : Rows(a.json)) lines.push_back(Cells(row, columns));
  std::vector<size_t> width;
  for (const auto& line : lines) Widen(width, line);
  for (const auto& line : lines) PrintLine(line, width);
}

void Print(const CtlOptions& o, const Answer& a, const std::vector<std::string>& paths) {
  PrintColumns(o, a, PathColumns(paths));
}

// Splits a text/event-stream into the data of each event and its comment lines (the server's
// ": watching" comment ends the initial list of a watch).
class EventStreamReader {
 public:
  template <typename OnData, typename OnComment>
  void Feed(std::string_view bytes, OnData&& on_data, OnComment&& on_comment) {
    pending_.append(bytes);
    size_t start = 0;
    for (size_t nl; (nl = pending_.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string_view line(pending_.data() + start, nl - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty()) {
        if (has_data_) on_data(data_);
        data_.clear();
        has_data_ = false;
      } else if (line.front() == ':') {
        line.remove_prefix(1);
        if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
        on_comment(line);
      } else if (line.substr(0, 5) == "data:") {
        line.remove_prefix(5);
        if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
        if (has_data_) data_ += '\n';
        data_.append(line);
        has_data_ = true;
      }
    }
    pending_.erase(0, start);
  }

 private:
  std::string pending_;
  std::string data_;
  bool has_data_ = false;
};

// A row of a watch, with the event that produced it.
struct WatchRow {
  std::string type;  // CREATED | UPDATED | DELETED
  json::object row;
};

// Turns one watch event into rows (most resources: its data; GPUs: the GPUs of a worker).
using WatchExpander =
    std::function<std::vector<WatchRow>(const std::string& type, const json::object& data)>;

// Follows `path`'s watch stream (docs/api.md "Watch") until it ends or is interrupted: -o json
// prints each event as received, one per line; a table prints the current list, then a line per
// change (EVENT + the columns). UPDATED events that change no column are not printed. Exits 1 when
// the server ends the stream.
[[noreturn]] void Watch(const CtlOptions& o, ListPath path, const std::vector<Column>& columns,
                        const WatchExpander& expand = nullptr) {
  path.Add("watch", "true");
  const std::vector<std::string> header = [&] {
    std::vector<std::string> h{"EVENT"};
    for (const Column& c : columns) h.push_back(c.header);
    return h;
  }();
  std::vector<size_t> width{0};
  for (const Column& c : columns) width.push_back(c.min_width);
  Widen(width, header);
  std::vector<std::vector<std::string>> initial;  // printed together, aligned, once listed
  bool listing = true;
  std::map<std::string, std::vector<std::string>> last;  // row id → cells last printed
  auto flush_initial = [&] {
    if (!listing) return;
    listing = false;
    for (const auto& line : initial) Widen(width, line);
    PrintLine(header, width);
    for (const auto& line : initial) PrintLine(line, width);
    initial.clear();
    std::cout.flush();
  };
  auto on_row = [&](const WatchRow& r) {
    const std::string id = Cell(Field(r.row, "id"));
    std::vector<std::string> cells = Cells(r.row, columns);
    auto it = last.find(id);
    if (r.type == "UPDATED" && it != last.end() && it->second == cells) return;
    if (r.type == "DELETED") {
      last.erase(id);
    } else {
      last[id] = cells;
    }
    cells.insert(cells.begin(), r.type);
    if (listing) {
      initial.push_back(std::move(cells));
    } else {
      Widen(width, cells);
      PrintLine(cells, width);
      std::cout.flush();
    }
  };
  auto on_event = [&](const std::string& data) {
    if (o.output == "json") {
      std::cout << data << "\n" << std::flush;
      return;
    }
    Result<json::value> e = ParseJson(data);
    if (!e.ok() || !e->is_object()) return;
    const std::string type = Str(e->as_object(), "type");
    json::value payload = Field(e->as_object(), "data");
    if (!payload.is_object()) return;
    if (expand) {
      for (const WatchRow& r : expand(type, payload.as_object())) on_row(r);
    } else {
      on_row({type, payload.as_object()});
    }
  };
  EventStreamReader reader;
  StreamText(o, path.path, kWatchReadTimeout, [&](std::string_view bytes) {
    reader.Feed(bytes, on_event, [&](std::string_view comment) {
      if (comment == "watching" && o.output != "json") flush_initial();
    });
    return true;
  });
  if (o.output != "json") flush_initial();
  Fail("the server ended the watch; list and watch again");
}

// Flags of `list` commands.
struct ListFlags {
  bool wide = false;
  bool watch = false;
};

void AddListFlags(CLI::App* cmd, ListFlags& f, bool watchable) {
  cmd->add_flag("-w,--wide", f.wide, "More columns");
  if (watchable) cmd->add_flag("--watch", f.watch, "Print the list, then each change as it comes");
}

std::vector<Column> WithWide(std::vector<Column> base, const std::vector<Column>& wide, bool add) {
  return add ? std::move(base) + wide : base;
}

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    std::string item =
        s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// "10.0.0.0/8, 2001:db8::/32" as a JSON array; the server validates each entry.
json::array CidrArray(const std::string& comma_separated) {
  json::array out;
  for (const std::string& c : SplitComma(comma_separated)) {
    const size_t first = c.find_first_not_of(' ');
    const size_t last = c.find_last_not_of(' ');
    if (first != std::string::npos) out.emplace_back(c.substr(first, last - first + 1));
  }
  return out;
}

// ---- formatting of resources --------------------------------------------------------------------

// "GPU 0: 17.3 GiB, GPU 1: 17.3 GiB" from {"0": bytes, ...}.
std::string VramText(const json::value& vram) {
  if (!vram.is_object() || vram.as_object().empty()) return "-";
  std::string out;
  for (const auto& kv : vram.as_object()) {
    out += fmt::format("{}GPU {}: {}", out.empty() ? "" : ", ", std::string(kv.key()),
                       GiBCell(kv.value()));
  }
  return out;
}

std::string SourceText(const json::object& model) {
  json::value s = Field(model, "source");
  if (!s.is_object()) return "-";
  const json::object& src = s.as_object();
  const std::string type = Str(src, "type");
  if (type == "simulated") return "simulated " + WithUnit(Field(src, "params_b"), "B");
  if (type == "local_path") return Str(src, "path");
  std::string out = type + " " + Str(src, "repo");
  if (!Str(src, "file").empty()) out += " " + Str(src, "file");
  return out;
}

std::vector<Column> ModelColumns(bool wide) {
  return WithWide(
      {PathColumn("id"),
       PathColumn("name"),
       {"PROJECT", [](const json::object& m) { return Cell(Field(m, "project_id")); }},
       {"SOURCE", SourceText},
       {"BACKEND",
        [](const json::object& m) {
          return Str(m, "backend").empty() ? std::string("auto") : Str(m, "backend");
        }},
       {"READY",
        [](const json::object& m) {
          return Cell(Field(m, "ready_replicas")) + "/" + Cell(Field(m, "replicas"));
        }},
       PathColumn("placement_strategy")},
      PathColumns({"backend_version", "gpu_type", "gpu_compute_percent", "context_length",
                   "max_concurrent_sequences", "backend_parameters", "created_at"}),
      wide);
}

std::vector<Column> InstanceColumns(bool wide) {
  std::vector<Column> cols =
      PathColumns({"id", "name", "state", "worker_name", "gpu_indexes", "port", "restart_count"});
  cols[2].min_width = 13;  // UNSCHEDULABLE
  if (wide) {
    cols =
        std::move(cols) +
        std::vector<Column>{
            PathColumn("model_id"),
            {"CLAIM VRAM", [](const json::object& i) { return VramText(Field(i, "claim.vram")); }},
            {"CLAIM RAM", [](const json::object& i) { return GiBCell(Field(i, "claim.ram")); }},
            PathColumn("created_at")};
  }
  return std::move(cols) + std::vector<Column>{PathColumn("state_message")};
}

std::vector<Column> GpuColumns(bool wide) {
  Column worker_state = PathColumn("worker_state");
  worker_state.min_width = 12;  // REGISTERING, MAINTENANCE
  std::vector<Column> cols{
      PathColumn("id"),
      PathColumn("name"),
      worker_state,
      {"TOTAL", [](const json::object& g) { return GiBCell(Field(g, "memory_total")); }},
      {"USED", [](const json::object& g) { return GiBCell(Field(g, "memory_used")); }},
      {"ALLOCATED", [](const json::object& g) { return GiBCell(Field(g, "memory_allocated")); }},
      {"UTIL", [](const json::object& g) { return Rounded(Field(g, "utilization"), "%"); }},
      {"TEMP", [](const json::object& g) { return Rounded(Field(g, "temperature"), "°C"); }},
      {"POWER",
       [](const json::object& g) {
         std::optional<double> limit = Number(Field(g, "power_limit"));
         if (limit && *limit > 0) {
           return Rounded(Field(g, "power"), "") + fmt::format(" / {:.0f} W", *limit);
         }
         return Rounded(Field(g, "power"), " W");
       }},
  };
  if (!wide) return cols;
  return std::move(cols) +
         std::vector<Column>{
             {"EXTERNAL",
              [](const json::object& g) { return GiBCell(Field(g, "memory_used_external")); }},
             PathColumn("uuid"),
             {"CC", [](const json::object& g) { return Cell(Field(g, "compute_capability")); }},
             PathColumn("simulated"),
             {"PROCESSES",
              [](const json::object& g) {
                json::value procs = Field(g, "processes");
                if (!procs.is_array() || procs.as_array().empty()) return std::string("-");
                std::string out;
                for (const json::value& p : procs.as_array()) {
                  if (!p.is_object()) continue;
                  const json::object& po = p.as_object();
                  const json::value managed = Field(po, "managed");
                  out += fmt::format("{}{} {}{}", out.empty() ? "" : ", ", Cell(Field(po, "pid")),
                                     GiBCell(Field(po, "memory_used")),
                                     managed.is_bool() && managed.as_bool() ? " (segma)" : "");
                }
                return out;
              }},
             // Enforced slices: "chat-1 11.9/12.0 GiB, 2 refused" per engine held to a limit.
             {"SLICES", [](const json::object& g) {
                json::value slices = Field(g, "slices");
                if (!slices.is_array() || slices.as_array().empty()) return std::string("-");
                std::string out;
                for (const json::value& s : slices.as_array()) {
                  if (!s.is_object()) continue;
                  const json::object& so = s.as_object();
                  std::string who = Cell(Field(so, "instance_name"));
                  if (who == "-") who = "instance " + Cell(Field(so, "instance_id"));
                  const std::optional<double> used = Number(Field(so, "memory_used"));
                  const std::optional<double> limit = Number(Field(so, "memory_limit"));
                  const std::optional<double> hits = Number(Field(so, "limit_hits"));
                  out += fmt::format("{}{} {:.1f}/{:.1f} GiB", out.empty() ? "" : ", ", who,
                                     used.value_or(0) / (1024.0 * 1024 * 1024),
                                     limit.value_or(0) / (1024.0 * 1024 * 1024));
                  if (hits && *hits > 0) out += fmt::format(", {:.0f} refused", *hits);
                }
                return out;
              }}};
}

std::vector<Column> WorkerColumns(bool wide, bool watching) {
  std::vector<Column> cols = PathColumns({"id", "name", "state", "address"});
  cols[2].min_width = 12;  // REGISTERING, MAINTENANCE
  cols.push_back({"GPUS", [](const json::object& w) {
                    json::value gpus = Field(w, "status.gpus");
                    return gpus.is_array() ? std::to_string(gpus.as_array().size()) : "-";
                  }});
  cols.push_back(
      {"GPU SOURCE", [](const json::object& w) { return Cell(Field(w, "status.gpu_source")); }});
  if (wide) {
    cols = std::move(cols) +
           std::vector<Column>{
               {"CPUS", [](const json::object& w) { return Cell(Field(w, "status.cpu_count")); }},
               {"MEMORY",
                [](const json::object& w) {
                  return GiBCell(Field(w, "status.memory_used")) + " / " +
                         GiBCell(Field(w, "status.memory_total"));
                }},
               {"ARCH", [](const json::object& w) { return Cell(Field(w, "status.arch")); }},
               PathColumn("labels"),
               PathColumn("cluster_id")};
  }
  // Every heartbeat changes last_heartbeat_at: a watch would print one line per heartbeat.
  if (!watching) cols.push_back(PathColumn("last_heartbeat_at"));
  return cols;
}

// A watch of /v2/gpus lists GPUs, then follows their workers: each worker event becomes the
// worker's GPUs as the API shows them now (with segma's allocations).
WatchExpander GpuWatchExpander(const CtlOptions& o) {
  auto gpus_of = std::make_shared<std::map<std::string, std::set<std::string>>>();
  return [&o, gpus_of](const std::string& type, const json::object& data) -> std::vector<WatchRow> {
    if (!data.contains("status")) {  // a GPU of the initial list
      (*gpus_of)[Cell(Field(data, "worker_id"))].insert(Cell(Field(data, "id")));
      return {{type, data}};
    }
    const std::string worker = Cell(Field(data, "id"));
    std::set<std::string>& known = (*gpus_of)[worker];
    std::vector<WatchRow> out;
    if (type == "DELETED") {
      for (const std::string& id : known) out.push_back({type, json::object{{"id", id}}});
      known.clear();
      return out;
    }
    Answer now =
        Call(o, verb::get, ListPath{"/v2/gpus?per_page=500"}.Add("worker_id", worker).path);
    std::set<std::string> seen;
    for (json::object& g : Rows(now.json)) {
      const std::string id = Cell(Field(g, "id"));
      seen.insert(id);
      out.push_back({known.count(id) ? "UPDATED" : "CREATED", std::move(g)});
    }
    for (const std::string& id : known) {
      if (!seen.count(id)) out.push_back({"DELETED", json::object{{"id", id}}});
    }
    known = std::move(seen);
    return out;
  };
}

// ---- models -------------------------------------------------------------------------------------

// Flags of `models create` and `models evaluate`; only those given are sent.
struct ModelFlags {
  std::string name;
  int64_t project = 0;
  std::string source_type;
  std::string path;
  std::string repo;
  std::string file;
  double params_b = 0;
  std::string backend;
  std::string backend_version;
  int64_t replicas = 1;
  int64_t context_length = 0;
  int64_t max_concurrent_sequences = 0;
  std::string placement_strategy;
  std::string gpu_type;
  int64_t gpu_compute_percent = 0;
  std::vector<std::string> backend_params;
  std::map<std::string, CLI::Option*> given;
};

void AddModelFlags(CLI::App* cmd, ModelFlags& f, bool name_required) {
  auto add = [&](const std::string& flag, auto& value, const std::string& help) {
    CLI::Option* opt = cmd->add_option(flag, value, help);
    f.given[flag] = opt;
    return opt;
  };
  CLI::Option* name = add("--name", f.name, "Model name, unique in its project");
  if (name_required) name->required();
  add("--project", f.project, "Project id (default: the API key's)");
  add("--source-type", f.source_type,
      "local_path | huggingface | modelscope | simulated (default: from --path, --repo or "
      "--params-b)")
      ->check(CLI::IsMember({"local_path", "huggingface", "modelscope", "simulated"}));
  add("--path", f.path, "local_path: absolute path of the model on the workers");
  add("--repo", f.repo, "huggingface / modelscope: org/name");
  add("--file", f.file, "huggingface / modelscope: a file or glob in the repo (GGUF)");
  add("--params-b", f.params_b, "Parameters in billions (simulated: required; hub: size hint)");
  add("--backend", f.backend, "llama.cpp, vllm, sglang, tensorrt-llm, simulator or custom");
  add("--backend-version", f.backend_version, "Backend version (default: the backend's)");
  add("--replicas", f.replicas, "Instances (default 1)");
  add("--context-length", f.context_length, "Tokens per sequence");
  add("--max-concurrent-sequences", f.max_concurrent_sequences, "Sequences served at once");
  add("--placement-strategy", f.placement_strategy, "spread | binpack | fragmentation");
  add("--gpu-type", f.gpu_type, "Substring of the GPU name, e.g. H100");
  add("--gpu-compute-percent", f.gpu_compute_percent,
      "Share of each of its GPUs' compute (1-100; default: no limit). Shares on a GPU add up to "
      "100 at most; enforced with gpu_sharing enforced");
  add("--backend-param", f.backend_params, "An engine argument (repeatable)");
}

json::object ModelBody(const ModelFlags& f, const std::string& default_name) {
  auto given = [&](const std::string& flag) { return f.given.at(flag)->count() > 0; };
  json::object body;
  body["name"] = given("--name") ? f.name : default_name;
  if (given("--project")) body["project_id"] = f.project;
  std::string type = f.source_type;
  if (type.empty()) {
    if (given("--path")) {
      type = "local_path";
    } else if (given("--repo")) {
      type = "huggingface";
    } else if (given("--params-b")) {
      type = "simulated";
    } else {
      Fail("--source-type is required (or give --path, --repo or --params-b)");
    }
  }
  json::object source{{"type", type}};
  if (given("--path")) source["path"] = f.path;
  if (given("--repo")) source["repo"] = f.repo;
  if (given("--file")) source["file"] = f.file;
  if (given("--params-b")) source["params_b"] = f.params_b;
  body["source"] = std::move(source);
  if (given("--backend")) body["backend"] = f.backend;
  if (given("--backend-version")) body["backend_version"] = f.backend_version;
  if (given("--replicas")) body["replicas"] = f.replicas;
  if (given("--context-length")) body["context_length"] = f.context_length;
  if (given("--max-concurrent-sequences")) {
    body["max_concurrent_sequences"] = f.max_concurrent_sequences;
  }
  if (given("--placement-strategy")) body["placement_strategy"] = f.placement_strategy;
  if (given("--gpu-type")) body["gpu_type"] = f.gpu_type;
  // Checked by the server (400 with the field's problem), like every other field.
  if (given("--gpu-compute-percent")) body["gpu_compute_percent"] = f.gpu_compute_percent;
  if (!f.backend_params.empty()) {
    json::array params;
    for (const std::string& p : f.backend_params) params.emplace_back(p);
    body["backend_parameters"] = std::move(params);
  }
  return body;
}

// The answer of POST /v2/model-evaluations as label: value lines.
void PrintEvaluation(const json::object& e) {
  std::vector<std::pair<std::string, std::string>> lines;
  const json::value fits = Field(e, "fits");
  lines.emplace_back("FITS", fits.is_bool() && fits.as_bool() ? "yes" : "no");
  lines.emplace_back("SUMMARY", Cell(Field(e, "summary")));
  if (json::value engine = Field(e, "engine"); engine.is_object()) {
    const json::object& en = engine.as_object();
    const json::value automatic = Field(en, "automatic");
    std::string how = automatic.is_bool() && automatic.as_bool() ? "automatic" : "as asked";
    if (const std::string format = Str(en, "format"); !format.empty() && format != "unknown") {
      how += ", " + format;
    }
    lines.emplace_back(
        "ENGINE", fmt::format("{} {} ({})", Str(en, "backend"), Str(en, "backend_version"), how));
    if (!Str(en, "reason").empty()) lines.emplace_back("WHY", Str(en, "reason"));
  } else {
    lines.emplace_back("ENGINE", "-");
  }
  lines.emplace_back("STRATEGY",
                     fmt::format("{}, replica spread {}", Cell(Field(e, "placement_strategy")),
                                 Cell(Field(e, "replica_spread"))));
  if (json::value p = Field(e, "placement"); p.is_object()) {
    const json::object& pl = p.as_object();
    std::string where = fmt::format("worker {}, GPUs {} ({})", Cell(Field(pl, "worker_name")),
                                    Cell(Field(pl, "gpu_indexes")), Cell(Field(pl, "kind")));
    std::optional<double> tp = Number(Field(pl, "tensor_parallel_size"));
    if (tp && *tp > 1) where += fmt::format(", tensor parallel {}", FormatNumber(*tp));
    json::value subs = Field(pl, "subordinates");
    if (subs.is_array()) {
      for (const json::value& s : subs.as_array()) {
        if (!s.is_object()) continue;
        where += fmt::format("; + worker {}, GPUs {}", Cell(Field(s.as_object(), "worker_name")),
                             Cell(Field(s.as_object(), "gpu_indexes")));
      }
    }
    lines.emplace_back("PLACEMENT", where);
  }
  if (json::value c = Field(e, "claim"); c.is_object()) {
    const json::object& claim = c.as_object();
    std::string text = VramText(Field(claim, "vram"));
    std::optional<double> ram = Number(Field(claim, "ram"));
    if (ram && *ram > 0) text += "; RAM " + FormatGiB(*ram);
    std::optional<double> off = Number(Field(claim, "offload_layers"));
    std::optional<double> total = Number(Field(claim, "total_layers"));
    if (off && total && *total > 0 && *off < *total) {
      text += fmt::format("; {} of {} layers on the GPU", FormatNumber(*off), FormatNumber(*total));
    }
    lines.emplace_back("CLAIM", text);
  }
  if (json::value s = Field(e, "serves"); s.is_object()) {
    const json::object& serves = s.as_object();
    std::optional<double> seq = Number(Field(serves, "sequences"));
    std::optional<double> ctx = Number(Field(serves, "context_length"));
    std::optional<double> target = Number(Field(serves, "target_sequences"));
    std::string text = "-";
    if (seq && ctx) {
      text = fmt::format("{} sequences × {} tokens", FormatNumber(*seq), FormatNumber(*ctx));
      if (target && *target != *seq) text += fmt::format(" (asked {})", FormatNumber(*target));
    }
    lines.emplace_back("SERVES", text);
  }
  if (json::value p = Field(e, "performance"); p.is_object()) {
    const json::object& perf = p.as_object();
    std::optional<double> tps = Number(Field(perf, "tokens_per_second_per_user"));
    std::optional<double> ttft = Number(Field(perf, "ttft_ms"));
    std::optional<double> seq = Number(Field(perf, "sequences"));
    lines.emplace_back(
        "PREDICTED", tps && ttft && seq
                         ? fmt::format("{} tokens/s per user, first token {} ms, with {} users",
                                       FormatNumber(*tps), FormatNumber(*ttft), FormatNumber(*seq))
                         : "- (" + Cell(Field(perf, "reason")) + ")");
  }
  if (json::value w = Field(e, "warnings"); w.is_array()) {
    for (const json::value& warning : w.as_array()) lines.emplace_back("WARNING", Cell(warning));
  }
  if (json::value r = Field(e, "reasons"); r.is_object()) {
    for (const auto& kv : r.as_object()) {
      lines.emplace_back("REASON", fmt::format("{}: {}", std::string(kv.key()), Cell(kv.value())));
    }
  }
  size_t width = 0;
  for (const auto& [label, text] : lines) width = std::max(width, label.size());
  for (const auto& [label, text] : lines) {
    std::cout << fmt::format("{:<{}}{}\n", label, width + 2, text);
  }
}

void AddModelCommands(CLI::App* ctl, const std::shared_ptr<CtlOptions>& opts) {
  CLI::App* models = ctl->add_subcommand("models", "Deployments (models) and dry-run placement");
  models->require_subcommand(1);

  struct ListArgs {
    ListFlags flags;
    int64_t project = 0;
  };
  auto list = std::make_shared<ListArgs>();
  CLI::App* list_cmd = models->add_subcommand("list");
  list_cmd->add_option("--project", list->project, "project id");
  AddListFlags(list_cmd, list->flags, true);
  list_cmd->callback([opts, list] {
    ListPath path{"/v2/models?per_page=500"};
    if (list->project > 0) path.Add("project_id", std::to_string(list->project));
    if (list->flags.watch) Watch(*opts, path, ModelColumns(list->flags.wide));
    PrintColumns(*opts, Call(*opts, verb::get, path.path), ModelColumns(list->flags.wide));
  });

  auto get_id = std::make_shared<int64_t>(0);
  CLI::App* get_cmd = models->add_subcommand("get");
  get_cmd->add_option("id", *get_id)->required();
  get_cmd->callback([opts, get_id] {
    PrintColumns(*opts, Call(*opts, verb::get, fmt::format("/v2/models/{}", *get_id)),
                 ModelColumns(true));
  });

  auto create = std::make_shared<ModelFlags>();
  CLI::App* create_cmd = models->add_subcommand("create", "Deploy a model");
  AddModelFlags(create_cmd, *create, true);
  create_cmd->callback([opts, create] {
    PrintColumns(*opts, Call(*opts, verb::post, "/v2/models", ModelBody(*create, "")),
                 ModelColumns(false));
  });

  auto evaluate = std::make_shared<ModelFlags>();
  CLI::App* evaluate_cmd = models->add_subcommand(
      "evaluate", "Dry run: would this model fit, where, with which engine (nothing is created)");
  AddModelFlags(evaluate_cmd, *evaluate, false);
  evaluate_cmd->callback([opts, evaluate] {
    Answer a = Call(*opts, verb::post, "/v2/model-evaluations", ModelBody(*evaluate, "evaluation"));
    if (opts->output == "json") {
      PrintRaw(a.raw);
    } else if (a.json.is_object()) {
      PrintEvaluation(a.json.as_object());
    }
  });

  auto scale = std::make_shared<std::pair<int64_t, int64_t>>();
  CLI::App* scale_cmd = models->add_subcommand("scale", "Set the number of replicas");
  scale_cmd->add_option("id", scale->first)->required();
  scale_cmd->add_option("replicas", scale->second)->required();
  scale_cmd->callback([opts, scale] {
    PrintColumns(*opts,
                 Call(*opts, verb::patch, fmt::format("/v2/models/{}", scale->first),
                      json::object{{"replicas", scale->second}}),
                 ModelColumns(false));
  });

  auto delete_id = std::make_shared<int64_t>(0);
  CLI::App* delete_cmd = models->add_subcommand("delete", "Delete a model and its instances");
  delete_cmd->add_option("id", *delete_id)->required();
  delete_cmd->callback([opts, delete_id] {
    Call(*opts, verb::delete_, fmt::format("/v2/models/{}", *delete_id));
    if (opts->output != "json") std::cout << "model " << *delete_id << " deleted\n";
  });

  // instances
  CLI::App* instances = ctl->add_subcommand("instances", "Model instances (replicas)");
  instances->require_subcommand(1);
  struct InstanceListArgs {
    ListFlags flags;
    int64_t model = 0;
  };
  auto ilist = std::make_shared<InstanceListArgs>();
  CLI::App* ilist_cmd = instances->add_subcommand("list");
  ilist_cmd->add_option("--model", ilist->model, "model id");
  AddListFlags(ilist_cmd, ilist->flags, true);
  ilist_cmd->callback([opts, ilist] {
    ListPath path{"/v2/model-instances?per_page=500"};
    if (ilist->model > 0) path.Add("model_id", std::to_string(ilist->model));
    if (ilist->flags.watch) Watch(*opts, path, InstanceColumns(ilist->flags.wide));
    PrintColumns(*opts, Call(*opts, verb::get, path.path), InstanceColumns(ilist->flags.wide));
  });
  struct LogArgs {
    int64_t id = 0;
    int64_t tail = 0;
    bool follow = false;
    CLI::Option* tail_opt = nullptr;
  };
  auto logs = std::make_shared<LogArgs>();
  CLI::App* logs_cmd = instances->add_subcommand("logs", "The engine's log");
  logs_cmd->add_option("id", logs->id, "instance id")->required();
  logs->tail_opt = logs_cmd->add_option("--tail", logs->tail, "Last N lines (default 100)");
  logs_cmd->add_flag("-f,--follow", logs->follow, "Keep printing new lines until interrupted");
  logs_cmd->callback([opts, logs] {
    ListPath path{fmt::format("/v2/model-instances/{}/logs", logs->id)};
    if (logs->tail_opt->count() > 0) path.Add("tail", std::to_string(logs->tail));
    if (!logs->follow) {
      std::cout << CallText(*opts, path.path);
      return;
    }
    path.Add("follow", "true");
    // A quiet engine writes nothing for long: only the server ends the stream.
    StreamText(*opts, path.path, std::chrono::hours(24), [](std::string_view piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    });
  });

  // model routes
  CLI::App* routes = ctl->add_subcommand("routes", "Model routes: public names over deployments");
  routes->require_subcommand(1);
  auto route_columns = [](bool wide) {
    return WithWide({PathColumn("id"),
                     PathColumn("name"),
                     PathColumn("project_id"),
                     {"TARGETS",
                      [](const json::object& r) {
                        json::value targets = Field(r, "targets");
                        if (!targets.is_array()) return std::string("-");
                        std::string out;
                        for (const json::value& t : targets.as_array()) {
                          if (!t.is_object()) continue;
                          out += fmt::format("{}model {} (weight {})", out.empty() ? "" : ", ",
                                             Cell(Field(t.as_object(), "model_id")),
                                             Cell(Field(t.as_object(), "weight")));
                        }
                        return out.empty() ? std::string("-") : out;
                      }},
                     PathColumn("description")},
                    PathColumns({"created_at", "updated_at"}), wide);
  };
  struct RouteListArgs {
    ListFlags flags;
    int64_t project = 0;
  };
  auto rlist = std::make_shared<RouteListArgs>();
  CLI::App* rlist_cmd = routes->add_subcommand("list");
  rlist_cmd->add_option("--project", rlist->project, "project id");
  AddListFlags(rlist_cmd, rlist->flags, false);
  rlist_cmd->callback([opts, rlist, route_columns] {
    ListPath path{"/v2/model-routes?per_page=500"};
    if (rlist->project > 0) path.Add("project_id", std::to_string(rlist->project));
    PrintColumns(*opts, Call(*opts, verb::get, path.path), route_columns(rlist->flags.wide));
  });
  auto rget = std::make_shared<int64_t>(0);
  CLI::App* rget_cmd = routes->add_subcommand("get");
  rget_cmd->add_option("id", *rget)->required();
  rget_cmd->callback([opts, rget, route_columns] {
    PrintColumns(*opts, Call(*opts, verb::get, fmt::format("/v2/model-routes/{}", *rget)),
                 route_columns(true));
  });
  auto rdelete = std::make_shared<int64_t>(0);
  CLI::App* rdelete_cmd = routes->add_subcommand("delete", "Delete a route (its models stay)");
  rdelete_cmd->add_option("id", *rdelete)->required();
  rdelete_cmd->callback([opts, rdelete] {
    Call(*opts, verb::delete_, fmt::format("/v2/model-routes/{}", *rdelete));
    if (opts->output != "json") std::cout << "route " << *rdelete << " deleted\n";
  });
}

// ---- backends, model files, usage ---------------------------------------------------------------

void AddCatalogCommands(CLI::App* ctl, const std::shared_ptr<CtlOptions>& opts) {
  CLI::App* backends = ctl->add_subcommand("backends", "Inference engines");
  backends->require_subcommand(1);
  auto blist = std::make_shared<ListFlags>();
  CLI::App* blist_cmd = backends->add_subcommand("list");
  AddListFlags(blist_cmd, *blist, false);
  blist_cmd->callback([opts, blist] {
    PrintColumns(*opts, Call(*opts, verb::get, "/v2/backends?per_page=500"),
                 WithWide(PathColumns({"name", "default_version", "versions", "model_formats",
                                       "gpu_vendors", "built_in"}),
                          PathColumns({"min_compute_capability", "cpu_supported", "custom_versions",
                                       "metrics_format", "health_path"}),
                          blist->wide));
  });

  CLI::App* files = ctl->add_subcommand("model-files", "Model files in the workers' caches");
  files->require_subcommand(1);
  struct FileListArgs {
    ListFlags flags;
    int64_t worker = 0;
  };
  auto flist = std::make_shared<FileListArgs>();
  CLI::App* flist_cmd = files->add_subcommand("list");
  flist_cmd->add_option("--worker", flist->worker, "worker id");
  AddListFlags(flist_cmd, flist->flags, false);
  auto file_columns = [](bool wide) {
    return WithWide(
        {PathColumn("id"),
         PathColumn("worker_name"),
         {"SOURCE", SourceText},
         PathColumn("backend"),
         PathColumn("state"),
         {"PROGRESS", [](const json::object& f) { return WithUnit(Field(f, "progress"), "%"); }},
         {"SIZE", [](const json::object& f) { return GiBCell(Field(f, "size_bytes")); }}},
        PathColumns({"local_path", "source_key", "state_message"}), wide);
  };
  flist_cmd->callback([opts, flist, file_columns] {
    ListPath path{"/v2/model-files?per_page=500"};
    if (flist->worker > 0) path.Add("worker_id", std::to_string(flist->worker));
    PrintColumns(*opts, Call(*opts, verb::get, path.path), file_columns(flist->flags.wide));
  });
  auto fdelete = std::make_shared<int64_t>(0);
  CLI::App* fdelete_cmd =
      files->add_subcommand("delete", "Remove the files from the worker (admins)");
  fdelete_cmd->add_option("id", *fdelete)->required();
  fdelete_cmd->callback([opts, fdelete, file_columns] {
    PrintColumns(*opts, Call(*opts, verb::delete_, fmt::format("/v2/model-files/{}", *fdelete)),
                 file_columns(false));
  });

  struct UsageArgs {
    std::string group_by = "project";
    std::string bucket;
    std::string from;
    std::string to;
    int64_t project = 0;
    bool csv = false;
  };
  auto usage = std::make_shared<UsageArgs>();
  CLI::App* usage_cmd = ctl->add_subcommand(
      "usage", "Requests, tokens, GPU-hours and cost per project, route, GPU type, ...");
  const std::vector<std::string> groups = {"project", "user",       "key",      "model",
                                           "route",   "deployment", "gpu_type", "finish"};
  usage_cmd
      ->add_option("--group-by", usage->group_by,
                   "project | user | key | model | route | deployment | gpu_type | finish")
      ->check(CLI::IsMember(groups));
  usage_cmd->add_option("--bucket", usage->bucket, "hour | day | month (UTC)")
      ->check(CLI::IsMember({"hour", "day", "month"}));
  usage_cmd->add_option("--from", usage->from, "RFC 3339 (default: 30 days ago)");
  usage_cmd->add_option("--to", usage->to, "RFC 3339 (default: now)");
  usage_cmd->add_option("--project", usage->project, "project id");
  usage_cmd->add_flag("--csv", usage->csv, "The server's CSV");
  usage_cmd->callback([opts, usage] {
    ListPath path{"/v2/usage"};
    path.Add("group_by", usage->group_by);
    if (!usage->bucket.empty()) path.Add("bucket", usage->bucket);
    if (!usage->from.empty()) path.Add("from", usage->from);
    if (!usage->to.empty()) path.Add("to", usage->to);
    if (usage->project > 0) path.Add("project_id", std::to_string(usage->project));
    if (usage->csv) {
      std::cout << CallText(*opts, path.Add("format", "csv").path);
      return;
    }
    Answer a = Call(*opts, verb::get, path.path);
    std::vector<Column> columns;
    if (!usage->bucket.empty()) columns.push_back(PathColumn("bucket"));
    const std::string currency = Str(a.json.as_object(), "currency");
    PrintColumns(
        *opts, a,
        columns +
            PathColumns({usage->group_by, "requests", "errors", "prompt_tokens",
                         "completion_tokens", "cut_short", "gpu_hours", "vram_gib_hours"}) +
            std::vector<Column>{{"COST (" + currency + ")",
                                 [](const json::object& r) { return Cell(Field(r, "cost")); }}});
  });

  // prices get | set: the admin-set price table behind the cost column.
  CLI::App* prices = ctl->add_subcommand("prices", "The price table of usage costs (admins)");
  prices->require_subcommand(1);
  const std::vector<Column> price_columns = PathColumns({"unit", "name", "price"});
  prices->add_subcommand("get", "Show the price table")->callback([opts, price_columns] {
    Answer a = Call(*opts, verb::get, "/v2/prices");
    if (opts->output != "json") {
      std::cout << "currency: " << Str(a.json.as_object(), "currency") << "\n";
    }
    PrintColumns(*opts, a, price_columns);
  });
  struct PriceArgs {
    std::string currency;
    std::string unit;
    std::string name;
    double price = -1;
  };
  auto price = std::make_shared<PriceArgs>();
  CLI::App* set_cmd = prices->add_subcommand(
      "set",
      "Set one price (added to, or replacing its unit and name in, the table) or the "
      "currency");
  set_cmd->add_option("--currency", price->currency, "three capital letters, like USD");
  set_cmd->add_option("unit", price->unit, "prompt_1m_tokens | completion_1m_tokens | gpu_hour")
      ->check(CLI::IsMember({"prompt_1m_tokens", "completion_1m_tokens", "gpu_hour"}));
  set_cmd->add_option("name", price->name, "the model name (tokens) or GPU type (gpu_hour)");
  set_cmd->add_option("price", price->price, "non-negative, per 1M tokens or per GPU-hour");
  set_cmd->callback([opts, price, price_columns] {
    if (price->unit.empty() && price->currency.empty()) Fail("give UNIT NAME PRICE or --currency");
    if (!price->unit.empty() && (price->name.empty() || price->price < 0)) {
      Fail("give UNIT NAME PRICE, with a non-negative PRICE");
    }
    // The API replaces the whole table: read it, change one entry, write it back.
    json::object table = Call(*opts, verb::get, "/v2/prices").json.as_object();
    json::object body{{"currency", table.at("currency")}};
    if (!price->currency.empty()) body["currency"] = price->currency;
    json::array items;
    for (const json::value& v : table.at("items").as_array()) {
      const json::object& item = v.as_object();
      if (Str(item, "unit") == price->unit && Str(item, "name") == price->name) continue;
      items.push_back(json::object{
          {"unit", item.at("unit")}, {"name", item.at("name")}, {"price", item.at("price")}});
    }
    if (!price->unit.empty()) {
      items.push_back(
          json::object{{"unit", price->unit}, {"name", price->name}, {"price", price->price}});
    }
    body["items"] = std::move(items);
    Answer a = Call(*opts, verb::put, "/v2/prices", json::value(std::move(body)));
    if (opts->output != "json") {
      std::cout << "currency: " << Str(a.json.as_object(), "currency") << "\n";
    }
    PrintColumns(*opts, a, price_columns);
  });
}

}  // namespace

// ---- audit trail (admins) ---------------------------------------------------------------------

void AddAuditCommands(CLI::App* ctl, const std::shared_ptr<CtlOptions>& opts) {
  CLI::App* audit = ctl->add_subcommand("audit", "The audit trail: who changed what (admins)");
  audit->require_subcommand(1);
  struct AuditListArgs {
    std::string actor;
    int64_t project = 0;
    std::string resource;
    std::string from;
    std::string to;
    int page = 1;
    int per_page = 100;
    bool csv = false;
  };
  auto list = std::make_shared<AuditListArgs>();
  CLI::App* list_cmd = audit->add_subcommand("list", "Recorded calls, oldest first");
  list_cmd->add_option("--actor", list->actor, "username, or user:ID, api_key:ID, worker:ID");
  list_cmd->add_option("--project", list->project, "project id");
  list_cmd->add_option("--resource", list->resource, "models, api-keys, auth, ...");
  list_cmd->add_option("--from", list->from, "RFC 3339");
  list_cmd->add_option("--to", list->to, "RFC 3339");
  list_cmd->add_option("--page", list->page)->check(CLI::PositiveNumber);
  list_cmd->add_option("--per-page", list->per_page)->check(CLI::Range(1, 500));
  list_cmd->add_flag("--csv", list->csv, "The server's CSV");
  list_cmd->callback([opts, list] {
    ListPath path{"/v2/audit-events"};
    path.Add("page", std::to_string(list->page)).Add("per_page", std::to_string(list->per_page));
    if (!list->actor.empty()) path.Add("actor", list->actor);
    if (list->project > 0) path.Add("project_id", std::to_string(list->project));
    if (!list->resource.empty()) path.Add("resource", list->resource);
    if (!list->from.empty()) path.Add("from", list->from);
    if (!list->to.empty()) path.Add("to", list->to);
    if (list->csv) {
      std::cout << CallText(*opts, path.Add("format", "csv").path);
      return;
    }
    PrintColumns(
        *opts, Call(*opts, verb::get, path.path),
        PathColumns({"id", "at", "actor_kind", "actor_name", "method", "route", "resource_id",
                     "project_id", "status", "client_address", "request_id"}));
  });
  audit->add_subcommand("verify", "Check the hash chain; exits 1 when a row was altered or deleted")
      ->callback([opts] {
        Answer a = Call(*opts, verb::get, "/v2/audit-events/verify");
        const json::object& v = a.json.as_object();
        const bool ok = v.contains("ok") && v.at("ok").is_bool() && v.at("ok").as_bool();
        if (opts->output == "json") {
          PrintRaw(a.raw);
        } else if (ok) {
          std::cout << "audit trail intact: " << Cell(Field(v, "checked")) << " records, head "
                    << Str(v, "head_hash") << "\n";
        } else {
          std::cout << "audit trail BROKEN at record " << Cell(Field(v, "first_bad_id")) << ": "
                    << Str(v, "reason") << " (" << Cell(Field(v, "checked"))
                    << " records checked)\n";
        }
        std::cout.flush();
        if (!ok) std::exit(1);
      });
}

void AddCtlCommands(CLI::App& app) {
  auto opts = std::make_shared<CtlOptions>();
  CLI::App* ctl = app.add_subcommand("ctl", "Manage segma through its REST API");
  ctl->require_subcommand(1);
  ctl->add_option("--server", opts->server, "Server URL (default http://127.0.0.1:8080)")
      ->envname("SEGMA_SERVER");
  ctl->add_option("--token", opts->token, "Session token or API key")->envname("SEGMA_TOKEN");
  ctl->add_option("-o,--output", opts->output, "table or json")
      ->check(CLI::IsMember({"table", "json"}));
  ctl->parse_complete_callback([opts] {
    LoadCredentials(*opts);
    if (opts->server.empty()) opts->server = "http://127.0.0.1:8080";
  });

  // login / logout
  auto login = std::make_shared<std::pair<std::string, std::string>>();
  CLI::App* login_cmd = ctl->add_subcommand("login", "Log in and keep the session token");
  login_cmd->add_option("-u,--username", login->first)->required();
  login_cmd->add_option("-p,--password", login->second, "or SEGMA_PASSWORD")
      ->envname("SEGMA_PASSWORD")
      ->required();
  login_cmd->callback([opts, login] {
    Answer a = Call(*opts, verb::post, "/v2/auth/login",
                    json::object{{"username", login->first}, {"password", login->second}});
    SaveCredentials(opts->server, json::value_to<std::string>(a.json.at("token")));
    std::cout << "logged in to " << opts->server << " as " << login->first << "\n";
  });
  ctl->add_subcommand("logout", "End the session")->callback([opts] {
    Call(*opts, verb::post, "/v2/auth/logout");
    SaveCredentials(opts->server, "");
    std::cout << "logged out\n";
  });

  // A password an admin set (or the generated bootstrap one) must be changed before anything
  // else works (403 password_change_required).
  auto passwords = std::make_shared<std::pair<std::string, std::string>>();
  CLI::App* passwd_cmd = ctl->add_subcommand(
      "change-password", "Change your password (other sessions of yours are ended)");
  passwd_cmd->add_option("--old", passwords->first, "or SEGMA_PASSWORD")
      ->envname("SEGMA_PASSWORD")
      ->required();
  passwd_cmd->add_option("--new", passwords->second, "at least 8 characters; or SEGMA_NEW_PASSWORD")
      ->envname("SEGMA_NEW_PASSWORD")
      ->required();
  passwd_cmd->callback([opts, passwords] {
    Call(*opts, verb::post, "/v2/auth/change-password",
         json::object{{"old_password", passwords->first}, {"new_password", passwords->second}});
    std::cout << "password changed\n";
  });

  // sessions
  CLI::App* sessions =
      ctl->add_subcommand("sessions", "Signed-in sessions: yours, or anyone's (admins)");
  sessions->require_subcommand(1);
  struct SessionListArgs {
    bool all = false;
    int64_t user_id = 0;
  };
  auto sl = std::make_shared<SessionListArgs>();
  CLI::App* sessions_list = sessions->add_subcommand("list", "Sessions not revoked or expired");
  sessions_list->add_flag("--all", sl->all, "Every user's (admins)");
  sessions_list->add_option("--user-id", sl->user_id, "This user's (admins)");
  sessions_list->callback([opts, sl] {
    std::string path = "/v2/sessions?per_page=500&sort=-last_used_at";
    if (sl->all) path += "&all=true";
    if (sl->user_id > 0) path += fmt::format("&user_id={}", sl->user_id);
    Print(*opts, Call(*opts, verb::get, path),
          {"id", "username", "created_at", "last_used_at", "expires_at", "client_address",
           "user_agent", "current"});
  });
  auto session_id = std::make_shared<int64_t>(0);
  CLI::App* sessions_revoke =
      sessions->add_subcommand("revoke", "End a session (its token stops working at once)");
  sessions_revoke->add_option("id", *session_id)->required();
  sessions_revoke->callback([opts, session_id] {
    Call(*opts, verb::delete_, fmt::format("/v2/sessions/{}", *session_id));
    std::cout << "session " << *session_id << " revoked\n";
  });

  // users
  CLI::App* users = ctl->add_subcommand("users", "Users (admins)");
  users->require_subcommand(1);
  users->add_subcommand("list")->callback([opts] {
    Print(*opts, Call(*opts, verb::get, "/v2/users?per_page=500"),
          {"id", "username", "full_name", "is_admin", "is_active"});
  });
  auto new_user = std::make_shared<json::object>();
  auto nu = std::make_shared<std::tuple<std::string, std::string, bool>>();
  CLI::App* user_create = users->add_subcommand("create");
  user_create->add_option("--username", std::get<0>(*nu))->required();
  user_create->add_option("--password", std::get<1>(*nu))->required();
  user_create->add_flag("--admin", std::get<2>(*nu));
  user_create->callback([opts, nu] {
    Print(*opts,
          Call(*opts, verb::post, "/v2/users",
               json::object{{"username", std::get<0>(*nu)},
                            {"password", std::get<1>(*nu)},
                            {"is_admin", std::get<2>(*nu)}}),
          {"id", "username", "is_admin"});
  });

  // projects
  CLI::App* projects = ctl->add_subcommand("projects", "Projects (tenants) and members");
  projects->require_subcommand(1);
  projects->add_subcommand("list")->callback([opts] {
    Print(*opts, Call(*opts, verb::get, "/v2/projects?per_page=500"),
          {"id", "name", "max_gpus", "max_vram_gib", "max_instances"});
  });
  auto np = std::make_shared<std::tuple<std::string, std::string>>();
  CLI::App* project_create = projects->add_subcommand("create");
  project_create->add_option("--name", std::get<0>(*np))->required();
  project_create->add_option("--description", std::get<1>(*np));
  project_create->callback([opts, np] {
    Print(*opts,
          Call(*opts, verb::post, "/v2/projects",
               json::object{{"name", std::get<0>(*np)}, {"description", std::get<1>(*np)}}),
          {"id", "name"});
  });
  auto nm = std::make_shared<std::tuple<int64_t, std::string, std::string>>();
  CLI::App* add_member = projects->add_subcommand("add-member");
  add_member->add_option("--project", std::get<0>(*nm), "project id")->required();
  add_member->add_option("--user", std::get<1>(*nm), "username")->required();
  add_member->add_option("--role", std::get<2>(*nm), "project-admin | member | viewer")->required();
  add_member->callback([opts, nm] {
    Print(*opts,
          Call(*opts, verb::post, fmt::format("/v2/projects/{}/members", std::get<0>(*nm)),
               json::object{{"username", std::get<1>(*nm)}, {"role", std::get<2>(*nm)}}),
          {"project_id", "user_id", "username", "role"});
  });

  // api keys
  CLI::App* keys = ctl->add_subcommand("api-keys", "API keys");
  keys->require_subcommand(1);
  auto list_project = std::make_shared<int64_t>(0);
  CLI::App* keys_list = keys->add_subcommand("list");
  keys_list->add_option("--project", *list_project, "project id");
  keys_list->callback([opts, list_project] {
    std::string path = "/v2/api-keys?per_page=500";
    if (*list_project > 0) path += fmt::format("&project_id={}", *list_project);
    Print(*opts, Call(*opts, verb::get, path),
          {"id", "name", "project_id", "prefix", "scope", "allowed_models", "expires_at",
           "last_used_at", "revoked_at"});
  });
  struct NewKey {
    std::string name;
    int64_t project = 0;
    std::string scope = "inference";
    std::string models = "*";
    std::string expires_at;
    std::string allowed_cidrs;
  };
  auto nk = std::make_shared<NewKey>();
  CLI::App* keys_create = keys->add_subcommand("create", "Create a key; its secret is shown once");
  keys_create->add_option("--name", nk->name)->required();
  keys_create->add_option("--project", nk->project, "project id")->required();
  keys_create->add_option("--scope", nk->scope, "inference | management | all");
  keys_create->add_option("--models", nk->models, "comma-separated model names, or *");
  keys_create->add_option("--expires-at", nk->expires_at, "RFC 3339, e.g. 2027-01-01T00:00:00Z");
  keys_create->add_option("--allowed-cidrs", nk->allowed_cidrs,
                          "comma-separated client ranges the key may be used from, e.g. "
                          "10.0.0.0/8,2001:db8::/32 (default: any address)");
  keys_create->callback([opts, nk] {
    json::object body{{"name", nk->name}, {"project_id", nk->project}, {"scope", nk->scope}};
    if (nk->models == "*") {
      body["allowed_models"] = "*";
    } else {
      json::array models;
      for (const std::string& m : SplitComma(nk->models)) models.push_back(json::string(m));
      body["allowed_models"] = std::move(models);
    }
    if (!nk->expires_at.empty()) body["expires_at"] = nk->expires_at;
    if (!nk->allowed_cidrs.empty()) body["allowed_cidrs"] = CidrArray(nk->allowed_cidrs);
    Print(*opts, Call(*opts, verb::post, "/v2/api-keys", body),
          {"id", "name", "scope", "allowed_cidrs", "expires_at", "secret"});
  });
  struct KeyCidrs {
    int64_t id = 0;
    std::string cidrs;
  };
  auto kc = std::make_shared<KeyCidrs>();
  CLI::App* keys_restrict = keys->add_subcommand(
      "restrict", "Set the client ranges a key may be used from ('any' lifts the restriction)");
  keys_restrict->add_option("id", kc->id)->required();
  keys_restrict->add_option("cidrs", kc->cidrs, "CIDR,... or any")->required();
  keys_restrict->callback([opts, kc] {
    json::value cidrs = kc->cidrs == "any" ? json::value(nullptr) : CidrArray(kc->cidrs);
    Print(*opts,
          Call(*opts, verb::patch, fmt::format("/v2/api-keys/{}", kc->id),
               json::object{{"allowed_cidrs", std::move(cidrs)}}),
          {"id", "name", "allowed_cidrs"});
  });
  auto revoke_id = std::make_shared<int64_t>(0);
  CLI::App* keys_revoke = keys->add_subcommand("revoke");
  keys_revoke->add_option("id", *revoke_id)->required();
  keys_revoke->callback([opts, revoke_id] {
    Print(*opts, Call(*opts, verb::delete_, fmt::format("/v2/api-keys/{}", *revoke_id)),
          {"id", "name", "revoked_at"});
  });

  // clusters, workers, gpus
  CLI::App* clusters = ctl->add_subcommand("clusters", "Clusters (admins)");
  clusters->require_subcommand(1);
  clusters->add_subcommand("list")->callback([opts] {
    Print(*opts, Call(*opts, verb::get, "/v2/clusters"),
          {"id", "name", "is_default", "gpu_sharing", "registration_token"});
  });
  auto csharing = std::make_shared<std::pair<int64_t, std::string>>();
  CLI::App* csharing_cmd = clusters->add_subcommand(
      "gpu-sharing", "Set how models that do not choose are held to their claim on a shared GPU");
  csharing_cmd->add_option("id", csharing->first)->required();
  csharing_cmd->add_option("mode", csharing->second)
      ->required()
      ->check(CLI::IsMember({"claims", "enforced"}));
  csharing_cmd->callback([opts, csharing] {
    Print(*opts,
          Call(*opts, verb::patch, fmt::format("/v2/clusters/{}", csharing->first),
               json::object{{"gpu_sharing", csharing->second}}),
          {"id", "name", "gpu_sharing"});
  });
  CLI::App* workers = ctl->add_subcommand("workers", "Workers");
  workers->require_subcommand(1);
  auto wlist = std::make_shared<ListFlags>();
  CLI::App* wlist_cmd = workers->add_subcommand("list");
  AddListFlags(wlist_cmd, *wlist, true);
  wlist_cmd->callback([opts, wlist] {
    ListPath path{"/v2/workers?per_page=500"};
    if (wlist->watch) Watch(*opts, path, WorkerColumns(wlist->wide, true));
    PrintColumns(*opts, Call(*opts, verb::get, path.path), WorkerColumns(wlist->wide, false));
  });
  auto wm = std::make_shared<std::pair<int64_t, std::string>>();
  CLI::App* maint = workers->add_subcommand("maintenance", "Turn maintenance on or off");
  maint->add_option("id", wm->first)->required();
  maint->add_option("state", wm->second)->required()->check(CLI::IsMember({"on", "off"}));
  maint->callback([opts, wm] {
    Print(*opts,
          Call(*opts, verb::patch, fmt::format("/v2/workers/{}", wm->first),
               json::object{{"maintenance", wm->second == "on"}}),
          {"id", "name", "state", "maintenance"});
  });
  auto wl = std::make_shared<std::pair<int64_t, std::vector<std::string>>>();
  CLI::App* label = workers->add_subcommand("label", "Replace a worker's labels: k=v ...");
  label->add_option("id", wl->first)->required();
  label->add_option("labels", wl->second);
  label->callback([opts, wl] {
    json::object labels;
    for (const std::string& kv : wl->second) {
      size_t eq = kv.find('=');
      if (eq == std::string::npos) Fail("labels are k=v, got '" + kv + "'");
      labels[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    Print(*opts,
          Call(*opts, verb::patch, fmt::format("/v2/workers/{}", wl->first),
               json::object{{"labels", labels}}),
          {"id", "name", "labels"});
  });
  CLI::App* gpus = ctl->add_subcommand("gpus", "GPUs of every worker");
  gpus->require_subcommand(1);
  auto glist = std::make_shared<ListFlags>();
  CLI::App* glist_cmd = gpus->add_subcommand("list");
  AddListFlags(glist_cmd, *glist, true);
  glist_cmd->callback([opts, glist] {
    ListPath path{"/v2/gpus?per_page=500"};
    if (glist->watch) Watch(*opts, path, GpuColumns(glist->wide), GpuWatchExpander(*opts));
    PrintColumns(*opts, Call(*opts, verb::get, path.path), GpuColumns(glist->wide));
  });

  AddModelCommands(ctl, opts);
  AddCatalogCommands(ctl, opts);
  AddAuditCommands(ctl, opts);
}

}  // namespace segma::cli
