#include "types/model_route.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "types/json_codec.h"

namespace segma::types {

namespace {

constexpr size_t kMaxNameLength = 64;
constexpr size_t kMaxDescriptionLength = 1024;

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// Reads `targets` (an array of {"model_id", "weight"?}) into `out`; problems go to `r`.
void ReadTargets(JsonReader& r, const json::value& v, std::vector<ModelRouteTarget>& out) {
  if (!v.is_array()) {
    r.Fail("targets", "must be an array of {\"model_id\", \"weight\"} objects");
    return;
  }
  out.clear();
  const json::array& a = v.get_array();
  for (size_t i = 0; i < a.size() && r.ok(); ++i) {
    const std::string path = fmt::format("{}[{}]", r.Path("targets"), i);
    if (!a[i].is_object()) {
      r.FailStatus(InvalidArgumentError(fmt::format("{} must be an object", path)));
      return;
    }
    JsonReader t(a[i].get_object(), path);
    ModelRouteTarget target;
    target.model_id = t.Int("model_id");
    if (t.ok() && target.model_id < 1) t.Fail("model_id", "must be positive");
    if (std::optional<int64_t> w = t.OptionalInt("weight")) {
      if (*w < 0 || *w > kMaxRouteWeight) {
        t.Fail("weight", fmt::format("must be an integer in 0..{}", kMaxRouteWeight));
      }
      target.weight = *w;
    }
    if (Status s = t.Finish(); !s.ok()) {
      r.FailStatus(std::move(s));
      return;
    }
    out.push_back(target);
  }
}

void ReadRouteFields(JsonReader& r, ModelRoute& m, bool is_patch) {
  if (auto v = r.OptionalString("name")) m.name = *v;
  if (is_patch) {
    if (r.OptionalValue("project_id") != nullptr) r.Fail("project_id", "cannot be changed");
  } else if (auto v = r.OptionalInt("project_id")) {
    if (*v < 1) r.Fail("project_id", "must be positive");
    m.project_id = *v;
  }
  if (auto v = r.OptionalString("description")) m.description = *v;
  if (const json::value* t = r.OptionalValue("targets")) ReadTargets(r, *t, m.targets);
}

}  // namespace

json::object ToJson(const ModelRoute& r) {
  json::array targets;
  for (const ModelRouteTarget& t : r.targets) {
    targets.push_back(json::object{{"model_id", t.model_id}, {"weight", t.weight}});
  }
  return json::object{{"id", r.id},
                      {"project_id", r.project_id},
                      {"name", r.name},
                      {"description", r.description},
                      {"targets", std::move(targets)},
                      {"created_at", FormatRfc3339(r.created_at)},
                      {"updated_at", FormatRfc3339(r.updated_at)}};
}

Status ValidateModelRoute(const ModelRoute& r) {
  if (r.name.empty() || r.name.size() > kMaxNameLength ||
      !std::all_of(r.name.begin(), r.name.end(), IsNameChar)) {
    return InvalidArgumentError("name must be 1-64 characters of [A-Za-z0-9._-]");
  }
  if (r.description.size() > kMaxDescriptionLength) {
    return InvalidArgumentError(
        fmt::format("description must be at most {} bytes", kMaxDescriptionLength));
  }
  if (r.targets.empty()) {
    return InvalidArgumentError("targets must list at least one model");
  }
  if (r.targets.size() > kMaxRouteTargets) {
    return InvalidArgumentError(
        fmt::format("targets must list at most {} models", kMaxRouteTargets));
  }
  std::set<int64_t> seen;
  bool weighted = false;
  for (size_t i = 0; i < r.targets.size(); ++i) {
    const ModelRouteTarget& t = r.targets[i];
    if (t.model_id < 1) {
      return InvalidArgumentError(fmt::format("targets[{}].model_id must be positive", i));
    }
    if (t.weight < 0 || t.weight > kMaxRouteWeight) {
      return InvalidArgumentError(
          fmt::format("targets[{}].weight must be an integer in 0..{}", i, kMaxRouteWeight));
    }
    if (!seen.insert(t.model_id).second) {
      return InvalidArgumentError(
          fmt::format("targets[{}]: model {} is listed twice", i, t.model_id));
    }
    weighted |= t.weight > 0;
  }
  if (!weighted) {
    return InvalidArgumentError(
        "targets need at least one model with weight > 0 (weight 0 is fallback only)");
  }
  return OkStatus();
}

Result<ModelRoute> ModelRouteFromJson(const json::object& o) {
  return NewFromJson<ModelRoute>(o, {"name", "targets"}, ReadRouteFields, ValidateModelRoute);
}

Result<ModelRoute> PatchModelRouteFromJson(const ModelRoute& current, const json::object& patch) {
  return PatchedFromJson(current, patch, ReadRouteFields, ValidateModelRoute);
}

}  // namespace segma::types
