#include "worker/gpu/host_probe.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>

namespace segma::gpu {

namespace {

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return UnavailableError(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

struct StatCounters {
  int cpu_count = 0;
  uint64_t busy = 0;
  uint64_t total = 0;
};

// The aggregate "cpu" line and the number of "cpuN" lines of /proc/stat.
Result<StatCounters> ParseStat(const std::string& text, const std::string& path) {
  StatCounters out;
  bool have_total = false;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("cpu", 0) != 0) continue;
    std::istringstream fields(line);
    std::string label;
    fields >> label;
    if (label != "cpu") {
      if (label.size() > 3 && std::isdigit(static_cast<unsigned char>(label[3])) != 0) {
        ++out.cpu_count;
      }
      continue;
    }
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // included in user and nice, so it is not added again.
    std::vector<uint64_t> v;
    uint64_t x = 0;
    while (v.size() < 8 && fields >> x) v.push_back(x);
    if (v.size() < 4) break;
    v.resize(8, 0);
    const uint64_t idle = v[3] + v[4];
    out.total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    out.busy = out.total - idle;
    have_total = true;
  }
  if (!have_total) return UnavailableError(fmt::format("no aggregate cpu line in {}", path));
  return out;
}

// MemTotal and MemAvailable (falling back to MemFree + Buffers + Cached on kernels < 3.14),
// in bytes.
Result<std::pair<int64_t, int64_t>> ParseMeminfo(const std::string& text, const std::string& path) {
  std::optional<int64_t> total, available;
  int64_t fallback_available = 0;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string key;
    int64_t kib = 0;
    if (!(fields >> key >> kib) || kib < 0) continue;
    const int64_t bytes = kib * 1024;
    if (key == "MemTotal:") total = bytes;
    if (key == "MemAvailable:") available = bytes;
    if (key == "MemFree:" || key == "Buffers:" || key == "Cached:") fallback_available += bytes;
  }
  if (!total) return UnavailableError(fmt::format("no MemTotal in {}", path));
  const int64_t avail = std::clamp<int64_t>(available.value_or(fallback_available), 0, *total);
  return std::pair(*total, *total - avail);
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

HostProbe::HostProbe(std::string data_dir, std::string proc_root)
    : data_dir_(std::move(data_dir)), proc_root_(std::move(proc_root)) {}

Result<types::WorkerStatus> HostProbe::Probe() {
  types::WorkerStatus s;

  const std::string stat_path = proc_root_ + "/stat";
  ASSIGN_OR_RETURN(std::string stat_text, ReadFile(stat_path));
  ASSIGN_OR_RETURN(StatCounters stat, ParseStat(stat_text, stat_path));
  s.cpu_count = stat.cpu_count;
  {
    std::lock_guard lock(mu_);
    const CpuSample prev = previous_.value_or(CpuSample{});
    // Counters only grow; a smaller value means a different source (tests, container
    // migration): restart from this sample instead of reporting garbage.
    if (stat.total > prev.total && stat.busy >= prev.busy) {
      const double busy = static_cast<double>(stat.busy - prev.busy);
      last_utilization_ =
          std::clamp(100.0 * busy / static_cast<double>(stat.total - prev.total), 0.0, 100.0);
    }
    previous_ = CpuSample{stat.busy, stat.total};
    s.cpu_utilization = last_utilization_;
  }

  const std::string meminfo_path = proc_root_ + "/meminfo";
  ASSIGN_OR_RETURN(std::string meminfo_text, ReadFile(meminfo_path));
  ASSIGN_OR_RETURN(auto memory, ParseMeminfo(meminfo_text, meminfo_path));
  std::tie(s.memory_total, s.memory_used) = memory;

  struct statvfs fs {};
  if (statvfs(data_dir_.c_str(), &fs) != 0) {
    const int err = errno;
    std::string message = fmt::format("statvfs {}: {}", data_dir_, std::strerror(err));
    return err == ENOENT ? NotFoundError(std::move(message)) : UnavailableError(std::move(message));
  }
  const auto frsize = static_cast<int64_t>(fs.f_frsize);
  s.disk_total = static_cast<int64_t>(fs.f_blocks) * frsize;
  s.disk_used = static_cast<int64_t>(fs.f_blocks - std::min(fs.f_bfree, fs.f_blocks)) * frsize;

  struct utsname uts {};
  if (uname(&uts) == 0) {
    s.arch = uts.machine;
    s.os = Lower(uts.sysname);
  }
  return s;
}

}  // namespace segma::gpu
