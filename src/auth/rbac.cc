#include "auth/rbac.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/cidr.h"

namespace segma::auth {

namespace {

using types::ProjectRole;

Status Deny(std::string message) { return PermissionDeniedError(std::move(message)); }

Status DenyAdminOnly(Action action, Resource resource) {
  return Deny(
      fmt::format("only platform admins can {} {}", ActionName(action), ResourceName(resource)));
}

// Readable by any authenticated user, writable by platform admins only.
bool IsPublicReadable(Resource r) {
  return r == Resource::kWorkers || r == Resource::kGpus || r == Resource::kBackends ||
         r == Resource::kModelFiles;
}

// The minimum role for `action` on project-scoped `resource`, or nullopt if no project role
// suffices (platform admins only, or a meaningless action).
std::optional<ProjectRole> MinimumRole(Action action, Resource resource, bool is_owner) {
  if (resource == Resource::kInference) {
    if (action == Action::kUse) return ProjectRole::kMember;
    if (action == Action::kRead) return ProjectRole::kViewer;
    return std::nullopt;
  }
  if (action == Action::kUse) return std::nullopt;
  if (action == Action::kRead) return ProjectRole::kViewer;
  switch (resource) {
    case Resource::kModels:
    case Resource::kModelInstances:
    case Resource::kModelEvaluations:
      return ProjectRole::kMember;
    case Resource::kApiKeys:
      if (action == Action::kCreate || is_owner) return ProjectRole::kMember;
      return ProjectRole::kProjectAdmin;
    case Resource::kProjectMembers:
    case Resource::kModelRoutes:
      return ProjectRole::kProjectAdmin;
    case Resource::kUsage:  // written by the system
    default:
      return std::nullopt;
  }
}

Status AuthorizeInProject(const Principal& p, std::optional<ProjectRole> role, Action action,
                          Resource resource, int64_t project_id,
                          std::optional<int64_t> owner_user_id) {
  if (!role) return Deny(fmt::format("no role in project {}", project_id));
  const bool is_owner = owner_user_id && *owner_user_id == p.user_id;
  const std::optional<ProjectRole> need = MinimumRole(action, resource, is_owner);
  if (!need || *role < *need) {
    return Deny(fmt::format("role {} in project {} cannot {} {}", types::ProjectRoleName(*role),
                            project_id, ActionName(action), ResourceName(resource)));
  }
  return OkStatus();
}

Status AuthorizeApiKey(const Principal& p, Action action, Resource resource,
                       std::optional<int64_t> project_id, std::optional<int64_t> owner_user_id) {
  if (!p.api_key) return Deny("API key principal without a key");
  const types::ApiKey& key = *p.api_key;
  const bool inference = resource == Resource::kInference;
  if (inference && key.scope == types::ApiKeyScope::kManagement) {
    return Deny("API key scope 'management' does not allow inference");
  }
  if (!inference && key.scope == types::ApiKeyScope::kInference) {
    return Deny("API key scope 'inference' allows only inference");
  }
  if (resource == Resource::kSelf || resource == Resource::kWorkerSelf) {
    return Deny(fmt::format("API keys cannot access {}", ResourceName(resource)));
  }
  if (project_id && *project_id != key.project_id) {
    return Deny(
        fmt::format("API key of project {} cannot access project {}", key.project_id, *project_id));
  }
  // The creator's role in the key's project; a platform admin acts as its project-admin.
  std::optional<ProjectRole> role = p.RoleIn(key.project_id);
  if (p.is_admin) role = ProjectRole::kProjectAdmin;
  if (resource == Resource::kProjects) {
    if (action != Action::kRead) return DenyAdminOnly(action, resource);
    if (!role) return Deny(fmt::format("no role in project {}", key.project_id));
    return OkStatus();
  }
  if (IsProjectScoped(resource)) {
    if (!project_id) {
      if (action == Action::kRead) return OkStatus();  // the caller lists the key's project only
      return Deny(fmt::format("cannot {} {} without a project", ActionName(action),
                              ResourceName(resource)));
    }
    return AuthorizeInProject(p, role, action, resource, key.project_id, owner_user_id);
  }
  if (IsPublicReadable(resource) && action == Action::kRead) return OkStatus();
  return Deny(fmt::format("API keys cannot {} {}", ActionName(action), ResourceName(resource)));
}

}  // namespace

std::string_view ActionName(Action a) {
  switch (a) {
    case Action::kRead:
      return "read";
    case Action::kCreate:
      return "create";
    case Action::kUpdate:
      return "update";
    case Action::kDelete:
      return "delete";
    case Action::kUse:
      return "use";
  }
  return "?";
}

std::string_view ResourceName(Resource r) {
  switch (r) {
    case Resource::kUsers:
      return "users";
    case Resource::kProjects:
      return "projects";
    case Resource::kProjectMembers:
      return "project-members";
    case Resource::kApiKeys:
      return "api-keys";
    case Resource::kClusters:
      return "clusters";
    case Resource::kWorkers:
      return "workers";
    case Resource::kGpus:
      return "gpus";
    case Resource::kModels:
      return "models";
    case Resource::kModelInstances:
      return "model-instances";
    case Resource::kModelFiles:
      return "model-files";
    case Resource::kModelRoutes:
      return "model-routes";
    case Resource::kBackends:
      return "backends";
    case Resource::kUsage:
      return "usage";
    case Resource::kModelEvaluations:
      return "model-evaluations";
    case Resource::kInference:
      return "inference";
    case Resource::kPrices:
      return "prices";
    case Resource::kAuditEvents:
      return "audit-events";
    case Resource::kSelf:
      return "own profile";
    case Resource::kWorkerSelf:
      return "worker endpoints";
  }
  return "?";
}

bool IsProjectScoped(Resource r) {
  switch (r) {
    case Resource::kProjectMembers:
    case Resource::kApiKeys:
    case Resource::kModels:
    case Resource::kModelInstances:
    case Resource::kModelRoutes:
    case Resource::kUsage:
    case Resource::kModelEvaluations:
    case Resource::kInference:
      return true;
    default:
      return false;
  }
}

Status Authorize(const Principal& p, Action action, Resource resource,
                 std::optional<int64_t> project_id, std::optional<int64_t> owner_user_id) {
  switch (p.kind) {
    case Principal::Kind::kAnonymous:
      return UnauthenticatedError("authentication required");
    case Principal::Kind::kWorker:
      if (resource == Resource::kWorkerSelf) return OkStatus();
      return Deny(
          fmt::format("worker tokens cannot {} {}", ActionName(action), ResourceName(resource)));
    case Principal::Kind::kApiKey:
      return AuthorizeApiKey(p, action, resource, project_id, owner_user_id);
    case Principal::Kind::kUser:
      break;
  }
  if (p.is_admin) return OkStatus();
  switch (resource) {
    case Resource::kSelf:
      return OkStatus();
    case Resource::kUsers:
    case Resource::kClusters:
    case Resource::kPrices:
    case Resource::kAuditEvents:
    case Resource::kWorkerSelf:
      return DenyAdminOnly(action, resource);
    case Resource::kProjects:
      if (action != Action::kRead) return DenyAdminOnly(action, resource);
      if (project_id && !p.RoleIn(*project_id)) {
        return Deny(fmt::format("no role in project {}", *project_id));
      }
      return OkStatus();
    default:
      break;
  }
  if (IsPublicReadable(resource)) {
    if (action == Action::kRead) return OkStatus();
    return DenyAdminOnly(action, resource);
  }
  // Project-scoped.
  if (!project_id) {
    if (action == Action::kRead) return OkStatus();  // the caller filters to the user's projects
    return Deny(
        fmt::format("cannot {} {} without a project", ActionName(action), ResourceName(resource)));
  }
  return AuthorizeInProject(p, p.RoleIn(*project_id), action, resource, *project_id, owner_user_id);
}

std::optional<std::set<int64_t>> ReadableProjects(const Principal& p) {
  std::set<int64_t> out;
  switch (p.kind) {
    case Principal::Kind::kAnonymous:
    case Principal::Kind::kWorker:
      return out;
    case Principal::Kind::kApiKey:
      if (p.api_key && (p.is_admin || p.RoleIn(p.api_key->project_id))) {
        out.insert(p.api_key->project_id);
      }
      return out;
    case Principal::Kind::kUser:
      break;
  }
  if (p.is_admin) return std::nullopt;
  for (const auto& [project_id, role] : p.project_roles) out.insert(project_id);
  return out;
}

bool ApiKeyAllowsModel(const types::ApiKey& key, std::string_view model_name) {
  if (!key.allowed_models) return true;
  return std::find(key.allowed_models->begin(), key.allowed_models->end(), model_name) !=
         key.allowed_models->end();
}

bool ApiKeyAllowsAddress(const types::ApiKey& key, std::string_view address) {
  if (!key.allowed_cidrs) return true;
  std::optional<IpAddress> a = ParseIpAddress(address);
  if (!a) return false;
  return std::any_of(key.allowed_cidrs->begin(), key.allowed_cidrs->end(),
                     [&](const std::string& cidr) {
                       Result<CidrRange> r = ParseCidr(cidr);
                       return r.ok() && r->Contains(*a);
                     });
}

Result<std::optional<std::vector<std::string>>> ParseAllowedCidrs(const json::value& v) {
  if (v.is_null()) return std::optional<std::vector<std::string>>();
  if (!v.is_array()) {
    return InvalidArgumentError(
        "allowed_cidrs must be null (any address) or an array of CIDR ranges, e.g. "
        "[\"10.0.0.0/8\", \"2001:db8::/32\"]");
  }
  const json::array& a = v.as_array();
  if (a.empty() || a.size() > kMaxAllowedCidrs) {
    return InvalidArgumentError(fmt::format(
        "allowed_cidrs must hold 1 to {} ranges (null: any address)", kMaxAllowedCidrs));
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_string()) {
      return InvalidArgumentError(fmt::format("allowed_cidrs[{}] must be a string", i));
    }
    Result<CidrRange> r = ParseCidr(std::string_view(a[i].as_string()));
    if (!r.ok()) {
      return InvalidArgumentError(fmt::format("allowed_cidrs[{}]: {}", i, r.status().message()));
    }
    std::string canonical = r->ToString();
    if (std::find(out.begin(), out.end(), canonical) == out.end()) out.push_back(canonical);
  }
  return std::optional<std::vector<std::string>>(std::move(out));
}

}  // namespace segma::auth
