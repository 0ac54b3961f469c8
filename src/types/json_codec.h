#pragma once

// Pieces shared by the JSON codecs of types/: enum names and whole objects read field by field.

#include <initializer_list>
#include <optional>
#include <string_view>

#include "common/json.h"
#include "common/status.h"

namespace segma::types {

// The value among `values` whose `name` is `s`, or nullopt: the Parse* half of an enum whose
// *Name function is the other half, so that the two cannot disagree.
//   return ParseByName(s, {WorkerState::kReady, ...}, WorkerStateName);
template <typename E>
std::optional<E> ParseByName(std::string_view s, std::initializer_list<E> values,
                             std::string_view (*name)(E)) {
  for (E v : values) {
    if (name(v) == s) return v;
  }
  return std::nullopt;
}

// Reads every field it knows from `r` into `value`; with `is_patch`, only the fields present.
template <typename T>
using FieldReader = void (*)(JsonReader& r, T& value, bool is_patch);
// Checks a whole value once its fields are read.
template <typename T>
using Validator = Status (*)(const T& value);

// A new T from `o`: each key of `required` must be present, `read` fills the fields and
// `validate` checks the result. kInvalidArgument names the first bad or unknown field.
template <typename T>
Result<T> NewFromJson(const json::object& o, std::initializer_list<std::string_view> required,
                      FieldReader<T> read, Validator<T> validate) {
  JsonReader r(o);
  for (std::string_view key : required) {
    if (r.OptionalValue(key) == nullptr) r.Fail(key, "is required");
  }
  T value{};
  read(r, value, /*is_patch=*/false);
  RETURN_IF_ERROR(r.Finish());
  RETURN_IF_ERROR(validate(value));
  return value;
}

// `current` with the merge patch `patch` applied by `read`, checked whole by `validate`.
// kInvalidArgument names the first bad or unknown field.
template <typename T>
Result<T> PatchedFromJson(const T& current, const json::object& patch, FieldReader<T> read,
                          Validator<T> validate) {
  JsonReader r(patch);
  T value = current;
  read(r, value, /*is_patch=*/true);
  RETURN_IF_ERROR(r.Finish());
  RETURN_IF_ERROR(validate(value));
  return value;
}

}  // namespace segma::types
