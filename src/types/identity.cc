#include "types/identity.h"

#include <fmt/format.h>

#include "types/json_codec.h"

namespace segma::types {

namespace {

json::value OptionalTime(const std::optional<Timestamp>& t) {
  if (!t) return nullptr;
  return json::value(FormatRfc3339(*t));
}

}  // namespace

bool Limits::unlimited() const {
  for (const LimitField& f : kLimitFields) {
    if (this->*f.member) return false;
  }
  return true;
}

Limits LimitsPatch::ApplyTo(Limits limits) const {
  if (clear) limits = Limits{};
  for (const auto& [member, value] : set) limits.*member = value;
  return limits;
}

Result<LimitsPatch> ParseLimitsPatch(const json::value& v, std::string_view path) {
  LimitsPatch patch;
  if (v.is_null()) {
    patch.clear = true;
    return patch;
  }
  if (!v.is_object()) {
    return InvalidArgumentError(fmt::format("{} must be an object or null", path));
  }
  const json::object& o = v.get_object();
  for (const auto& kv : o) {
    const LimitField* field = nullptr;
    for (const LimitField& f : kLimitFields) {
      if (f.name == std::string_view(kv.key())) field = &f;
    }
    const std::string name = fmt::format("{}.{}", path, std::string_view(kv.key()));
    if (field == nullptr) return InvalidArgumentError(fmt::format("unknown field '{}'", name));
    const json::value& x = kv.value();
    if (x.is_null()) {
      patch.set.emplace_back(field->member, std::nullopt);
    } else if (x.is_int64() && x.get_int64() >= 0) {
      patch.set.emplace_back(field->member, x.get_int64());
    } else if (x.is_uint64() && x.get_uint64() <= static_cast<uint64_t>(INT64_MAX)) {
      patch.set.emplace_back(field->member, static_cast<int64_t>(x.get_uint64()));
    } else {
      return InvalidArgumentError(fmt::format("{} must be an integer >= 0 or null", name));
    }
  }
  return patch;
}

Result<Limits> ParseLimits(const json::value& v, std::string_view path) {
  ASSIGN_OR_RETURN(LimitsPatch patch, ParseLimitsPatch(v, path));
  return patch.ApplyTo(Limits{});
}

json::object ToJson(const Limits& l) {
  json::object o;
  for (const LimitField& f : kLimitFields) {
    const std::optional<int64_t>& x = l.*f.member;
    o[f.name] = x ? json::value(*x) : json::value(nullptr);
  }
  return o;
}

std::string EncodeLimits(const Limits& l) {
  if (l.unlimited()) return "";
  json::object o;
  for (const LimitField& f : kLimitFields) {
    if (const std::optional<int64_t>& x = l.*f.member) o[f.name] = *x;
  }
  return json::serialize(o);
}

std::string_view ProjectRoleName(ProjectRole r) {
  switch (r) {
    case ProjectRole::kViewer:
      return "viewer";
    case ProjectRole::kMember:
      return "member";
    case ProjectRole::kProjectAdmin:
      return "project-admin";
  }
  return "viewer";
}

std::optional<ProjectRole> ParseProjectRole(std::string_view s) {
  return ParseByName(s, {ProjectRole::kViewer, ProjectRole::kMember, ProjectRole::kProjectAdmin},
                     ProjectRoleName);
}

std::string_view ApiKeyScopeName(ApiKeyScope s) {
  switch (s) {
    case ApiKeyScope::kInference:
      return "inference";
    case ApiKeyScope::kManagement:
      return "management";
    case ApiKeyScope::kAll:
      return "all";
  }
  return "inference";
}

std::optional<ApiKeyScope> ParseApiKeyScope(std::string_view s) {
  return ParseByName(s, {ApiKeyScope::kInference, ApiKeyScope::kManagement, ApiKeyScope::kAll},
                     ApiKeyScopeName);
}

json::object ToJson(const User& u) {
  json::object o;
  o["id"] = u.id;
  o["username"] = u.username;
  o["full_name"] = u.full_name;
  o["is_admin"] = u.is_admin;
  o["is_active"] = u.is_active;
  o["require_password_change"] = u.require_password_change;
  o["created_at"] = FormatRfc3339(u.created_at);
  o["updated_at"] = FormatRfc3339(u.updated_at);
  return o;
}

json::object ToJson(const Session& s) {
  json::object o;
  o["id"] = s.id;
  o["user_id"] = s.user_id;
  o["expires_at"] = FormatRfc3339(s.expires_at);
  o["revoked_at"] = OptionalTime(s.revoked_at);
  o["created_at"] = FormatRfc3339(s.created_at);
  o["last_used_at"] = OptionalTime(s.last_used_at);
  o["username"] = s.username;
  o["client_address"] = s.client_address;
  o["user_agent"] = s.user_agent;
  return o;
}

json::object ToJson(const Project& p) {
  json::object o;
  o["id"] = p.id;
  o["name"] = p.name;
  o["description"] = p.description;
  o["max_gpus"] = p.max_gpus ? json::value(*p.max_gpus) : json::value(nullptr);
  o["max_vram_gib"] = p.max_vram_gib ? json::value(*p.max_vram_gib) : json::value(nullptr);
  o["max_instances"] = p.max_instances ? json::value(*p.max_instances) : json::value(nullptr);
  o["limits"] = ToJson(p.limits);
  o["created_at"] = FormatRfc3339(p.created_at);
  o["updated_at"] = FormatRfc3339(p.updated_at);
  return o;
}

json::object ToJson(const ProjectMember& m) {
  json::object o;
  o["project_id"] = m.project_id;
  o["user_id"] = m.user_id;
  o["username"] = m.username;
  o["role"] = ProjectRoleName(m.role);
  o["created_at"] = FormatRfc3339(m.created_at);
  return o;
}

json::object ToJson(const ApiKey& k) {
  json::object o;
  o["id"] = k.id;
  o["name"] = k.name;
  o["project_id"] = k.project_id;
  o["user_id"] = k.user_id;
  o["scope"] = ApiKeyScopeName(k.scope);
  if (k.allowed_models) {
    json::array models;
    for (const auto& m : *k.allowed_models) models.emplace_back(m);
    o["allowed_models"] = std::move(models);
  } else {
    o["allowed_models"] = "*";
  }
  o["prefix"] = k.prefix;
  o["expires_at"] = OptionalTime(k.expires_at);
  o["revoked_at"] = OptionalTime(k.revoked_at);
  o["last_used_at"] = OptionalTime(k.last_used_at);
  o["limits"] = ToJson(k.limits);
  if (k.allowed_cidrs) {
    json::array cidrs;
    for (const auto& c : *k.allowed_cidrs) cidrs.emplace_back(c);
    o["allowed_cidrs"] = std::move(cidrs);
  } else {
    o["allowed_cidrs"] = nullptr;
  }
  o["created_at"] = FormatRfc3339(k.created_at);
  return o;
}

json::object ToJson(const Cluster& c) {
  json::object o;
  o["id"] = c.id;
  o["name"] = c.name;
  o["description"] = c.description;
  o["is_default"] = c.is_default;
  o["gpu_sharing"] = GpuSharingName(c.gpu_sharing);
  o["registration_token"] = c.registration_token;
  o["created_at"] = FormatRfc3339(c.created_at);
  o["updated_at"] = FormatRfc3339(c.updated_at);
  return o;
}

json::object ToJson(const Worker& w) {
  json::object o;
  o["id"] = w.id;
  o["cluster_id"] = w.cluster_id;
  o["name"] = w.name;
  o["state"] = WorkerStateName(w.state);
  o["state_message"] = w.state_message;
  json::object labels;
  for (const auto& [k, v] : w.labels) labels[k] = v;
  o["labels"] = std::move(labels);
  o["maintenance"] = w.maintenance;
  o["maintenance_message"] = w.maintenance_message;
  o["status"] = ToJson(w.status);
  o["address"] = w.address;
  o["port"] = w.port;
  o["last_heartbeat_at"] = OptionalTime(w.last_heartbeat_at);
  o["created_at"] = FormatRfc3339(w.created_at);
  o["updated_at"] = FormatRfc3339(w.updated_at);
  return o;
}

}  // namespace segma::types
