#pragma once

#include <map>
#include <string>

#include "common/status.h"
#include "store/store.h"
#include "types/identity.h"

namespace segma::auth {

struct RegisteredWorker {
  types::Worker worker;
  std::string worker_token;  // "segma_wt_…": returned once; the store keeps only its hash
};

// Worker registration: exchanges a cluster's registration token for a per-worker token.
// Thread-safe; `store` must outlive it.
class WorkerTokens {
 public:
  explicit WorkerTokens(store::Store& store) : store_(store) {}

  // Finds the cluster whose registration token equals `registration_token` (compared in constant
  // time) and registers (or re-registers, issuing a new token) worker `name` there.
  // kUnauthenticated "invalid registration token" if no cluster matches; kInvalidArgument for a
  // bad name (ValidateName), an empty address or a port outside 1-65535.
  Result<RegisteredWorker> RegisterWorker(const std::string& registration_token,
                                          const std::string& name, const std::string& address,
                                          int port,
                                          const std::map<std::string, std::string>& labels);

 private:
  store::Store& store_;
};

}  // namespace segma::auth
