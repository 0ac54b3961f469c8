#include "worker/engines/engine_guard.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include "common/json.h"
#include "worker/engines/proc.h"

namespace segma::engines {
namespace {

struct StateFileView {
  pid_t pid = 0;
  uint64_t start_ticks = 0;
  pid_t worker_pid = 0;
  uint64_t worker_start_ticks = 0;
};

int64_t IntOf(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  return it != o.end() && it->value().is_int64() ? it->value().as_int64() : 0;
}

std::optional<StateFileView> ReadStateFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Result<json::value> v = ParseJson(text);
  if (!v.ok() || !v->is_object()) return std::nullopt;
  const json::object& o = v->as_object();
  StateFileView s;
  s.pid = static_cast<pid_t>(IntOf(o, "pid"));
  s.start_ticks = static_cast<uint64_t>(IntOf(o, "start_ticks"));
  s.worker_pid = static_cast<pid_t>(IntOf(o, "worker_pid"));
  s.worker_start_ticks = static_cast<uint64_t>(IntOf(o, "worker_start_ticks"));
  return s;
}

std::string Now(Clock& clock) { return FormatRfc3339(clock.Now()); }

}  // namespace

EngineGuard::EngineGuard(EngineGuardOptions options, Clock& clock)
    : options_(std::move(options)), clock_(clock) {}

std::string EngineGuard::WhyNotOwned() const {
  std::optional<StateFileView> s = ReadStateFile(options_.state_file);
  if (!s) return fmt::format("its state file {} is gone", options_.state_file);
  if (s->pid != options_.engine_pid || s->start_ticks != options_.engine_start_ticks) {
    return fmt::format("its state file {} names another process", options_.state_file);
  }
  if (s->worker_pid <= 0) return "its state file names no worker";
  if (ProcessStartTicks(s->worker_pid) != s->worker_start_ticks) {
    return fmt::format("its worker (pid {}) is gone", s->worker_pid);
  }
  return "";
}

EngineGuard::Action EngineGuard::Check(std::ostream& log) {
  if (ProcessStartTicks(options_.engine_pid) != options_.engine_start_ticks) return Action::kGone;
  const Timestamp now = clock_.Now();
  if (stopping_since_) {
    return now - *stopping_since_ >= options_.stop_grace ? Action::kKill : Action::kWait;
  }
  const std::string why = WhyNotOwned();
  if (why.empty()) {
    if (orphan_since_) {
      log << fmt::format("segma engine-guard: {}: a worker owns engine {} again\n",
                         FormatRfc3339(now), options_.engine_pid)
          << std::flush;
    }
    orphan_since_.reset();
    return Action::kWait;
  }
  if (!orphan_since_) {
    orphan_since_ = now;
    log << fmt::format(
               "segma engine-guard: {}: no worker owns engine {} ({}); it stops in {} s unless a "
               "worker adopts it\n",
               FormatRfc3339(now), options_.engine_pid, why,
               std::chrono::duration_cast<std::chrono::seconds>(options_.orphan_grace).count())
        << std::flush;
  }
  if (now - *orphan_since_ < options_.orphan_grace) return Action::kWait;
  stopping_since_ = now;
  return Action::kStop;
}

int RunEngineGuard(const EngineGuardOptions& options, Clock& clock, std::ostream& log) {
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) ::signal(sig, SIG_IGN);
  const pid_t self = ::getpid();
  const pid_t group = options.engine_pid;
  EngineGuard guard(options, clock);
  auto remove_state_file = [&] {
    // Only while it still describes this engine: a worker may have written a newer one.
    std::ifstream in(options.state_file);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Result<json::value> v = ParseJson(text);
    if (v.ok() && v->is_object() && IntOf(v->as_object(), "pid") == group) {
      std::error_code ec;
      std::filesystem::remove(options.state_file, ec);
    }
  };
  for (;;) {
    switch (guard.Check(log)) {
      case EngineGuard::Action::kWait:
        // The guard's own cadence (a sleeping process), not a test's synchronisation.
        std::this_thread::sleep_for(options.check_interval);
        break;
      case EngineGuard::Action::kStop:
        log << fmt::format(
                   "segma engine-guard: {}: no worker adopted engine {} within {} s: stopping "
                   "it (SIGTERM)\n",
                   Now(clock), group,
                   std::chrono::duration_cast<std::chrono::seconds>(options.orphan_grace).count())
            << std::flush;
        ::kill(-group, SIGTERM);
        ::kill(-group, SIGCONT);
        break;
      case EngineGuard::Action::kKill:
        log << fmt::format("segma engine-guard: {}: engine {} ignored SIGTERM: SIGKILL\n",
                           Now(clock), group)
            << std::flush;
        remove_state_file();
        for (pid_t pid : ProcessGroupMembers(group)) {
          if (pid != self) ::kill(pid, SIGKILL);
        }
        ::kill(-group, SIGKILL);  // and the guard with it
        return 0;
      case EngineGuard::Action::kGone:
        // The engine's helpers have no purpose without it. The group still exists (the guard
        // is in it), so its id cannot name anyone else's processes.
        for (pid_t pid : ProcessGroupMembers(group)) {
          if (pid != self) ::kill(pid, SIGKILL);
        }
        if (guard.stopping() || !guard.owned()) {
          remove_state_file();  // nobody else will
          log << fmt::format("segma engine-guard: {}: engine {} is gone\n", Now(clock), group)
              << std::flush;
        }
        return 0;
    }
  }
}

Result<EngineGuardOptions> ParseEngineGuardArgs(const std::vector<std::string>& args) {
  EngineGuardOptions o;
  bool has_pid = false, has_ticks = false;
  for (size_t i = 0; i < args.size(); i += 2) {
    const std::string& flag = args[i];
    if (i + 1 >= args.size()) return InvalidArgumentError(flag + " needs a value");
    const std::string& value = args[i + 1];
    if (flag == "--state-file") {
      o.state_file = value;
      continue;
    }
    char* end = nullptr;
    const unsigned long long n = std::strtoull(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0') {
      return InvalidArgumentError(fmt::format("{} must be a number, got '{}'", flag, value));
    }
    if (flag == "--engine-pid") {
      o.engine_pid = static_cast<pid_t>(n);
      has_pid = n > 1;
    } else if (flag == "--engine-start-ticks") {
      o.engine_start_ticks = n;
      has_ticks = true;
    } else if (flag == "--orphan-grace-ms") {
      o.orphan_grace = std::chrono::milliseconds(n);
    } else if (flag == "--stop-grace-ms") {
      o.stop_grace = std::chrono::milliseconds(n);
    } else if (flag == "--check-interval-ms") {
      o.check_interval = std::chrono::milliseconds(std::max<unsigned long long>(n, 1));
    } else {
      return InvalidArgumentError("unknown flag " + flag);
    }
  }
  if (o.state_file.empty()) return InvalidArgumentError("--state-file is required");
  if (!has_pid) return InvalidArgumentError("--engine-pid (> 1) is required");
  if (!has_ticks) return InvalidArgumentError("--engine-start-ticks is required");
  return o;
}

std::vector<std::string> EngineGuardCommand(std::vector<std::string> prefix,
                                            const EngineGuardOptions& o) {
  for (std::string a : {std::string("--state-file"), o.state_file, std::string("--engine-pid"),
                        std::to_string(o.engine_pid), std::string("--engine-start-ticks"),
                        std::to_string(o.engine_start_ticks), std::string("--orphan-grace-ms"),
                        std::to_string(o.orphan_grace.count()), std::string("--stop-grace-ms"),
                        std::to_string(o.stop_grace.count()), std::string("--check-interval-ms"),
                        std::to_string(o.check_interval.count())}) {
    prefix.push_back(std::move(a));
  }
  return prefix;
}

}  // namespace segma::engines
