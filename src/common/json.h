#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

#include "common/status.h"

namespace segma {

namespace json = boost::json;

// Parses `text` as JSON without throwing. kInvalidArgument with the parser's position on failure.
Result<json::value> ParseJson(std::string_view text);

// Serializes `v` compactly.
std::string ToJsonString(const json::value& v);

// Reads the fields of one JSON object strictly: wrong types, missing required fields and fields
// the caller never asked for are errors, reported with their path ("source.type must be a string").
// The first error wins; check it with Finish().
//
//   JsonReader r(obj);
//   std::string name = r.String("name");
//   std::optional<int64_t> replicas = r.OptionalInt("replicas");
//   RETURN_IF_ERROR(r.Finish());
//
// Not thread-safe.
class JsonReader {
 public:
  explicit JsonReader(const json::object& obj, std::string path = "");
  // Parses `body`, which must be one JSON object; a non-object or broken document leaves the
  // reader in error (visible through Finish()).
  static JsonReader FromBody(std::string_view body, json::object& storage);

  std::string String(std::string_view key);
  std::optional<std::string> OptionalString(std::string_view key);
  int64_t Int(std::string_view key);
  std::optional<int64_t> OptionalInt(std::string_view key);
  std::optional<double> OptionalDouble(std::string_view key);
  std::optional<bool> OptionalBool(std::string_view key);
  std::optional<std::vector<std::string>> OptionalStringArray(std::string_view key);
  std::optional<std::map<std::string, std::string>> OptionalStringMap(std::string_view key);
  // The raw value, for fields with several shapes ("*" or a list). Marks the key as read.
  const json::value* OptionalValue(std::string_view key);
  // A nested object (nullptr when absent); read it with a child JsonReader built with Path(key).
  const json::object* OptionalObject(std::string_view key);
  // Whether `key` is present with the value null (which the Optional* readers treat as absent):
  // a patch's way to clear an optional field. Marks the key as read.
  bool IsNull(std::string_view key);

  // Records a caller-detected problem with field `key` ("must be positive").
  void Fail(std::string_view key, std::string_view problem);
  void FailStatus(Status s);
  std::string Path(std::string_view key) const;
  bool ok() const { return error_.ok(); }

  // The first error, or kInvalidArgument "unknown field 'x'" for a field nobody read.
  Status Finish();

 private:
  const json::value* Find(std::string_view key);
  void TypeError(std::string_view key, std::string_view want);

  const json::object* obj_;
  std::string path_;
  std::set<std::string, std::less<>> read_;
  Status error_;
};

}  // namespace segma
