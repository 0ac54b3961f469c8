#pragma once

// Helpers for integration tests that run the real `segma` binary on loopback.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include "common/json.h"
#include "http/client.h"

namespace segma::testing {

// Path of the segma binary of this build (from SEGMA_BUILD_DIR).
std::string SegmaBinary();
// A fresh, empty directory under the build tree, removed by the destructor.
class TempDir {
 public:
  // Where the directory lives. kMemory (/dev/shm) is for tests that kill a process at random
  // moments: a process killed while a thread waits in fsync() dies only when the disk answers,
  // which a loaded build machine can delay by tens of seconds. A killed process loses nothing more
  // on tmpfs than on disk (the page cache outlives it); only a power loss would differ.
  enum class Medium { kBuildTree, kMemory };
  explicit TempDir(Medium medium = Medium::kBuildTree);
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A TCP port on 127.0.0.1 held for this test process alone until it exits (fakes/test_ports.h).
uint16_t FreePort();

// A child process with stdout+stderr captured to a log file. Killed (SIGKILL) on destruction if
// still running.
class Process {
 public:
  Process(std::vector<std::string> args, std::map<std::string, std::string> env,
          std::string log_path);
  ~Process();
  pid_t pid() const { return pid_; }
  void Signal(int sig);
  // Waits for exit; returns the exit status (or -signal), nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  bool running();
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  std::string log_path_;
  std::optional<int> exit_status_;
};

// Polls `pred` every 50 ms until it returns true or `timeout` passes.
bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

// Small synchronous REST helper bound to one server and token.
struct Api {
  std::string base;  // http://127.0.0.1:PORT
  std::string token;

  http::ClientResponse Call(
      boost::beast::http::verb method, const std::string& path,
      const std::optional<json::value>& body = std::nullopt,
      const std::vector<std::pair<std::string, std::string>>& headers = {}) const;
  http::ClientResponse Get(const std::string& path) const {
    return Call(boost::beast::http::verb::get, path);
  }
  http::ClientResponse Post(const std::string& path, const json::value& body) const {
    return Call(boost::beast::http::verb::post, path, body);
  }
  // The response body as a JSON object (empty object if it is not one).
  static json::object Obj(const http::ClientResponse& r);
};

// Starts `segma start --no-demo` (data in `data_dir`, on 127.0.0.1:`port`, one fake H100,
// heartbeats every 0.2 s, `admin_password` for the bootstrap admin, output to `log_path`) into
// `server`, waits for /healthz and logs `api` in as the admin. Returns "" on success, else what
// failed (use: ASSERT_EQ(StartSegma(...), "")).
// `extra_flags` are appended to the command line.
std::string StartSegma(const std::string& data_dir, uint16_t port,
                       const std::string& admin_password, const std::string& log_path,
                       std::unique_ptr<Process>& server, Api& api,
                       const std::vector<std::string>& extra_flags = {});

// Starts `segma server` alone (no worker; data in `data_dir`, on 127.0.0.1:`port`) into `server`,
// waits for /healthz and logs `api` in as the admin; like StartSegma. `extra_flags` are appended.
std::string StartServer(const std::string& data_dir, uint16_t port,
                        const std::string& admin_password, const std::string& log_path,
                        std::unique_ptr<Process>& server, Api& api,
                        const std::vector<std::string>& extra_flags = {});
// The registration token of the first cluster ("" when there is none).
std::string RegistrationToken(const Api& api);
// Waits until `count` workers are READY.
bool WaitForReadyWorkers(const Api& api, int count, std::chrono::milliseconds timeout);

// The model's first instance (GET /v2/model-instances?model_id=), or an empty object.
json::object FirstInstance(const Api& api, int64_t model_id);
// That instance's state ("RUNNING", ...), or "" while the model has none.
std::string InstanceState(const Api& api, int64_t model_id);

// The "pid" of a supervisor state file (<worker data dir>/engines/<name>.json), 0 if none.
int StateFilePid(const std::string& path);
// The secret instance `instance_id`'s engine requires of its clients (docs/adr/0035), from its
// file in `engines_dir` (<worker data dir>/engines); "" if none. To talk to an engine directly.
std::string EngineSecret(const std::string& engines_dir, int64_t instance_id);
// Kills the process group of every engine with a state file in `engines_dir` (<worker data
// dir>/engines). Engines outlive segma by design (a restarted worker adopts them), so a test's
// TearDown kills what it left running.
void KillEngines(const std::string& engines_dir);

// Reads the whole file (empty if missing).
std::string ReadFile(const std::string& path);

}  // namespace segma::testing
