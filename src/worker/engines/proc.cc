#include "worker/engines/proc.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>

namespace segma::engines {
namespace {

// The process ids in /proc.
std::vector<pid_t> AllPids() {
  std::vector<pid_t> out;
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return out;
  while (const dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (end != e->d_name && *end == '\0' && pid > 0) out.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(dir);
  return out;
}

// The inodes of the sockets process `pid` holds ("socket:[123]" links under /proc/<pid>/fd).
std::set<uint64_t> SocketInodes(pid_t pid) {
  std::set<uint64_t> out;
  const std::string fd_dir = fmt::format("/proc/{}/fd", pid);
  DIR* dir = ::opendir(fd_dir.c_str());
  if (dir == nullptr) return out;
  char target[64];
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const std::string link = fd_dir + "/" + e->d_name;
    const ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    const std::string_view t(target, static_cast<size_t>(n));
    if (!t.starts_with("socket:[") || !t.ends_with("]")) continue;
    out.insert(std::strtoull(t.data() + 8, nullptr, 10));
  }
  ::closedir(dir);
  return out;
}

void ReadListeners(const char* path, int port, std::vector<uint64_t>& out) {
  std::ifstream in(path);
  // "  sl  local_address rem_address   st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode"
  // with addresses as HEXADDR:HEXPORT; 0A is TCP_LISTEN.
  const std::string suffix = fmt::format(":{:04X}", port);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    if (line.find(suffix) == std::string::npos) continue;  // cheap filter on busy hosts
    std::istringstream ss(line);
    std::string sl, local, remote, state, queues, timer, retransmits, uid, timeout;
    uint64_t inode = 0;
    ss >> sl >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >>
        inode;
    if (!ss || state != "0A" || !local.ends_with(suffix)) continue;
    out.push_back(inode);
  }
}

}  // namespace

std::optional<ProcStat> ReadProcStat(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  if (!in) return std::nullopt;
  std::string line;
  std::getline(in, line);
  // "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses.
  const size_t open = line.find('(');
  const size_t close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  ProcStat st;
  st.comm = line.substr(open + 1, close - open - 1);
  std::istringstream rest(line.substr(close + 1));
  rest >> st.state >> st.ppid >> st.pgrp;
  // Fields 6..21 (session .. itrealvalue), then 22: starttime.
  std::string skip;
  for (int i = 6; i <= 21; ++i) rest >> skip;
  rest >> st.start_ticks;
  if (!rest) return std::nullopt;
  return st;
}

std::optional<uint64_t> ProcessStartTicks(pid_t pid) {
  std::optional<ProcStat> st = ReadProcStat(pid);
  if (!st || st->state == 'Z' || st->state == 'X') return std::nullopt;
  return st->start_ticks;
}

std::vector<pid_t> ProcessGroupMembers(pid_t pgid) {
  std::vector<pid_t> out;
  for (pid_t pid : AllPids()) {
    std::optional<ProcStat> st = ReadProcStat(pid);
    if (st && st->pgrp == pgid && st->state != 'Z' && st->state != 'X') out.push_back(pid);
  }
  return out;
}

std::vector<uint64_t> ListeningSocketInodes(int port) {
  std::vector<uint64_t> out;
  ReadListeners("/proc/net/tcp", port, out);
  ReadListeners("/proc/net/tcp6", port, out);
  return out;
}

Status CheckPortOwner(int port, pid_t pgid) {
  const std::vector<uint64_t> listeners = ListeningSocketInodes(port);
  if (listeners.empty()) return UnavailableError(fmt::format("nothing listens on port {}", port));
  std::set<uint64_t> missing(listeners.begin(), listeners.end());
  auto take = [&missing](pid_t pid) {
    for (uint64_t inode : SocketInodes(pid)) missing.erase(inode);
    return missing.empty();
  };
  if (take(pgid)) return OkStatus();

  std::map<pid_t, ProcStat> procs;
  for (pid_t pid : AllPids()) {
    if (std::optional<ProcStat> st = ReadProcStat(pid)) procs.emplace(pid, std::move(*st));
  }
  // A process of the engine: in its group, or descended from its leader (an engine's helper that
  // called setsid, as Ray's workers do).
  auto engine_own = [&](pid_t pid) {
    for (int depth = 0; depth < 64 && pid > 1; ++depth) {
      if (pid == pgid) return true;
      auto it = procs.find(pid);
      if (it == procs.end()) return false;
      if (it->second.pgrp == pgid) return true;
      pid = it->second.ppid;
    }
    return false;
  };
  for (const auto& [pid, st] : procs) {
    if (pid != pgid && engine_own(pid) && take(pid)) return OkStatus();
  }
  std::string holder = "a process this worker cannot see";
  for (const auto& [pid, st] : procs) {
    if (engine_own(pid)) continue;
    const std::set<uint64_t> held = SocketInodes(pid);
    const bool holds = std::any_of(missing.begin(), missing.end(),
                                   [&held](uint64_t inode) { return held.count(inode) > 0; });
    if (holds) {
      holder = fmt::format("pid {}, {}", pid, st.comm);
      break;
    }
  }
  return FailedPreconditionError(
      fmt::format("port {} is held by another process ({}), not by the engine (process group {})",
                  port, holder, pgid));
}

}  // namespace segma::engines
