#pragma once

// The guard of one engine (`segma engine-guard`, docs/adr/0030-engine-guard.md): a small process
// the supervisor starts beside each engine, in the engine's process group. Engines outlive their
// worker on purpose, so that the next worker process adopts them; the guard bounds that: when no
// live worker process has owned the engine for the orphan grace, it stops the engine (SIGTERM,
// SIGKILL after the stop grace) and removes its state file. A worker owns an engine when the
// engine's state file names it (worker_pid + worker_start_ticks) and that process still runs;
// the supervisor writes itself there when it spawns or adopts the engine.

#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <sys/types.h>

#include "common/clock.h"
#include "common/status.h"

namespace segma::engines {

struct EngineGuardOptions {
  std::string state_file;  // <data_dir>/engines/instance-<id>.json
  pid_t engine_pid = 0;    // also the engine's process group
  uint64_t engine_start_ticks = 0;
  std::chrono::milliseconds orphan_grace{std::chrono::minutes(5)};
  std::chrono::milliseconds stop_grace{std::chrono::seconds(15)};  // SIGTERM → SIGKILL
  std::chrono::milliseconds check_interval{std::chrono::seconds(1)};
};

// The guard's decisions, one look at a time; time comes from `clock`. Not thread-safe (one
// guard, one thread).
class EngineGuard {
 public:
  enum class Action {
    kWait,  // look again after check_interval
    kStop,  // orphaned for the grace: SIGTERM (and SIGCONT) to the engine's group
    kKill,  // still there stop_grace after kStop: SIGKILL to the group
    kGone,  // the engine process is gone: nothing left to guard
  };

  EngineGuard(EngineGuardOptions options, Clock& clock);

  // Looks at the engine and its state file. Messages for the engine's log go to `log`.
  Action Check(std::ostream& log);

  // Whether a live worker owned the engine at the last look.
  bool owned() const { return !orphan_since_.has_value(); }
  // Whether this guard decided to stop the engine.
  bool stopping() const { return stopping_since_.has_value(); }
  const EngineGuardOptions& options() const { return options_; }

 private:
  // "" when a live worker owns the engine, else why not.
  std::string WhyNotOwned() const;

  const EngineGuardOptions options_;
  Clock& clock_;
  std::optional<Timestamp> orphan_since_;
  std::optional<Timestamp> stopping_since_;
};

// Runs the guard until the engine is gone: checks every check_interval, stops the engine after the
// orphan grace, and removes the engine's state file when it stopped it. When the engine's leader
// is gone, the rest of its process group (its helpers) is killed. Ignores SIGTERM, SIGINT
// and SIGHUP (a stop of the engine's group must not end the guard before the engine). Writes its
// decisions to `log` (the engine's log). Returns the process's exit code (0).
int RunEngineGuard(const EngineGuardOptions& options, Clock& clock, std::ostream& log);

// `segma engine-guard` after its name: --state-file PATH --engine-pid N --engine-start-ticks T
// [--orphan-grace-ms N] [--stop-grace-ms N] [--check-interval-ms N], each flag followed by its
// value. kInvalidArgument naming the flag for anything else or a missing required flag.
Result<EngineGuardOptions> ParseEngineGuardArgs(const std::vector<std::string>& args);

// The command line the supervisor starts beside an engine: `prefix` (the guard executable and
// its subcommand) followed by the flags ParseEngineGuardArgs reads.
std::vector<std::string> EngineGuardCommand(std::vector<std::string> prefix,
                                            const EngineGuardOptions& options);

}  // namespace segma::engines
