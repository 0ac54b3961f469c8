#pragma once

// What /proc says about engine processes: identity (start time), process groups, and which
// process holds the socket listening on a port (/proc/net/tcp{,6} inode → /proc/<pid>/fd).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include "common/status.h"

namespace segma::engines {

// Fields of /proc/<pid>/stat.
struct ProcStat {
  char state = '?';  // R, S, D, T (stopped), Z (zombie), …
  pid_t ppid = 0;
  pid_t pgrp = 0;
  uint64_t start_ticks = 0;  // clock ticks since boot: with the pid, identifies a process
  std::string comm;          // the executable's name, as the kernel shortens it (15 bytes)
};

// nullopt when the process does not exist (or /proc cannot be read).
std::optional<ProcStat> ReadProcStat(pid_t pid);

// The process's start time in clock ticks since boot, or nullopt when the process does not
// exist (or is a zombie).
std::optional<uint64_t> ProcessStartTicks(pid_t pid);

// The processes of process group `pgid` that are not zombies.
std::vector<pid_t> ProcessGroupMembers(pid_t pgid);

// The inodes of the sockets in LISTEN state on TCP `port`, any address, IPv4 and IPv6
// (/proc/net/tcp and /proc/net/tcp6 of this network namespace).
std::vector<uint64_t> ListeningSocketInodes(int port);

// Confirms that the engine whose process group is `pgid` (its leader's pid) is what listens on
// `port`: every listening socket on the port is held by a process of that group (or by a
// descendant of its leader that moved to a group of its own). Returns
//   kUnavailable        "nothing listens on port N";
//   kFailedPrecondition "port N is held by another process (pid P, NAME), not by the engine
//                        (process group G)" when any listener belongs to someone else.
// Reads /proc: the leader's descriptors first (the usual listener), the whole process table only
// when the leader does not hold every listener. Thread-safe.
Status CheckPortOwner(int port, pid_t pgid);

}  // namespace segma::engines
