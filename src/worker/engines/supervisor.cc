#include "worker/engines/supervisor.h"

#include <dirent.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/json.h"
#include "common/logging.h"
#include "common/thread.h"
#include "worker/engines/engine_guard.h"
#include "worker/engines/engine_secret.h"

extern char** environ;

namespace segma::engines {
namespace {

constexpr std::string_view kLogMarker = "--- segma: ";

uint64_t Fnv1a(std::string_view s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// Identifies what an engine was started with, so that a restarted worker adopts only engines
// whose command it would render the same way.
std::string Fingerprint(const LaunchSpec& l) {
  uint64_t h = Fnv1a("v1");
  for (const std::string& a : l.argv) h = Fnv1a(a + '\0', h);
  for (const auto& [k, v] : l.env) h = Fnv1a(k + '=' + v + '\0', h);
  h = Fnv1a(l.working_dir, h);
  return fmt::format("{:016x}", h);
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return fmt::format("engine exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* abbrev = sigabbrev_np(sig);
    return fmt::format("engine was killed by signal {}{}", sig,
                       abbrev != nullptr ? fmt::format(" (SIG{})", abbrev) : "");
  }
  return "engine exited";
}

// The last `lines` non-empty lines the engine wrote since its latest start marker.
std::string LogTail(const std::string& path, int lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff from = std::max<std::streamoff>(0, size - 64 * 1024);
  in.seekg(from);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (size_t marker = text.rfind(kLogMarker); marker != std::string::npos) {
    const size_t eol = text.find('\n', marker);
    text = eol == std::string::npos ? "" : text.substr(eol + 1);
  }
  std::vector<std::string> all;
  std::istringstream ss(text);
  for (std::string l; std::getline(ss, l);) {
    if (!l.empty() && l.back() == '\r') l.pop_back();
    if (!l.empty()) all.push_back(std::move(l));
  }
  const size_t start = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
  std::string out;
  for (size_t i = start; i < all.size(); ++i) {
    if (!out.empty()) out += '\n';
    out += all[i];
  }
  if (out.size() > 4000) out = "…" + out.substr(out.size() - 4000);
  return out;
}

std::string WithTail(const std::string& what, const std::string& log_path, int lines) {
  std::string tail = LogTail(log_path, lines);
  return tail.empty() ? what + " (no output)" : what + ": " + tail;
}

// copytruncate: the engine keeps its O_APPEND descriptor (it may outlive this worker process),
// so the live file is copied aside and truncated rather than renamed.
void RotateIfNeeded(const std::string& path, int64_t max_bytes, int files) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || st.st_size < max_bytes) return;
  std::error_code ec;
  for (int i = files - 1; i >= 2; --i) {
    std::filesystem::rename(fmt::format("{}.{}", path, i - 1), fmt::format("{}.{}", path, i), ec);
  }
  if (files >= 2) {
    std::filesystem::copy_file(path, path + ".1", std::filesystem::copy_options::overwrite_existing,
                               ec);
  }
  if (::truncate(path.c_str(), 0) != 0) {
    Logger("worker")->warn("cannot truncate engine log {}: {}", path, std::strerror(errno));
  }
}

std::optional<std::string> ResolveExecutable(const std::string& name, const std::string& path) {
  auto executable = [](const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
  };
  if (name.find('/') != std::string::npos) {
    return executable(name) ? std::optional<std::string>(name) : std::nullopt;
  }
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t colon = path.find(':', pos);
    if (colon == std::string::npos) colon = path.size();
    std::string dir = path.substr(pos, colon - pos);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    if (executable(candidate)) return candidate;
    pos = colon + 1;
  }
  return std::nullopt;
}

std::map<std::string, std::string> MergedEnvironment(
    const std::map<std::string, std::string>& over) {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view kv(*e);
    const size_t eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    env[std::string(kv.substr(0, eq))] = std::string(kv.substr(eq + 1));
  }
  for (const auto& [k, v] : over) env[k] = v;
  return env;
}

#if defined(__SANITIZE_ADDRESS__)
// The path of the ASan runtime this (sanitized) process runs with, "" if none is loaded.
std::string LoadedAsanRuntime() {
  std::string path;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        const std::string_view name = info->dlpi_name != nullptr ? info->dlpi_name : "";
        if (name.find("/libasan.so") == std::string_view::npos) return 0;
        *static_cast<std::string*>(out) = std::string(name);
        return 1;
      },
      &path);
  return path;
}

// The test build's own engines (`segma engine-sim`, i.e. this very binary) carry the ASan runtime,
// which must come first in the initial library list: ahead of a preloaded libsegma-vgpu, whose
// dlsym resolves the runtime's RTLD_NEXT lookups as if made from itself (behind it, the runtime
// would find its own interceptors as the "real" functions). Other engines are not sanitized and
// get the preload as in a release build, which never does this.
void PutSanitizerRuntimeFirst(const std::string& exe, std::map<std::string, std::string>& env) {
  auto preload = env.find("LD_PRELOAD");
  if (preload == env.end() || preload->second.empty()) return;
  struct stat engine {
  }, self{};
  if (::stat(exe.c_str(), &engine) != 0 || ::stat("/proc/self/exe", &self) != 0 ||
      engine.st_dev != self.st_dev || engine.st_ino != self.st_ino) {
    return;
  }
  const std::string runtime = LoadedAsanRuntime();
  if (!runtime.empty()) preload->second = runtime + ":" + preload->second;
}
#endif

bool PortFree(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  // As the engines do: a port in TIME_WAIT (an engine that just stopped) is free; one with a
  // listener is not.
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// posix_spawn of `exe` with stdin /dev/null, stdout and stderr to `log_fd`, no other inherited
// descriptor, default signal handling, in process group `pgroup` (0: a new one of its own).
// Returns posix_spawn's error (0 on success).
int SpawnProcess(const std::string& exe, std::vector<std::string> argv_strings,
                 std::vector<std::string> env_strings, int log_fd, const std::string& working_dir,
                 pid_t pgroup, pid_t* pid) {
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, log_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, log_fd, 2);
  if (!working_dir.empty()) posix_spawn_file_actions_addchdir_np(&actions, working_dir.c_str());
  // Sockets and files of the worker (its HTTP port!) must not leak into engines that may
  // outlive it.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM}) {
    sigaddset(&defaults, sig);
  }
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  // Its own process group (or the engine's, for its guard): stop signals reach all of it.
  posix_spawnattr_setpgroup(&attr, pgroup);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  const int rc = ::posix_spawn(pid, exe.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  return rc;
}

std::string ToJsonText(const json::object& o) { return ToJsonString(json::value(o)); }

}  // namespace

// One instance's engine. All fields GUARDED_BY(Supervisor::mu_).
struct Supervisor::Engine {
  EngineSpec spec;
  EngineState state = EngineState::kStarting;
  std::string message;
  pid_t pid = 0;  // also the process group id; 0 = no process
  uint64_t start_ticks = 0;
  bool adopted = false;
  bool spawned_before = false;
  bool permanent_error = false;  // no restart (e.g. the executable is missing)
  Timestamp spawned_at{};
  std::optional<Timestamp> running_since;
  bool terminating = false;
  std::optional<Timestamp> kill_at;  // SIGKILL deadline while terminating
  bool removing = false;             // Stop() was called: forget it once the process is gone
  std::string pending_error;         // reported once the process is gone (readiness timeout)
  std::optional<Timestamp> restart_at;
  int consecutive_failures = 0;
  std::string fingerprint;
  std::string log_path;
  Timestamp started_at{};  // for the state file: when the process was spawned (kept on adoption)
  // Liveness (RUNNING only): when the next check is due, failed checks in a row.
  Timestamp next_liveness_at{};
  int liveness_failed = 0;
  bool failure_reported = false;  // ERROR already reported (a hang): the exit only cleans up
  pid_t guard_pid = 0;            // our child, in the engine's process group; 0 = none
};

std::string_view EngineStateName(EngineState s) {
  switch (s) {
    case EngineState::kStarting:
      return "STARTING";
    case EngineState::kRunning:
      return "RUNNING";
    case EngineState::kError:
      return "ERROR";
    case EngineState::kStopped:
      return "STOPPED";
  }
  return "?";
}

int ProbeHttp(int port, const std::string& path, std::chrono::milliseconds timeout,
              std::string* error, const std::string& api_key) {
  auto failed = [error](std::string why) {
    if (error != nullptr) *error = std::move(why);
    return 0;
  };
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return failed(fmt::format("cannot open a socket: {}", std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  // An I/O deadline, not a decision: steady time is right here.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto wait = [&](short events) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, static_cast<int>(left.count())) == 1 && (p.revents & events) != 0;
  };
  const std::string no_answer = fmt::format("no answer within {} ms", timeout.count());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno != EINPROGRESS) return failed(std::strerror(errno));
    if (!wait(POLLOUT)) return failed(no_answer);
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return failed(no_answer);
    if (err != 0) return failed(std::strerror(err));
  }
  if (path.empty()) return 200;
  const std::string auth =
      api_key.empty() ? "" : fmt::format("Authorization: Bearer {}\r\n", api_key);
  const std::string req = fmt::format(
      "GET {} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n{}Connection: close\r\n\r\n", path, port, auth);
  size_t sent = 0;
  while (sent < req.size()) {
    const ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait(POLLOUT)) return failed(no_answer);
    } else {
      return failed(std::strerror(errno));
    }
  }
  std::string head;
  while (head.find("\r\n") == std::string::npos && head.size() < 4096) {
    char buf[512];
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
      head.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait(POLLIN)) return failed(no_answer);
    } else {
      break;
    }
  }
  // "HTTP/1.1 200 OK"
  if (!head.starts_with("HTTP/1.") || head.size() < 12) {
    return failed(head.empty() ? "connection closed without an answer" : "not an HTTP answer");
  }
  int code = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (head[i] < '0' || head[i] > '9') return failed("not an HTTP answer");
    code = code * 10 + (head[i] - '0');
  }
  return code;
}

Supervisor::Supervisor(SupervisorOptions options, Clock& clock, StateCallback callback)
    : options_(std::move(options)),
      clock_(clock),
      callback_(std::move(callback)),
      self_pid_(::getpid()),
      self_start_ticks_(ProcessStartTicks(::getpid()).value_or(0)) {
  // Workers on one host share the port range: each starts its search at its own place, so two
  // of them rarely pick the same free port while an engine has yet to bind it.
  const uint64_t seed =
      static_cast<uint64_t>(::getpid()) * 0x9e3779b97f4a7c15ULL ^
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  next_port_ = static_cast<int>(
      seed % static_cast<uint64_t>(std::max(1, options_.port_max - options_.port_min + 1)));
}

Result<std::unique_ptr<Supervisor>> Supervisor::Create(SupervisorOptions options, Clock& clock,
                                                       StateCallback callback) {
  if (options.data_dir.empty()) return InvalidArgumentError("supervisor data_dir is empty");
  if (options.port_min < 1 || options.port_max > 65535 || options.port_min > options.port_max) {
    return InvalidArgumentError(
        fmt::format("bad engine port range {}-{}", options.port_min, options.port_max));
  }
  for (const char* sub : {"engines", "logs"}) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(options.data_dir) / sub, ec);
    if (ec) {
      return UnavailableError(
          fmt::format("cannot create {}/{}: {}", options.data_dir, sub, ec.message()));
    }
  }
  std::unique_ptr<Supervisor> s(new Supervisor(std::move(options), clock, std::move(callback)));
  s->thread_ = std::thread([p = s.get()] {
    NameThread("segma-engine");
    p->Loop();
  });
  return s;
}

Supervisor::~Supervisor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string Supervisor::StatePath(int64_t id) const {
  if (id < 0) return fmt::format("{}/engines/rpc-server-{}.json", options_.data_dir, -id);
  return fmt::format("{}/engines/instance-{}.json", options_.data_dir, id);
}

std::string Supervisor::LogPath(int64_t id) const {
  if (id < 0) return fmt::format("{}/logs/rpc-server-{}.log", options_.data_dir, -id);
  return fmt::format("{}/logs/instance-{}.log", options_.data_dir, id);
}

bool Supervisor::PortReservedByOther(int port, int64_t id) const {
  for (const auto& [other, p] : reserved_ports_) {
    if (p == port && other != id) return true;
  }
  return false;
}

Result<int> Supervisor::AllocatePort(int64_t instance_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = reserved_ports_.find(instance_id); it != reserved_ports_.end()) return it->second;
  const int n = options_.port_max - options_.port_min + 1;
  for (int k = 0; k < n; ++k) {
    const int offset = (next_port_ + k) % n;
    const int port = options_.port_min + offset;
    if (PortReservedByOther(port, instance_id) || !PortFree(port)) continue;
    reserved_ports_[instance_id] = port;
    next_port_ = (offset + 1) % n;
    return port;
  }
  return ResourceExhaustedError(
      fmt::format("no free engine port in {}-{}", options_.port_min, options_.port_max));
}

void Supervisor::ReleasePort(int64_t instance_id) {
  std::lock_guard<std::mutex> lock(mu_);
  reserved_ports_.erase(instance_id);
}

Status Supervisor::Start(EngineSpec spec) {
  if (spec.launch.argv.empty() || spec.launch.argv[0].empty()) {
    return InvalidArgumentError("engine command is empty");
  }
  if (spec.port < 1 || spec.port > 65535) {
    return InvalidArgumentError(fmt::format("bad engine port {}", spec.port));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t id = spec.instance_id;
    if (engines_.count(id) > 0) {
      return AlreadyExistsError(fmt::format("instance {} already has an engine", id));
    }
    if (PortReservedByOther(spec.port, id)) {
      return AlreadyExistsError(fmt::format("port {} is reserved by another instance", spec.port));
    }
    reserved_ports_[id] = spec.port;
    auto e = std::make_unique<Engine>();
    e->fingerprint = Fingerprint(spec.launch);
    e->log_path = LogPath(id);
    e->spec = std::move(spec);
    e->restart_at = clock_.Now();  // spawned by the supervisor thread right away
    engines_[id] = std::move(e);
  }
  cv_.notify_all();
  return OkStatus();
}

Status Supervisor::Stop(int64_t instance_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = engines_.find(instance_id);
    if (it == engines_.end()) {
      return NotFoundError(fmt::format("instance {} has no engine here", instance_id));
    }
    Engine& e = *it->second;
    e.removing = true;
    e.restart_at.reset();
    Terminate(e, clock_.Now());
  }
  cv_.notify_all();
  return OkStatus();
}

void Supervisor::StopAll() {
  std::unique_lock<std::mutex> lock(mu_);
  for (auto& [id, e] : engines_) {
    e->removing = true;
    e->restart_at.reset();
    Terminate(*e, clock_.Now());
  }
  cv_.notify_all();
  // Real time, not the injected clock: this bounds how long a caller blocks.
  const auto limit = options_.stop_grace + std::chrono::seconds(5);
  cv_.wait_for(lock, limit, [&] { return engines_.empty(); });
  if (!engines_.empty()) {
    Logger("worker")->error("engine supervisor: {} engine(s) still stopping after {} ms",
                            engines_.size(), limit.count());
  }
}

void Supervisor::Terminate(Engine& e, Timestamp now, std::chrono::milliseconds grace) {
  if (e.pid == 0 || e.terminating) return;
  e.terminating = true;
  e.kill_at = now + grace;
  // An adopted engine is not our child: make sure the pid still names it.
  if (e.adopted && ProcessStartTicks(e.pid) != e.start_ticks) return;
  ::kill(-e.pid, SIGTERM);
  // A stopped process (SIGSTOP, a debugger) acts on SIGTERM only once it runs again.
  ::kill(-e.pid, SIGCONT);
}

void Supervisor::WriteStateFile(const Engine& e) {
  json::object o;
  o["instance_id"] = e.spec.instance_id;
  o["name"] = e.spec.name;
  o["pid"] = e.pid;
  o["pgid"] = e.pid;
  o["port"] = e.spec.port;
  o["start_ticks"] = e.start_ticks;
  o["started_at"] = FormatRfc3339(e.started_at);
  o["fingerprint"] = e.fingerprint;
  o["restart_count"] = e.spec.restart_count;
  // The worker process that owns the engine now; its guard stops the engine when no live owner
  // has been recorded for the orphan grace.
  o["worker_pid"] = self_pid_;
  o["worker_start_ticks"] = self_start_ticks_;
  const std::string path = StatePath(e.spec.instance_id);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << ToJsonText(o) << "\n";
    if (!out) {
      Logger("worker")->error("cannot write engine state file {}", tmp);
      return;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) Logger("worker")->error("cannot write engine state file {}: {}", path, ec.message());
}

EngineStatus Supervisor::StatusOf(const Engine& e) const {
  EngineStatus s;
  s.instance_id = e.spec.instance_id;
  s.state = e.state;
  s.message = e.message;
  s.restart_count = e.spec.restart_count;
  s.pid = e.pid;
  s.port = e.spec.port;
  s.adopted = e.adopted;
  s.next_restart_at = e.state == EngineState::kError ? e.restart_at : std::nullopt;
  s.log_path = e.log_path;
  return s;
}

void Supervisor::Spawn(Engine& e, std::vector<EngineStatus>& events) {
  const Timestamp now = clock_.Now();
  e.restart_at.reset();
  e.terminating = false;
  e.kill_at.reset();
  e.pending_error.clear();
  e.running_since.reset();
  e.adopted = false;
  if (e.spawned_before) ++e.spec.restart_count;
  e.spawned_before = true;
  auto fail = [&](std::string message) {
    e.state = EngineState::kError;
    e.message = std::move(message);
    e.permanent_error = true;
    Logger("worker")->error("engine for instance {} ({}): {}", e.spec.instance_id, e.spec.name,
                            e.message);
    events.push_back(StatusOf(e));
  };

  const LaunchSpec& l = e.spec.launch;
  std::map<std::string, std::string> env = MergedEnvironment(l.env);
  const std::string path_env = env.count("PATH") > 0 ? env["PATH"] : "/usr/local/bin:/usr/bin:/bin";
  std::optional<std::string> exe = ResolveExecutable(l.argv[0], path_env);
  if (!exe) return fail("executable not found: " + l.argv[0]);
#if defined(__SANITIZE_ADDRESS__)
  PutSanitizerRuntimeFirst(*exe, env);
#endif
  if (!l.working_dir.empty() && !std::filesystem::is_directory(l.working_dir)) {
    return fail("working directory not found: " + l.working_dir);
  }

  RotateIfNeeded(e.log_path, options_.log_max_bytes, options_.log_files);
  const int log_fd = ::open(e.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return fail(fmt::format("cannot open engine log {}: {}", e.log_path, std::strerror(errno)));
  }
  std::string cmdline;
  for (const std::string& a : l.argv) cmdline += (cmdline.empty() ? "" : " ") + a;
  // An engine that takes its secret on the command line (SGLang) must not leave it in a log.
  cmdline = RedactSecret(cmdline, l.api_key);
  const std::string header = fmt::format("{}start #{} at {}: {}\n", kLogMarker,
                                         e.spec.restart_count + 1, FormatRfc3339(now), cmdline);
  if (::write(log_fd, header.data(), header.size()) < 0) {
    Logger("worker")->warn("cannot write engine log {}: {}", e.log_path, std::strerror(errno));
  }

  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  pid_t pid = 0;
  const int rc = SpawnProcess(*exe, l.argv, env_strings, log_fd, l.working_dir, 0, &pid);
  ::close(log_fd);
  if (rc != 0) {
    if (rc == ENOENT || rc == EACCES || rc == ENOEXEC) {
      return fail(fmt::format("executable not found: {} ({})", l.argv[0], std::strerror(rc)));
    }
    return fail(fmt::format("cannot start engine {}: {}", l.argv[0], std::strerror(rc)));
  }
  e.pid = pid;
  e.start_ticks = ProcessStartTicks(pid).value_or(0);
  e.spawned_at = now;
  e.started_at = now;
  e.state = EngineState::kStarting;
  e.message.clear();
  e.permanent_error = false;
  e.failure_reported = false;
  e.liveness_failed = 0;
  WriteStateFile(e);
  SpawnGuard(e);
  Logger("worker")->info("engine for instance {} ({}) started: pid {}, port {}: {}",
                         e.spec.instance_id, e.spec.name, pid, e.spec.port, cmdline);
  events.push_back(StatusOf(e));
}

void Supervisor::SpawnGuard(Engine& e) {
  if (options_.guard_command.empty()) return;
  EngineGuardOptions guard;
  guard.state_file = StatePath(e.spec.instance_id);
  guard.engine_pid = e.pid;
  guard.engine_start_ticks = e.start_ticks;
  guard.orphan_grace = options_.orphan_grace;
  guard.stop_grace = options_.stop_grace;
  guard.check_interval = options_.guard_check_interval;
  const std::vector<std::string> argv = EngineGuardCommand(options_.guard_command, guard);
  const int log_fd = ::open(e.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    Logger("worker")->error("cannot open engine log {} for its guard: {}", e.log_path,
                            std::strerror(errno));
    return;
  }
  std::vector<std::string> env;
  for (const auto& [k, v] : MergedEnvironment({})) env.push_back(k + "=" + v);
  pid_t pid = 0;
  // In the engine's process group: whatever stops the group stops the guard too.
  const int rc = SpawnProcess(argv[0], argv, env, log_fd, "", e.pid, &pid);
  ::close(log_fd);
  if (rc != 0) {
    // The engine runs unguarded: it is still stopped by this worker, or adopted by the next.
    Logger("worker")->error("cannot start the guard of engine {} (instance {}): {}", e.pid,
                            e.spec.instance_id, std::strerror(rc));
    return;
  }
  e.guard_pid = pid;
}

void Supervisor::CheckExit(Engine& e, std::vector<EngineStatus>& events) {
  siginfo_t info{};
  const int rc = ::waitid(P_PID, static_cast<id_t>(e.pid), &info, WEXITED | WNOHANG | WNOWAIT);
  if (rc == 0 && info.si_pid == e.pid) {
    // Still a zombie, so its pid (= the group id) cannot be reused yet: kill what is left of
    // the group (an engine's own workers), then reap.
    ::kill(-e.pid, SIGKILL);
    int status = 0;
    ::waitpid(e.pid, &status, 0);
    // Its guard was in the group: our child too, reaped here (SIGKILL is not delayed).
    if (e.guard_pid != 0) ::waitpid(e.guard_pid, nullptr, 0);
    e.guard_pid = 0;
    return OnExited(e, DescribeWaitStatus(status), events);
  }
  if (e.guard_pid != 0 && ::waitpid(e.guard_pid, nullptr, WNOHANG) == e.guard_pid) {
    Logger("worker")->warn("the guard of engine {} (instance {}) exited; see {}", e.pid,
                           e.spec.instance_id, e.log_path);
    e.guard_pid = 0;
  }
  if (rc == 0) return;  // our child, still running
  // Not our child (adopted after a worker restart): watch /proc.
  if (ProcessStartTicks(e.pid) != e.start_ticks) {
    OnExited(e, "engine exited (status unknown: adopted after a worker restart)", events);
  }
}

void Supervisor::OnExited(Engine& e, const std::string& how, std::vector<EngineStatus>& events) {
  const Timestamp now = clock_.Now();
  Logger("worker")->info("engine for instance {} ({}), pid {}: {}", e.spec.instance_id, e.spec.name,
                         e.pid, how);
  e.pid = 0;
  e.terminating = false;
  e.kill_at.reset();
  std::error_code ec;
  std::filesystem::remove(StatePath(e.spec.instance_id), ec);
  if (e.removing) return;  // Tick forgets it and reports STOPPED
  if (e.failure_reported) {
    // A hung engine: ERROR and its restart were decided when it was found hung.
    e.failure_reported = false;
    return;
  }
  // The log tail goes to the server as the instance's message: an engine that printed its
  // secret (SGLang's server_args) must not hand it on.
  std::string message = e.pending_error.empty()
                            ? RedactSecret(WithTail(how, e.log_path, options_.error_tail_lines),
                                           e.spec.launch.api_key)
                            : e.pending_error;
  e.pending_error.clear();
  Fail(e, std::move(message), now, events);
}

void Supervisor::Fail(Engine& e, std::string message, Timestamp now,
                      std::vector<EngineStatus>& events) {
  if (e.running_since && now - *e.running_since >= options_.backoff_reset_after) {
    e.consecutive_failures = 0;
  }
  e.running_since.reset();
  e.state = EngineState::kError;
  e.message = std::move(message);
  if (e.spec.restart_on_error) {
    auto delay = options_.backoff_base;
    for (int i = 0; i < e.consecutive_failures && delay < options_.backoff_max; ++i) delay *= 2;
    delay = std::min(delay, options_.backoff_max);
    ++e.consecutive_failures;
    e.restart_at = now + delay;
  }
  Logger("worker")->warn("engine for instance {} ({}) failed: {}", e.spec.instance_id, e.spec.name,
                         e.message);
  events.push_back(StatusOf(e));
}

void Supervisor::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!quit_) {
    std::vector<EngineStatus> events = std::move(pending_events_);
    pending_events_.clear();
    std::vector<ProbeJob> probes;
    Tick(events, probes);
    lock.unlock();
    // Side by side: a hung engine costs one timeout per tick, not one per engine.
    if (probes.size() == 1) {
      RunProbe(probes[0]);
    } else if (probes.size() > 1) {
      std::vector<std::thread> threads;
      threads.reserve(probes.size());
      for (ProbeJob& p : probes) threads.emplace_back([&p] { RunProbe(p); });
      for (std::thread& t : threads) t.join();
    }
    lock.lock();
    for (const ProbeJob& p : probes) ApplyProbe(p, events);
    const bool any_events = !events.empty();
    lock.unlock();
    for (const EngineStatus& ev : events) {
      if (callback_) callback_(ev);
    }
    lock.lock();
    if (any_events) cv_.notify_all();
    if (quit_) break;
    cv_.wait_for(lock, options_.poll_interval);
  }
}

void Supervisor::RunProbe(ProbeJob& p) {
  if (p.liveness && p.health_path.empty()) {
    // A server without HTTP (llama.cpp's rpc-server): connecting again and again would fill the
    // listen backlog of a server that serves one client at a time (ggml-rpc listens with a backlog
    // of 1 and its llama-server stays connected). Its listener must still be its own.
    if (Status owner = CheckPortOwner(p.port, p.pid); !owner.ok()) {
      p.stranger = owner.code() == StatusCode::kFailedPrecondition;
      p.failure = owner.message();
      return;
    }
    p.passed = true;
    return;
  }
  const std::string what = p.health_path.empty() ? "connect" : fmt::format("GET {}", p.health_path);
  std::string error;
  int code = ProbeHttp(p.port, p.health_path, p.timeout, &error, p.api_key);
  if (code != 200) {
    p.failure =
        code == 0 ? fmt::format("{}: {}", what, error) : fmt::format("{}: HTTP {}", what, code);
    return;
  }
  if (p.liveness && !p.liveness_path.empty()) {
    code = ProbeHttp(p.port, p.liveness_path, p.timeout, &error, p.api_key);
    if (code != 200) {
      p.failure = code == 0 ? fmt::format("GET {}: {}", p.liveness_path, error)
                            : fmt::format("GET {}: HTTP {}", p.liveness_path, code);
      return;
    }
  }
  // What answered must be the engine, not a process that took its port.
  if (Status owner = CheckPortOwner(p.port, p.pid); !owner.ok()) {
    p.stranger = owner.code() == StatusCode::kFailedPrecondition;
    p.failure = owner.message();
    return;
  }
  p.passed = true;
}

void Supervisor::ApplyProbe(const ProbeJob& p, std::vector<EngineStatus>& events) {
  auto it = engines_.find(p.instance_id);
  if (it == engines_.end()) return;
  Engine& e = *it->second;
  if (e.pid != p.pid || e.terminating) return;
  const Timestamp now = clock_.Now();
  if (!p.liveness) {
    if (e.state != EngineState::kStarting) return;
    if (p.passed) {
      e.state = EngineState::kRunning;
      e.message.clear();
      e.running_since = now;
      e.liveness_failed = 0;
      e.next_liveness_at = now + options_.liveness_period;
      Logger("worker")->info("engine for instance {} ({}) is healthy on port {}",
                             e.spec.instance_id, e.spec.name, e.spec.port);
      events.push_back(StatusOf(e));
    } else if (p.stranger && e.message != p.failure) {
      // Not ready, and saying why: the answer came from someone else.
      e.message = p.failure;
      Logger("worker")->warn("engine for instance {} ({}) is not ready: {}", e.spec.instance_id,
                             e.spec.name, e.message);
      events.push_back(StatusOf(e));
    }
    return;
  }
  if (e.state != EngineState::kRunning) return;
  if (p.passed) {
    e.liveness_failed = 0;
    return;
  }
  ++e.liveness_failed;
  Logger("worker")->warn("engine for instance {} ({}): liveness check {} of {} failed: {}",
                         e.spec.instance_id, e.spec.name, e.liveness_failed,
                         options_.liveness_failures, p.failure);
  if (e.liveness_failed < options_.liveness_failures) return;
  // Hung (or replaced on its port): out of rotation now, stopped, restarted by the backoff.
  e.liveness_failed = 0;
  Fail(e,
       fmt::format("liveness check failed: {} ({} checks in a row)", p.failure,
                   options_.liveness_failures),
       now, events);
  e.failure_reported = true;
  Terminate(e, now, options_.hung_stop_grace);
}

void Supervisor::Tick(std::vector<EngineStatus>& events, std::vector<ProbeJob>& probes) {
  const Timestamp now = clock_.Now();
  for (auto it = engines_.begin(); it != engines_.end();) {
    Engine& e = *it->second;
    if (e.pid != 0) CheckExit(e, events);
    if (e.pid != 0) {
      RotateIfNeeded(e.log_path, options_.log_max_bytes, options_.log_files);
      if (e.terminating && e.kill_at && now >= *e.kill_at) {
        Logger("worker")->warn("engine for instance {} ignored SIGTERM: SIGKILL",
                               e.spec.instance_id);
        if (!e.adopted || ProcessStartTicks(e.pid) == e.start_ticks) ::kill(-e.pid, SIGKILL);
        e.kill_at.reset();
      } else if (!e.terminating && e.state == EngineState::kStarting) {
        if (now - e.spawned_at >= e.spec.ready_timeout) {
          e.pending_error = fmt::format("engine did not become healthy within {} s",
                                        e.spec.ready_timeout.count());
          if (!e.message.empty()) e.pending_error += ": " + e.message;
          Terminate(e, now);
        } else {
          ProbeJob job;
          job.instance_id = e.spec.instance_id;
          job.pid = e.pid;
          job.port = e.spec.port;
          job.health_path = e.spec.launch.health_path;
          job.api_key = e.spec.launch.api_key;
          job.timeout = options_.probe_timeout;
          probes.push_back(std::move(job));
        }
      } else if (!e.terminating && e.state == EngineState::kRunning &&
                 options_.liveness_failures > 0 && now >= e.next_liveness_at) {
        e.next_liveness_at = now + options_.liveness_period;
        ProbeJob job;
        job.instance_id = e.spec.instance_id;
        job.pid = e.pid;
        job.port = e.spec.port;
        job.liveness = true;
        job.health_path = e.spec.launch.health_path;
        job.liveness_path = e.spec.liveness_path;
        job.api_key = e.spec.launch.api_key;
        job.timeout = options_.liveness_timeout;
        probes.push_back(std::move(job));
      }
    }
    if (e.pid == 0 && e.removing) {
      reserved_ports_.erase(e.spec.instance_id);
      e.state = EngineState::kStopped;
      e.message.clear();
      events.push_back(StatusOf(e));
      it = engines_.erase(it);
      continue;
    }
    if (e.pid == 0 && e.restart_at && now >= *e.restart_at) Spawn(e, events);
    ++it;
  }
}

Supervisor::RecoverReport Supervisor::Recover(const std::map<int64_t, EngineSpec>& expected) {
  RecoverReport report;
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator(options_.data_dir + "/engines", ec)) {
    if (entry.path().extension() == ".json") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::lock_guard<std::mutex> lock(mu_);
  const Timestamp now = clock_.Now();
  for (const auto& path : files) {
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Result<json::value> parsed = ParseJson(text);
    if (!parsed.ok() || !parsed->is_object()) {
      Logger("worker")->warn("ignoring unreadable engine state file {}", path.string());
      std::filesystem::remove(path, ec);
      continue;
    }
    JsonReader r(parsed->as_object());
    const int64_t id = r.Int("instance_id");
    const std::string name = r.OptionalString("name").value_or("");
    const pid_t pid = static_cast<pid_t>(r.Int("pid"));
    (void)r.OptionalInt("pgid");
    const int port = static_cast<int>(r.Int("port"));
    const uint64_t ticks = static_cast<uint64_t>(r.Int("start_ticks"));
    const std::optional<std::string> started_at = r.OptionalString("started_at");
    // Written by workers that record their engines' owner; older files have none.
    (void)r.OptionalInt("worker_pid");
    (void)r.OptionalInt("worker_start_ticks");
    const std::string fingerprint = r.OptionalString("fingerprint").value_or("");
    const int restart_count = static_cast<int>(r.OptionalInt("restart_count").value_or(0));
    if (Status s = r.Finish(); !s.ok() || pid <= 1 || engines_.count(id) > 0) {
      Logger("worker")->warn("ignoring engine state file {}: {}", path.string(),
                             s.ok() ? "already supervised or bad pid" : s.message());
      if (engines_.count(id) == 0) std::filesystem::remove(path, ec);
      continue;
    }
    std::optional<ProcStat> info = ReadProcStat(pid);
    if (info && info->start_ticks == ticks && info->state == 'Z') {
      // An engine of this very process that exited: reap it (no zombies).
      ::waitpid(pid, nullptr, WNOHANG);
      info.reset();
    }
    if (!info || info->start_ticks != ticks) {
      report.stale.push_back(id);
      std::filesystem::remove(path, ec);
      continue;
    }
    auto e = std::make_unique<Engine>();
    e->pid = pid;
    e->start_ticks = ticks;
    e->adopted = true;
    e->spawned_before = true;
    e->spawned_at = now;
    e->started_at = now;
    if (started_at) {
      if (Result<Timestamp> t = ParseRfc3339(*started_at); t.ok()) e->started_at = *t;
    }
    e->log_path = LogPath(id);
    e->fingerprint = fingerprint;
    auto want = expected.find(id);
    if (want != expected.end() && want->second.port == port &&
        Fingerprint(want->second.launch) == fingerprint && !PortReservedByOther(port, id)) {
      e->spec = want->second;
      e->spec.restart_count = std::max(e->spec.restart_count, restart_count);
      e->state = EngineState::kStarting;
      reserved_ports_[id] = port;
      report.adopted.push_back(id);
      WriteStateFile(*e);  // this process owns it now: its guard stands down
      Logger("worker")->info("adopted engine for instance {} ({}): pid {}, port {}", id, name, pid,
                             port);
      pending_events_.push_back(StatusOf(*e));
    } else {
      e->spec.instance_id = id;
      e->spec.name = name;
      e->spec.port = port;
      e->removing = true;
      e->state = EngineState::kStarting;
      Terminate(*e, now);
      report.stopped.push_back(id);
      Logger("worker")->info("stopping engine for instance {} ({}), pid {}: no longer wanted here",
                             id, name, pid);
    }
    engines_[id] = std::move(e);
  }
  cv_.notify_all();
  return report;
}

std::vector<EngineRecord> ListEngineRecords(const std::string& data_dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(data_dir + "/engines", ec)) {
    if (entry.path().extension() == ".json") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<EngineRecord> out;
  for (const auto& path : files) {
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Result<json::value> parsed = ParseJson(text);
    if (!parsed.ok() || !parsed->is_object()) continue;
    const json::object& o = parsed->as_object();
    auto num = [&o](std::string_view k) -> int64_t {
      auto it = o.find(k);
      return it != o.end() && it->value().is_int64() ? it->value().as_int64() : 0;
    };
    EngineRecord r;
    r.instance_id = num("instance_id");
    if (auto it = o.find("name"); it != o.end() && it->value().is_string()) {
      r.name = std::string(it->value().as_string());
    }
    r.pid = static_cast<pid_t>(num("pid"));
    r.port = static_cast<int>(num("port"));
    r.worker_pid = static_cast<pid_t>(num("worker_pid"));
    r.alive = r.pid > 1 && ProcessStartTicks(r.pid) == static_cast<uint64_t>(num("start_ticks"));
    r.owned = r.worker_pid > 1 &&
              ProcessStartTicks(r.worker_pid) == static_cast<uint64_t>(num("worker_start_ticks"));
    out.push_back(std::move(r));
  }
  return out;
}

std::optional<EngineStatus> Supervisor::Get(int64_t instance_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = engines_.find(instance_id);
  if (it == engines_.end()) return std::nullopt;
  return StatusOf(*it->second);
}

std::vector<EngineStatus> Supervisor::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<EngineStatus> out;
  for (const auto& [id, e] : engines_) out.push_back(StatusOf(*e));
  return out;
}

std::vector<pid_t> Supervisor::ManagedPids() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<pid_t> out;
  for (const auto& [id, e] : engines_) {
    if (e->pid != 0) out.push_back(e->pid);
  }
  return out;
}

}  // namespace segma::engines
