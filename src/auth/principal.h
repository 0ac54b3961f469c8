#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "types/identity.h"

namespace segma::auth {

// Who is making a request, as IdentityService::Authenticate resolved it. A plain value: copy it
// freely, it is not updated when the underlying rows change.
struct Principal {
  enum class Kind { kAnonymous, kUser, kApiKey, kWorker };
  Kind kind = Kind::kAnonymous;

  // kUser: the user; kApiKey: the key's creator. 0 for kAnonymous and kWorker.
  int64_t user_id = 0;
  std::string username;
  bool is_admin = false;  // platform admin (for keys: the creator is one)
  // project id → role, for users and for keys (the key's creator's roles).
  std::map<int64_t, types::ProjectRole> project_roles;

  // kApiKey only: scope, allowed models and project_id of the key used.
  std::optional<types::ApiKey> api_key;
  // kWorker only.
  std::optional<int64_t> worker_id;
  std::optional<int64_t> cluster_id;
  // kUser only: the session the token belongs to (0 otherwise).
  int64_t session_id = 0;
  // kUser only: the user must change their password before anything else (the /v2 wrapper
  // refuses every route but change-password, sign-out and "who am I").
  bool require_password_change = false;

  bool authenticated() const { return kind != Kind::kAnonymous; }
  // The principal's role in `project_id`, if any (not considering platform admin).
  std::optional<types::ProjectRole> RoleIn(int64_t project_id) const {
    auto it = project_roles.find(project_id);
    if (it == project_roles.end()) return std::nullopt;
    return it->second;
  }
};

}  // namespace segma::auth
