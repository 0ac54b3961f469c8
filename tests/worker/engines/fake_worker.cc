// A worker process for the engine tests: a Supervisor that starts one fake engine with a guard,
// prints "running <engine pid>" once it is RUNNING, then waits to be killed (SIGKILL: never
// restarted) so that the test can watch what the guard does.
//   fake_worker DATA_DIR GUARD_EXE ENGINE_EXE PORT ORPHAN_GRACE_MS

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "worker/engines/supervisor.h"

int main(int argc, char** argv) {
  using namespace segma::engines;
  if (argc != 6) {
    std::fprintf(stderr, "usage: fake_worker DATA_DIR GUARD ENGINE PORT GRACE_MS\n");
    return 2;
  }
  SupervisorOptions o;
  o.data_dir = argv[1];
  o.guard_command = {argv[2], "engine-guard"};
  o.port_min = o.port_max = std::atoi(argv[4]);
  o.orphan_grace = std::chrono::milliseconds(std::atoi(argv[5]));
  o.guard_check_interval = std::chrono::milliseconds(100);
  o.stop_grace = std::chrono::seconds(2);
  o.poll_interval = std::chrono::milliseconds(50);
  auto s = Supervisor::Create(o, segma::SystemClock::Get(), [](const EngineStatus& st) {
    if (st.state == EngineState::kRunning) {
      std::printf("running %d\n", st.pid);
      std::fflush(stdout);
    }
  });
  if (!s.ok()) return 3;
  EngineSpec spec;
  spec.instance_id = 1;
  spec.name = "guarded";
  spec.port = o.port_min;
  spec.launch.argv = {argv[3], "--port", argv[4]};
  spec.launch.health_path = "/health";
  if (!(*s)->Start(spec).ok()) return 4;
  for (;;) pause();
}
