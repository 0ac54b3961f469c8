#pragma once

// The first-run demo of `segma start`: a project "demo", a simulated chat model "demo-chat"
// (served by `segma engine-sim`) and an inference API key, so that the first start ends with a
// working platform and a ready-to-paste curl command that streams through the gateway.
//
// Idempotent across restarts with the same data dir: existing rows are reused, never duplicated.
// The key's secret is shown only when the key is created (like every key); it is kept in
// `<data dir>/demo_api_key` (mode 0600, like initial_admin_password) so that later starts can
// print the same command. If that file is gone or the key was revoked, no new key is made behind
// the user's back: the instructions say how to create one.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "auth/api_key_service.h"
#include "common/status.h"
#include "gateway/gateway.h"
#include "store/store.h"

namespace segma::api {

struct DemoOptions {
  std::string project = "demo";
  std::string model = "demo-chat";
  std::string key_name = "demo";
  std::string key_file = "demo_api_key";  // in the data dir
};

struct DemoState {
  int64_t project_id = 0;
  int64_t model_id = 0;
  int64_t key_id = 0;                 // 0: no usable demo key
  std::optional<std::string> secret;  // the demo key's secret, when known
  bool created_key = false;           // this call created the key
  std::string key_path;               // <data dir>/demo_api_key
  std::string key_note;               // why there is no secret (empty when there is one)
};

// Creates whatever of the demo is missing: the project, the model (simulated, 1 replica) and the
// key (owned by the bootstrap admin "admin"). kFailedPrecondition if there is no admin user
// "admin"; store errors as they come (the caller logs them and the server keeps serving).
// Thread-safe as far as the store is.
Result<DemoState> EnsureDemo(store::Store& store, auth::ApiKeyService& keys,
                             const std::string& data_dir, const DemoOptions& options = {});

// Waits until the gateway routes `options.model` to a healthy replica of the demo model (its
// instance RUNNING), polling every 200 ms. kDeadlineExceeded after `timeout`, kCancelled when
// `stop` becomes true.
Status WaitForDemo(const gateway::Gateway& gateway, const DemoState& state,
                   std::chrono::milliseconds timeout, const std::atomic<bool>& stop,
                   const DemoOptions& options = {});

// What to print once the demo is ready: the curl command (with the demo key, or a placeholder
// and how to make a key) that streams a chat completion through the gateway at `base_url`.
std::string DemoInstructions(const DemoState& state, const std::string& base_url,
                             const DemoOptions& options = {});

}  // namespace segma::api
