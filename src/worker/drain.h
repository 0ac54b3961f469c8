#pragma once

// `segma worker --drain`: stop the engines a worker left running, and say so to the server.

#include <string>
#include <vector>

#include <sys/types.h>

#include "common/clock.h"
#include "common/status.h"
#include "worker/agent.h"

namespace segma::worker {

struct DrainedEngine {
  int64_t instance_id = 0;  // negative: the rpc-server this worker ran for instance -id
  std::string name;
  pid_t pid = 0;
  int port = 0;
  bool stopped = false;  // the process is gone
  std::string report;    // "" when the server took the report, else why not
};

// Stops every engine recorded in config.data_dir (engines a stopped worker process left running
// for adoption): first reports each instance to config.server_url as ERROR "stopped by segma
// worker --drain" (registering with the cluster token under config.name, as the worker does), so
// that the gateway stops routing to it, then SIGTERM to each engine's process group, SIGKILL after
// the stop grace, state files removed. Engines whose process is already gone are only cleaned up.
// Returns one entry per engine that was running. kFailedPrecondition while a live worker process
// owns the engines (stop it first: SIGTERM leaves its engines for drain or adoption). A server that
// cannot be reached does not keep the engines running: each entry's `report` says what failed.
Result<std::vector<DrainedEngine>> DrainEngines(const AgentConfig& config, Clock& clock);

}  // namespace segma::worker
