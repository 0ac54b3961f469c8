#include "auth/worker_tokens.h"

#include <fmt/format.h>

#include "auth/identity_service.h"
#include "auth/validation.h"
#include "common/crypto.h"

namespace segma::auth {

Result<RegisteredWorker> WorkerTokens::RegisterWorker(
    const std::string& registration_token, const std::string& name, const std::string& address,
    int port, const std::map<std::string, std::string>& labels) {
  RETURN_IF_ERROR(ValidateName("worker", name));
  if (address.empty() || address.size() > 255) {
    return InvalidArgumentError("worker address must be 1 to 255 characters long");
  }
  if (port < 1 || port > 65535) return InvalidArgumentError("worker port must be 1 to 65535");
  if (registration_token.empty()) return UnauthenticatedError("invalid registration token");

  // Compare against every cluster, without stopping at the first match, in constant time each.
  std::optional<int64_t> cluster_id;
  store::ListOptions options;
  options.per_page = store::ListOptions::kMaxPerPage;
  for (options.page = 1;; ++options.page) {
    ASSIGN_OR_RETURN(store::ListResult<types::Cluster> page, store_.ListClusters(options));
    for (const types::Cluster& c : page.items) {
      if (ConstantTimeEquals(c.registration_token, registration_token)) cluster_id = c.id;
    }
    if (page.items.empty() || static_cast<int64_t>(options.page) * options.per_page >= page.total) {
      break;
    }
  }
  if (!cluster_id) return UnauthenticatedError("invalid registration token");

  RegisteredWorker out;
  out.worker_token = fmt::format("{}{}", kWorkerTokenPrefix, RandomToken(32));
  ASSIGN_OR_RETURN(out.worker, store_.UpsertWorkerByName(*cluster_id, name, address, port,
                                                         Sha256Hex(out.worker_token), labels));
  return out;
}

}  // namespace segma::auth
