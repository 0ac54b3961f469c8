#pragma once

// Runs the engine processes of a worker's instances: spawn in an own process group, log to
// rotating files, probe readiness and liveness (and that the port's listener is the engine's),
// detect exits and hangs, restart with exponential backoff, stop gracefully, start a guard that
// stops an engine no worker owns any more, and adopt (or clean up) engines left running by a
// previous worker process.
// Behaviour in detail: docs/engines.md.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

#include "common/clock.h"
#include "common/status.h"
#include "worker/engines/backend.h"
#include "worker/engines/proc.h"

namespace segma::engines {

enum class EngineState {
  kStarting,  // spawned, readiness probe not yet answered 200
  kRunning,   // healthy, and checked again every liveness period
  kError,     // failed; see message. A restart may be scheduled (next_restart_at).
  kStopped,   // stopped on request and gone: the supervisor forgot it
};
std::string_view EngineStateName(EngineState s);  // "STARTING", "RUNNING", "ERROR", "STOPPED"

// What to run for one instance.
struct EngineSpec {
  // The instance's engine; a negative id -N is the distributed server (llama.cpp's rpc-server)
  // this worker runs for instance N of another worker (files rpc-server-N.json / .log).
  int64_t instance_id = 0;
  std::string name;  // for logs ("llama-1b-x7k2")
  // RenderLaunch's output for `port`. Its api_key is sent by the probes and masked in the command
  // line the supervisor logs (the worker's log and the start line of the engine's log).
  LaunchSpec launch;
  int port = 0;  // where the engine listens; the readiness probe goes to 127.0.0.1:port
  // The liveness check's real request besides launch.health_path: GET 127.0.0.1:port<path> must
  // answer 200 while RUNNING ("" = the health path only). The worker sets "/v1/models".
  std::string liveness_path;
  bool restart_on_error = true;
  int restart_count = 0;  // restarts so far (from the instance), continued by the supervisor
  std::chrono::seconds ready_timeout{600};  // from spawn to the first 200
};

struct EngineStatus {
  int64_t instance_id = 0;
  EngineState state = EngineState::kStarting;
  // Why ERROR ("engine exited with status 1: <log tail>", "liveness check failed: …"), or why a
  // STARTING engine is not ready yet ("port N is held by another process …").
  std::string message;
  int restart_count = 0;
  pid_t pid = 0;  // 0 when no process runs; also the process group id
  int port = 0;
  bool adopted = false;  // found running after a worker restart
  std::optional<Timestamp> next_restart_at;
  std::string log_path;
};

struct SupervisorOptions {
  // State files go to <data_dir>/engines/instance-<id>.json, logs to
  // <data_dir>/logs/instance-<id>.log (.1, .2 after rotation); rpc-server-<id>.* for the
  // distributed servers (negative ids).
  std::string data_dir;
  int port_min = 40000;
  int port_max = 40999;
  std::chrono::milliseconds backoff_base{std::chrono::seconds(10)};
  std::chrono::milliseconds backoff_max{std::chrono::minutes(5)};
  // A RUNNING stretch at least this long resets the backoff (not restart_count).
  std::chrono::milliseconds backoff_reset_after{std::chrono::minutes(10)};
  std::chrono::milliseconds stop_grace{std::chrono::seconds(15)};  // SIGTERM → SIGKILL
  std::chrono::milliseconds poll_interval{500};   // liveness poll and readiness probe cadence
  std::chrono::milliseconds probe_timeout{2000};  // one readiness probe
  // Liveness of RUNNING engines: every liveness_period, GET the health path and the spec's
  // liveness_path (each within liveness_timeout) and confirm that the port's listener belongs to
  // the engine's process group. After liveness_failures failed checks in a row the engine is
  // ERROR "liveness check failed: …" at once (out of the gateway's rotation), stopped (SIGTERM
  // with SIGCONT, so that a stopped process acts on it; SIGKILL after hung_stop_grace) and
  // restarted with the backoff. liveness_failures 0 turns the check off.
  std::chrono::milliseconds liveness_period{2000};
  std::chrono::milliseconds liveness_timeout{2000};
  int liveness_failures = 3;
  std::chrono::milliseconds hung_stop_grace{5000};
  // The guard started beside each engine, in its process group (docs/adr/0030): this argv prefix
  // (e.g. {"/usr/bin/segma", "engine-guard"}) plus the engine's identity. It stops the engine
  // when no live worker process has owned it for orphan_grace. Empty: no guard.
  std::vector<std::string> guard_command;
  std::chrono::milliseconds orphan_grace{std::chrono::minutes(5)};
  std::chrono::milliseconds guard_check_interval{1000};
  int64_t log_max_bytes = 10 * 1024 * 1024;
  int log_files = 3;          // the live file and 2 rotated ones
  int error_tail_lines = 10;  // log lines quoted in an ERROR message
};

// Thread-safety: all public methods may be called from any thread. The callback runs on the
// supervisor's own thread, never under its lock, once per state change; it must not block for
// long (post to an io_context). Nothing here blocks the caller on I/O except StopAll().
class Supervisor {
 public:
  using StateCallback = std::function<void(const EngineStatus&)>;

  // Creates the state and log directories under options.data_dir and starts the supervisor
  // thread. kUnavailable if a directory cannot be created.
  static Result<std::unique_ptr<Supervisor>> Create(SupervisorOptions options, Clock& clock,
                                                    StateCallback callback);

  // Stops the thread. Engines keep running and keep their state files, so that the next
  // supervisor over the same data_dir adopts them (Recover); call StopAll() first to stop them.
  // Their guards stop them after orphan_grace unless a new supervisor adopts them first.
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Reserves a port of the range for `instance_id`: not reserved by another instance and free
  // to bind now. The same instance gets its reserved port back. kResourceExhausted when none.
  Result<int> AllocatePort(int64_t instance_id);
  // Gives the reservation back (also done when an engine is stopped).
  void ReleasePort(int64_t instance_id);

  // Starts the engine of `spec.instance_id` (state STARTING). A wrong executable is reported as
  // ERROR "executable not found: …" through the callback (no restart). kAlreadyExists if the
  // instance already has an engine here (Stop it first); kInvalidArgument for an empty argv or
  // a port outside 1-65535.
  Status Start(EngineSpec spec);

  // Stops the engine: SIGTERM to its process group, SIGKILL after stop_grace, then reaped, its
  // state file removed, its port released and the callback told STOPPED. A pending restart is
  // cancelled. kNotFound for an unknown instance. Returns at once.
  Status Stop(int64_t instance_id);

  // Stops every engine and waits until all are gone (at most stop_grace plus a few seconds).
  void StopAll();

  struct RecoverReport {
    std::vector<int64_t> adopted;  // running, expected and unchanged: supervised again
    std::vector<int64_t> stopped;  // running but not expected (or changed): being stopped
    std::vector<int64_t> stale;    // state file of a process that is gone: removed
  };
  // After a worker restart: reads the state files. An engine whose process still runs (same
  // pid and /proc start time, so a reused pid is never signalled) is adopted when `expected`
  // holds its instance with the same command and port; it is then probed (STARTING → RUNNING)
  // and restarted like any other, and its state file names this process as its owner (which
  // its guard reads). Other running engines are stopped (their whole process group).
  // Expected instances without a running engine are not started: call Start.
  RecoverReport Recover(const std::map<int64_t, EngineSpec>& expected);

  std::optional<EngineStatus> Get(int64_t instance_id) const;
  std::vector<EngineStatus> List() const;
  // The process group ids of running engines (for NvmlGpuProbe::SetManagedPids).
  std::vector<pid_t> ManagedPids() const;

  const SupervisorOptions& options() const { return options_; }

 private:
  struct Engine;
  // One readiness or liveness check of an engine, run outside the lock.
  struct ProbeJob {
    int64_t instance_id = 0;
    pid_t pid = 0;
    int port = 0;
    bool liveness = false;  // a RUNNING engine's check; else readiness
    std::string health_path;
    std::string liveness_path;
    std::string api_key;  // sent as a bearer token ("" = none)
    std::chrono::milliseconds timeout{0};
    bool passed = false;
    bool stranger = false;  // failed because another process holds the port
    std::string failure;    // why it did not pass
  };

  Supervisor(SupervisorOptions options, Clock& clock, StateCallback callback);
  void Loop();
  void Tick(std::vector<EngineStatus>& events, std::vector<ProbeJob>& probes);
  static void RunProbe(ProbeJob& p);
  void ApplyProbe(const ProbeJob& p, std::vector<EngineStatus>& events);
  void Spawn(Engine& e, std::vector<EngineStatus>& events);
  void SpawnGuard(Engine& e);
  void CheckExit(Engine& e, std::vector<EngineStatus>& events);
  void OnExited(Engine& e, const std::string& how, std::vector<EngineStatus>& events);
  // ERROR with `message`, a restart scheduled by the backoff when the spec asks for restarts.
  void Fail(Engine& e, std::string message, Timestamp now, std::vector<EngineStatus>& events);
  // SIGTERM (and SIGCONT) to the engine's process group; SIGKILL after `grace`.
  void Terminate(Engine& e, Timestamp now, std::chrono::milliseconds grace);
  void Terminate(Engine& e, Timestamp now) { Terminate(e, now, options_.stop_grace); }
  EngineStatus StatusOf(const Engine& e) const;
  std::string StatePath(int64_t id) const;
  std::string LogPath(int64_t id) const;
  void WriteStateFile(const Engine& e);
  bool PortReservedByOther(int port, int64_t id) const;

  const SupervisorOptions options_;
  Clock& clock_;
  const StateCallback callback_;
  // This process's identity, written into state files as the engines' owner (the guard checks
  // that it still runs).
  const pid_t self_pid_;
  const uint64_t self_start_ticks_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool quit_ = false;
  std::map<int64_t, std::unique_ptr<Engine>> engines_;  // GUARDED_BY(mu_)
  std::map<int64_t, int> reserved_ports_;               // instance → port; GUARDED_BY(mu_)
  int next_port_ = 0;                                   // GUARDED_BY(mu_)
  std::vector<EngineStatus> pending_events_;            // from Recover; GUARDED_BY(mu_)
  std::thread thread_;
};

// What a state file (<data_dir>/engines/*.json) records about an engine, and what /proc says now.
struct EngineRecord {
  int64_t instance_id = 0;  // negative: the rpc-server of instance -id
  std::string name;
  pid_t pid = 0;  // also the process group
  int port = 0;
  pid_t worker_pid = 0;  // the worker process that owns it (0: not recorded)
  bool alive = false;    // the process still runs (same pid and start time)
  bool owned = false;    // its worker process still runs (same pid and start time)
};
// The engines recorded under data_dir, by file name; unreadable files are skipped. Reads only.
std::vector<EngineRecord> ListEngineRecords(const std::string& data_dir);

// One blocking HTTP/1.0 GET to 127.0.0.1:port/path (or a bare TCP connect when `path` is
// empty; 200 when it connects), with "Authorization: Bearer <api_key>" unless `api_key` is empty.
// Returns the status code, 0 when the connection failed or timed out; then `error` (when given)
// says which ("connection refused", "no answer within 2000 ms").
int ProbeHttp(int port, const std::string& path, std::chrono::milliseconds timeout,
              std::string* error = nullptr, const std::string& api_key = "");

}  // namespace segma::engines
