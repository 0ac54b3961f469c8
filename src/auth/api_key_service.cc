#include "auth/api_key_service.h"

#include <fmt/format.h>

#include "auth/identity_service.h"
#include "auth/rbac.h"
#include "auth/validation.h"
#include "common/crypto.h"

namespace segma::auth {

namespace {

constexpr size_t kPrefixLength = 12;
constexpr size_t kMaxModelNameLength = 256;

}  // namespace

ApiKeyService::ApiKeyService(store::Store& store, const Clock& clock)
    : store_(store), clock_(clock) {}

Result<CreatedApiKey> ApiKeyService::Create(const Principal& principal,
                                            const CreateApiKeyRequest& request) {
  RETURN_IF_ERROR(ValidateName("API key", request.name));
  if (request.allowed_models) {
    for (const std::string& m : *request.allowed_models) {
      if (m.empty() || m.size() > kMaxModelNameLength) {
        return InvalidArgumentError(fmt::format(
            "allowed_models entries must be 1 to {} characters long", kMaxModelNameLength));
      }
    }
  }
  if (request.expires_at && *request.expires_at <= clock_.Now()) {
    return InvalidArgumentError("expires_at must be in the future");
  }
  // Authorize before looking the project up, so that outsiders cannot probe which projects exist.
  RETURN_IF_ERROR(Authorize(principal, Action::kCreate, Resource::kApiKeys, request.project_id));
  RETURN_IF_ERROR(ToStatus(store_.GetProject(request.project_id)));

  CreatedApiKey out;
  out.secret = fmt::format("{}{}", kApiKeyPrefix, RandomToken(32));
  types::ApiKey key;
  key.name = request.name;
  key.project_id = request.project_id;
  key.user_id = principal.user_id;
  key.scope = request.scope;
  key.allowed_models = request.allowed_models;
  key.prefix = out.secret.substr(0, kPrefixLength);
  key.secret_hash = Sha256Hex(out.secret);
  key.expires_at = request.expires_at;
  key.limits = request.limits;
  key.allowed_cidrs = request.allowed_cidrs;
  ASSIGN_OR_RETURN(out.key, store_.CreateApiKey(key));
  return out;
}

Result<store::ListResult<types::ApiKey>> ApiKeyService::List(const Principal& principal,
                                                             store::ListOptions options) {
  RETURN_IF_ERROR(Authorize(principal, Action::kRead, Resource::kApiKeys, options.project_id));
  const std::optional<std::set<int64_t>> readable = ReadableProjects(principal);
  if (readable) {
    if (principal.kind == Principal::Kind::kApiKey) {
      if (readable->empty()) return store::ListResult<types::ApiKey>{};
      options.project_id = *readable->begin();
    } else {
      options.member_user_id = principal.user_id;
    }
  }
  return store_.ListApiKeys(options);
}

Result<types::ApiKey> ApiKeyService::Get(const Principal& principal, int64_t id) {
  ASSIGN_OR_RETURN(types::ApiKey key, store_.GetApiKey(id));
  if (Status s = Authorize(principal, Action::kRead, Resource::kApiKeys, key.project_id); !s.ok()) {
    if (s.code() == StatusCode::kUnauthenticated) return s;
    return NotFoundError(fmt::format("API key {} not found", id));
  }
  return key;
}

Result<types::ApiKey> ApiKeyService::Revoke(const Principal& principal, int64_t id) {
  ASSIGN_OR_RETURN(types::ApiKey key, Get(principal, id));
  RETURN_IF_ERROR(
      Authorize(principal, Action::kDelete, Resource::kApiKeys, key.project_id, key.user_id));
  return store_.RevokeApiKey(id, clock_.Now());
}

Result<types::ApiKey> ApiKeyService::Update(const Principal& principal, int64_t id,
                                            const store::ApiKeyPatch& patch) {
  ASSIGN_OR_RETURN(types::ApiKey key, Get(principal, id));
  RETURN_IF_ERROR(
      Authorize(principal, Action::kUpdate, Resource::kApiKeys, key.project_id, key.user_id));
  return store_.UpdateApiKey(id, patch);
}

}  // namespace segma::auth
