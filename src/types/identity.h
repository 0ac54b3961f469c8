#pragma once

// Identity and tenancy domain types: users, sessions, projects and their members, API keys,
// clusters and workers, with their public JSON views (what REST /v2 returns).
//
// The JSON views never contain password_hash, secret_hash or token_hash. ToJson(Cluster) does
// contain registration_token: the API layer strips it for non-admins.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "types/model.h"
#include "types/worker.h"

namespace segma::types {

// A user's role inside one project. Ordered by privilege: a higher value can do everything a
// lower one can (compare with <, >=).
enum class ProjectRole { kViewer = 0, kMember = 1, kProjectAdmin = 2 };
std::string_view ProjectRoleName(ProjectRole r);  // "viewer" | "member" | "project-admin"
std::optional<ProjectRole> ParseProjectRole(std::string_view s);

// What an API key may be used for: kInference = the OpenAI-compatible /v1 gateway only,
// kManagement = the REST /v2 API only, kAll = both.
enum class ApiKeyScope { kInference, kManagement, kAll };
std::string_view ApiKeyScopeName(ApiKeyScope s);  // "inference" | "management" | "all"
std::optional<ApiKeyScope> ParseApiKeyScope(std::string_view s);

struct User {
  int64_t id = 0;
  std::string username;
  std::string full_name;
  bool is_admin = false;
  bool is_active = true;
  std::string password_hash;  // argon2id, encoded; never in JSON
  bool require_password_change = false;
  Timestamp created_at;
  Timestamp updated_at;
};

// A login session. The bearer token is signed (see auth::IdentityService); the row exists so that a
// session can be revoked before it expires.
struct Session {
  int64_t id = 0;
  int64_t user_id = 0;
  Timestamp expires_at;
  std::optional<Timestamp> revoked_at;
  Timestamp created_at;
  // Written at most once a minute (Store::TouchSession); nullopt until the first use after
  // sign-in.
  std::optional<Timestamp> last_used_at;
  std::string client_address;  // where the session was opened (the real client, behind proxies)
  std::string user_agent;      // the User-Agent of the sign-in, clipped
  std::string username;        // filled in by the store when listed; ignored on writes
};

// The OpenAI gateway's admission limits of an API key or a project (ADR 0013). A field that is
// nullopt is unlimited. JSON: {"requests_per_minute", "tokens_per_minute", "max_concurrent",
// "tokens_per_day", "tokens_per_month"}, each a non-negative integer or null.
struct Limits {
  std::optional<int64_t> requests_per_minute;
  std::optional<int64_t> tokens_per_minute;
  std::optional<int64_t> max_concurrent;
  std::optional<int64_t> tokens_per_day;
  std::optional<int64_t> tokens_per_month;

  bool unlimited() const;
  bool operator==(const Limits&) const = default;
};

// The fields of Limits by JSON name, in documentation order.
struct LimitField {
  std::string_view name;
  std::optional<int64_t> Limits::*member;
};
inline constexpr LimitField kLimitFields[] = {
    {"requests_per_minute", &Limits::requests_per_minute},
    {"tokens_per_minute", &Limits::tokens_per_minute},
    {"max_concurrent", &Limits::max_concurrent},
    {"tokens_per_day", &Limits::tokens_per_day},
    {"tokens_per_month", &Limits::tokens_per_month},
};

// A change of Limits, as a JSON merge patch (RFC 7396) reads: `null` clears every limit; an
// object sets the fields it names (null: unlimited) and keeps the others.
struct LimitsPatch {
  bool clear = false;
  std::vector<std::pair<std::optional<int64_t> Limits::*, std::optional<int64_t>>> set;

  Limits ApplyTo(Limits limits) const;
};

// Strict readers: `v` must be null or an object of known fields, each null or an integer >= 0.
// kInvalidArgument naming the field ("limits.tokens_per_day must be an integer >= 0 or null",
// "unknown field 'limits.rpm'"). `path` prefixes the field names in errors.
Result<LimitsPatch> ParseLimitsPatch(const json::value& v, std::string_view path = "limits");
// The limits `v` describes on its own (absent fields: unlimited).
Result<Limits> ParseLimits(const json::value& v, std::string_view path = "limits");
// Every field, null when unlimited.
json::object ToJson(const Limits& l);
// Only the limited fields; "" when unlimited (stored as SQL NULL).
std::string EncodeLimits(const Limits& l);

// A tenant. Quotas are absent when unlimited.
struct Project {
  int64_t id = 0;
  std::string name;
  std::string description;
  std::optional<double> max_gpus;  // GPU-equivalents (fractions allowed)
  std::optional<double> max_vram_gib;
  std::optional<int64_t> max_instances;
  Limits limits;  // the gateway's limits for all keys of the project together
  Timestamp created_at;
  Timestamp updated_at;
};

struct ProjectMember {
  int64_t project_id = 0;
  int64_t user_id = 0;
  ProjectRole role = ProjectRole::kViewer;
  std::string username;  // filled in by the store when read; ignored on writes
  Timestamp created_at;
};

struct ApiKey {
  int64_t id = 0;
  std::string name;
  int64_t project_id = 0;
  int64_t user_id = 0;  // the creator; the key acts with the creator's roles
  ApiKeyScope scope = ApiKeyScope::kInference;
  std::optional<std::vector<std::string>> allowed_models;  // nullopt: every model ("*")
  std::string prefix;       // the first 12 characters of the secret, shown in listings
  std::string secret_hash;  // Sha256Hex(secret); never in JSON
  std::optional<Timestamp> expires_at;
  std::optional<Timestamp> revoked_at;
  std::optional<Timestamp> last_used_at;
  Limits limits;  // the gateway's limits for this key alone
  // Client address ranges the key may be used from, canonical CIDR strings ("10.0.0.0/8");
  // nullopt: any address. Enforced on /v1 and /v2 against the real client address.
  std::optional<std::vector<std::string>> allowed_cidrs;
  Timestamp created_at;
};

// A group of workers that register with one shared registration token.
struct Cluster {
  int64_t id = 0;
  std::string name;
  std::string description;
  bool is_default = false;
  // How a model that does not choose is held to its claim on a shared GPU (docs/gpu-sharing.md).
  GpuSharing gpu_sharing = GpuSharing::kEnforced;
  std::string registration_token;  // in JSON; the API layer strips it for non-admins
  Timestamp created_at;
  Timestamp updated_at;
};

struct Worker {
  int64_t id = 0;
  int64_t cluster_id = 0;
  std::string name;  // unique within its cluster
  WorkerState state = WorkerState::kRegistering;
  std::string state_message;
  std::map<std::string, std::string> labels;
  bool maintenance = false;
  std::string maintenance_message;
  WorkerStatus status;
  std::string address;  // host or IP the server reaches the worker at
  int port = 0;
  std::string token_hash;  // Sha256Hex(worker token); never in JSON
  std::optional<Timestamp> last_heartbeat_at;
  Timestamp created_at;
  Timestamp updated_at;
};

// Public views (snake_case keys, RFC 3339 times, null for absent optionals).
json::object ToJson(const User& u);
json::object ToJson(const Session& s);  // never the token (it is not stored)
json::object ToJson(const Project& p);
json::object ToJson(const ProjectMember& m);
json::object ToJson(const ApiKey& k);  // allowed_models: "*" or a list
json::object ToJson(const Cluster& c);
json::object ToJson(const Worker& w);

}  // namespace segma::types
