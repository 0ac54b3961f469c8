#pragma once

// The one place where access is decided. Handlers and services call Authorize before acting;
// nothing else compares roles.
//
// The matrix (A = platform admin, PA = project-admin, M = member, V = viewer, U = any user):
//  - Platform admin: everything (but see API keys below).
//  - Project-scoped resources (kModels, kModelInstances, kModelRoutes, kModelEvaluations,
//    kApiKeys, kUsage, kProjectMembers, kInference) need a role in `project_id`:
//      V  reads; M also creates/updates/deletes models, model instances and evaluations, creates
//      API keys and updates/deletes its own (owner_user_id == the principal), and uses inference;
//      PA everything in the project (members, every key, routes). kUsage is written by the
//      system only (admins). Reading a list without a project_id (nullopt) is allowed to any user:
//      the caller must filter rows to the principal's projects. Writing without a project_id is
//      denied to non-admins.
//  - kProjects: read A or any role in the project (list: any user, filtered by the caller);
//    create/update/delete A only (update can change quotas).
//  - kUsers: A only. kSelf (own profile, password, own sessions): any user principal.
//  - kClusters: A only (reads include registration tokens).
//  - kPrices: A only (the charge-back price table; members see its effect in usage costs).
//  - kAuditEvents: A only (the audit trail; API keys never, even an admin's).
//  - kWorkers, kGpus, kBackends, kModelFiles: read U, write A.
//  - kWorkerSelf: worker principals (and A). Worker principals can do nothing else.
//  - API keys act with their creator's roles, confined to the key's own project and scope:
//    scope inference → only (kUse, kInference); management → only /v2 resources (anything but
//    kInference); all → both. Project-scoped resources only in the key's project; global
//    resources only where any user may (reads of workers, gpus, backends, model files): a key
//    never carries platform-admin powers outside its project, and never kSelf.

#include <cstdint>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

#include "auth/principal.h"
#include "common/json.h"
#include "common/status.h"

namespace segma::auth {

enum class Action { kRead, kCreate, kUpdate, kDelete, kUse /* inference */ };

enum class Resource {
  kUsers,
  kProjects,
  kProjectMembers,
  kApiKeys,
  kClusters,
  kWorkers,
  kGpus,
  kModels,
  kModelInstances,
  kModelFiles,
  kModelRoutes,
  kBackends,
  kUsage,
  kModelEvaluations,
  kInference,
  kPrices,       // the price table of cost reports (admin only)
  kAuditEvents,  // the audit trail (admin only; docs/security.md)
  kSelf,         // own profile, own password
  kWorkerSelf,   // worker heartbeats, its own assignments
};

std::string_view ActionName(Action a);      // "read", "create", ...
std::string_view ResourceName(Resource r);  // the REST collection name: "model-instances", ...
// True for resources that belong to a project.
bool IsProjectScoped(Resource r);

// Decides whether `principal` may do `action` on `resource` in `project_id` (nullopt for global
// resources and for project-less lists). `owner_user_id` is the creator of the row acted on, where
// ownership matters (API keys).
// Returns OK; kUnauthenticated ("authentication required") for an anonymous principal;
// kPermissionDenied with a readable reason otherwise ("role viewer in project 3 cannot create
// models"). Pure and thread-safe.
Status Authorize(const Principal& principal, Action action, Resource resource,
                 std::optional<int64_t> project_id,
                 std::optional<int64_t> owner_user_id = std::nullopt);

// The projects whose rows `principal` may read when listing a project-scoped resource without a
// project filter: nullopt = every project (platform admin users); otherwise the set (users: the
// projects they have a role in; API keys: the key's project if its creator may read it; anonymous
// and workers: none). Pure.
std::optional<std::set<int64_t>> ReadableProjects(const Principal& principal);

// True if `key` may call model `model_name` (allowed_models absent = all). Pure.
bool ApiKeyAllowsModel(const types::ApiKey& key, std::string_view model_name);
// True if `key` may be used from client `address` (allowed_cidrs absent = any address; an
// address that does not parse matches no range). Pure.
bool ApiKeyAllowsAddress(const types::ApiKey& key, std::string_view address);

// Reads an API key's allowed_cidrs as the API accepts them: null (any address) or an array of 1
// to kMaxAllowedCidrs CIDR ranges or addresses, IPv4 or IPv6, returned canonical and without
// duplicates ("10.0.0.0/8", a bare address as /32 or /128). kInvalidArgument naming the entry:
// "allowed_cidrs[1]: '10.1.2.3/8' has bits set beyond its /8 prefix; did you mean 10.0.0.0/8?".
inline constexpr size_t kMaxAllowedCidrs = 64;
Result<std::optional<std::vector<std::string>>> ParseAllowedCidrs(const json::value& v);

}  // namespace segma::auth
