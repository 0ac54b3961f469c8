#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "auth/principal.h"
#include "common/clock.h"
#include "common/status.h"
#include "store/store.h"
#include "types/identity.h"

namespace segma::auth {

struct CreateApiKeyRequest {
  std::string name;  // 1-64 characters (ValidateName)
  int64_t project_id = 0;
  types::ApiKeyScope scope = types::ApiKeyScope::kInference;
  std::optional<std::vector<std::string>> allowed_models;  // nullopt: every model ("*")
  std::optional<Timestamp> expires_at;                     // nullopt: never
  types::Limits limits;                                    // the gateway's limits for the key
  // Canonical CIDR ranges (ParseAllowedCidrs) the key may be used from; nullopt: any address.
  std::optional<std::vector<std::string>> allowed_cidrs;
};

struct CreatedApiKey {
  types::ApiKey key;
  std::string secret;  // "sk-segma-…": returned once, never stored
};

// Creates, lists and revokes API keys. Authorizes every call through auth::Authorize.
// Thread-safe; `store` and `clock` must outlive it.
class ApiKeyService {
 public:
  ApiKeyService(store::Store& store, const Clock& clock);

  // Creates a key owned by `principal` (a user, or a management key acting for its creator) in
  // `request.project_id`. kInvalidArgument for a bad name, an empty allowed_models entry or an
  // expires_at not in the future; kNotFound if the project does not exist; kPermissionDenied if
  // the principal may not create keys there; kAlreadyExists if the name is taken in the project.
  Result<CreatedApiKey> Create(const Principal& principal, const CreateApiKeyRequest& request);

  // Admins see every key (options filters apply); others only keys of their projects.
  Result<store::ListResult<types::ApiKey>> List(const Principal& principal,
                                                store::ListOptions options);

  // kNotFound if no such key, or if the principal may not even read it (no existence leak);
  // kPermissionDenied if it may read but not revoke it. Revoking twice is fine.
  Result<types::ApiKey> Get(const Principal& principal, int64_t id);
  Result<types::ApiKey> Revoke(const Principal& principal, int64_t id);
  // Changes a key (its limits, its allowed_cidrs), with the same access rule as Revoke: the key's
  // creator or a project admin.
  Result<types::ApiKey> Update(const Principal& principal, int64_t id,
                               const store::ApiKeyPatch& patch);

 private:
  store::Store& store_;
  const Clock& clock_;
};

}  // namespace segma::auth
