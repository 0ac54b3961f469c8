#include "common/json.h"

#include <fmt/format.h>

namespace segma {

namespace {
const json::object kEmptyObject;
}  // namespace

Result<json::value> ParseJson(std::string_view text) {
  boost::system::error_code ec;
  json::parse_options opts;
  opts.max_depth = 64;
  json::value v = json::parse(text, ec, {}, opts);
  if (ec) return InvalidArgumentError(fmt::format("malformed JSON: {}", ec.message()));
  return v;
}

std::string ToJsonString(const json::value& v) { return json::serialize(v); }

JsonReader::JsonReader(const json::object& obj, std::string path)
    : obj_(&obj), path_(std::move(path)) {}

JsonReader JsonReader::FromBody(std::string_view body, json::object& storage) {
  Result<json::value> parsed = ParseJson(body);
  if (!parsed.ok()) {
    JsonReader r(kEmptyObject);
    r.FailStatus(parsed.status());
    return r;
  }
  if (!parsed->is_object()) {
    JsonReader r(kEmptyObject);
    r.FailStatus(InvalidArgumentError("request body must be a JSON object"));
    return r;
  }
  storage = std::move(parsed->as_object());
  return JsonReader(storage);
}

std::string JsonReader::Path(std::string_view key) const {
  return path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
}

const json::value* JsonReader::Find(std::string_view key) {
  read_.emplace(key);
  auto it = obj_->find(key);
  if (it == obj_->end() || it->value().is_null()) return nullptr;
  return &it->value();
}

void JsonReader::TypeError(std::string_view key, std::string_view want) {
  Fail(key, fmt::format("must be {}", want));
}

void JsonReader::Fail(std::string_view key, std::string_view problem) {
  if (!error_.ok()) return;
  error_ = InvalidArgumentError(fmt::format("{} {}", Path(key), problem));
}

void JsonReader::FailStatus(Status s) {
  if (error_.ok()) error_ = std::move(s);
}

std::string JsonReader::String(std::string_view key) {
  const json::value* v = Find(key);
  if (v == nullptr) {
    Fail(key, "is required");
    return {};
  }
  if (!v->is_string()) {
    TypeError(key, "a string");
    return {};
  }
  return std::string(v->as_string());
}

std::optional<std::string> JsonReader::OptionalString(std::string_view key) {
  const json::value* v = Find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) {
    TypeError(key, "a string");
    return std::nullopt;
  }
  return std::string(v->as_string());
}

int64_t JsonReader::Int(std::string_view key) {
  std::optional<int64_t> v = OptionalInt(key);
  if (!v && ok()) Fail(key, "is required");
  return v.value_or(0);
}

std::optional<int64_t> JsonReader::OptionalInt(std::string_view key) {
  const json::value* v = Find(key);
  if (v == nullptr) return std::nullopt;
  if (v->is_int64()) return v->as_int64();
  if (v->is_uint64() && v->as_uint64() <= static_cast<uint64_t>(INT64_MAX)) {
    return static_cast<int64_t>(v->as_uint64());
  }
  TypeError(key, "an integer");
  return std::nullopt;
}

std::optional<double> JsonReader::OptionalDouble(std::string_view key) {
  const json::value* v = Find(key);
  if (v == nullptr) return std::nullopt;
  if (v->is_double()) return v->as_double();
  if (v->is_int64()) return static_cast<double>(v->as_int64());
  if (v->is_uint64()) return static_cast<double>(v->as_uint64());
  TypeError(key, "a number");
  return std::nullopt;
}

std::optional<bool> JsonReader::OptionalBool(std::string_view key) {
  const json::value* v = Find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_bool()) {
    TypeError(key, "a boolean");
    return std::nullopt;
  }
  return v->as_bool();
}

std::optional<std::vector<std::string>> JsonReader::OptionalStringArray(std::string_view key) {
  const json::value* v = Find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_array()) {
    TypeError(key, "an array of strings");
    return std::nullopt;
  }
  std::vector<std::string> out;
  for (const json::value& e : v->as_array()) {
    if (!e.is_string()) {
      TypeError(key, "an array of strings");
      return std::nullopt;
    }
    out.emplace_back(e.as_string());
  }
  return out;
}

std::optional<std::map<std::string, std::string>> JsonReader::OptionalStringMap(
    std::string_view key) {
  const json::value* v = Find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) {
    TypeError(key, "an object of strings");
    return std::nullopt;
  }
  std::map<std::string, std::string> out;
  for (const auto& kv : v->as_object()) {
    if (!kv.value().is_string()) {
      Fail(fmt::format("{}.{}", key, std::string_view(kv.key())), "must be a string");
      return std::nullopt;
    }
    out.emplace(std::string(kv.key()), std::string(kv.value().as_string()));
  }
  return out;
}

const json::value* JsonReader::OptionalValue(std::string_view key) { return Find(key); }

bool JsonReader::IsNull(std::string_view key) {
  read_.emplace(key);
  auto it = obj_->find(key);
  return it != obj_->end() && it->value().is_null();
}

const json::object* JsonReader::OptionalObject(std::string_view key) {
  const json::value* v = Find(key);
  if (v == nullptr) return nullptr;
  if (!v->is_object()) {
    TypeError(key, "an object");
    return nullptr;
  }
  return &v->as_object();
}

Status JsonReader::Finish() {
  if (!error_.ok()) return error_;
  for (const auto& kv : *obj_) {
    if (read_.find(std::string_view(kv.key())) == read_.end()) {
      return InvalidArgumentError(fmt::format("unknown field '{}'", Path(kv.key())));
    }
  }
  return OkStatus();
}

}  // namespace segma
