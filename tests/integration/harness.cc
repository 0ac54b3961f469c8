#include "integration/harness.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "fakes/test_ports.h"

namespace segma::testing {

namespace {
std::string BuildDir() {
  const char* dir = std::getenv("SEGMA_BUILD_DIR");
#ifdef SEGMA_DEFAULT_BUILD_DIR
  if (dir == nullptr) dir = SEGMA_DEFAULT_BUILD_DIR;
#endif
  return dir != nullptr ? dir : ".";
}
}  // namespace

std::string SegmaBinary() { return BuildDir() + "/src/cli/segma"; }

TempDir::TempDir(Medium medium) {
  std::random_device rd;
  const std::string base =
      medium == Medium::kMemory ? std::string("/dev/shm/segma-test-tmp") : BuildDir() + "/test-tmp";
  path_ = base + "/" + std::to_string(getpid()) + "-" + std::to_string(rd());
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

uint16_t FreePort() { return static_cast<uint16_t>(ReservePorts(1)); }

Process::Process(std::vector<std::string> args, std::map<std::string, std::string> env,
                 std::string log_path)
    : log_path_(std::move(log_path)) {
  pid_ = ::fork();
  if (pid_ == 0) {
    int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::setpgid(0, 0);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
}

Process::~Process() {
  if (running()) {
    Signal(SIGKILL);
    Wait(std::chrono::seconds(10));
  }
}

void Process::Signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

bool Process::running() {
  if (exit_status_ || pid_ <= 0) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == 0) return true;
  exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  return false;
}

std::optional<int> Process::Wait(std::chrono::milliseconds timeout) {
  WaitUntil([this] { return !running(); }, timeout);
  return exit_status_;
}

std::string Process::Log() const { return ReadFile(log_path_); }

bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

http::ClientResponse Api::Call(
    boost::beast::http::verb method, const std::string& path,
    const std::optional<json::value>& body,
    const std::vector<std::pair<std::string, std::string>>& headers) const {
  http::ClientRequest req;
  req.method = method;
  req.url = base + path;
  req.Bearer(token);
  for (const auto& h : headers) req.headers.push_back(h);
  if (body) req.JsonBody(*body);
  req.timeout = std::chrono::seconds(20);
  Result<http::ClientResponse> r = http::FetchSync(std::move(req));
  if (!r.ok()) {
    http::ClientResponse failed;
    failed.status = 0;
    failed.body = r.status().ToString();
    return failed;
  }
  return *r;
}

json::object Api::Obj(const http::ClientResponse& r) {
  Result<json::value> v = r.Json();
  if (!v.ok() || !v->is_object()) return {};
  return v->as_object();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

namespace {

// Runs `args` as the server process, waits for /healthz and logs the admin in.
std::string LaunchAndLogin(std::vector<std::string> args, uint16_t port,
                           const std::string& admin_password, const std::string& log_path,
                           std::unique_ptr<Process>& server, Api& api) {
  const std::string what = "segma " + args[1];
  server = std::make_unique<Process>(
      std::move(args),
      std::map<std::string, std::string>{{"SEGMA_BOOTSTRAP_PASSWORD", admin_password}}, log_path);
  api.base = "http://127.0.0.1:" + std::to_string(port);
  if (!WaitUntil([&] { return api.Get("/healthz").status == 200; }, std::chrono::seconds(30))) {
    return what + " did not answer /healthz within 30 s; its log:\n" + server->Log();
  }
  auto login =
      api.Post("/v2/auth/login", json::object{{"username", "admin"}, {"password", admin_password}});
  if (login.status != 200) {
    return "admin login failed: " + std::to_string(login.status) + " " + login.body;
  }
  api.token = std::string(Api::Obj(login).at("token").as_string());
  return "";
}

}  // namespace

std::string StartSegma(const std::string& data_dir, uint16_t port,
                       const std::string& admin_password, const std::string& log_path,
                       std::unique_ptr<Process>& server, Api& api,
                       const std::vector<std::string>& extra_flags) {
  std::vector<std::string> args{SegmaBinary(), "start",     "--no-demo",
                                "--data-dir",  data_dir,    "--address",
                                "127.0.0.1",   "--port",    std::to_string(port),
                                "--fake-gpus", "1xH100:80", "--heartbeat-interval",
                                "0.2"};
  args.insert(args.end(), extra_flags.begin(), extra_flags.end());
  return LaunchAndLogin(std::move(args), port, admin_password, log_path, server, api);
}

std::string StartServer(const std::string& data_dir, uint16_t port,
                        const std::string& admin_password, const std::string& log_path,
                        std::unique_ptr<Process>& server, Api& api,
                        const std::vector<std::string>& extra_flags) {
  std::vector<std::string> args{SegmaBinary(), "server",    "--data-dir", data_dir,
                                "--address",   "127.0.0.1", "--port",     std::to_string(port)};
  args.insert(args.end(), extra_flags.begin(), extra_flags.end());
  return LaunchAndLogin(std::move(args), port, admin_password, log_path, server, api);
}

std::string RegistrationToken(const Api& api) {
  json::object clusters = Api::Obj(api.Get("/v2/clusters"));
  if (!clusters.contains("items") || !clusters.at("items").is_array() ||
      clusters.at("items").as_array().empty()) {
    return "";
  }
  return std::string(clusters.at("items").as_array()[0].at("registration_token").as_string());
}

bool WaitForReadyWorkers(const Api& api, int count, std::chrono::milliseconds timeout) {
  return WaitUntil(
      [&] {
        json::object list = Api::Obj(api.Get("/v2/workers"));
        if (!list.contains("items") || !list.at("items").is_array()) return false;
        int ready = 0;
        for (const json::value& item : list.at("items").as_array()) {
          ready += item.at("state").as_string() == "READY" ? 1 : 0;
        }
        return ready == count;
      },
      timeout);
}

json::object FirstInstance(const Api& api, int64_t model_id) {
  json::object list = Api::Obj(api.Get("/v2/model-instances?model_id=" + std::to_string(model_id)));
  if (!list.contains("items") || !list.at("items").is_array() ||
      list.at("items").as_array().empty()) {
    return {};
  }
  return list.at("items").as_array()[0].as_object();
}

std::string InstanceState(const Api& api, int64_t model_id) {
  json::object instance = FirstInstance(api, model_id);
  return instance.contains("state") && instance.at("state").is_string()
             ? std::string(instance.at("state").as_string())
             : "";
}

int StateFilePid(const std::string& path) {
  auto v = ParseJson(ReadFile(path));
  if (!v.ok() || !v->is_object() || !v->as_object().contains("pid")) return 0;
  return static_cast<int>(v->at("pid").as_int64());
}

std::string EngineSecret(const std::string& engines_dir, int64_t instance_id) {
  std::string s = ReadFile(engines_dir + "/instance-" + std::to_string(instance_id) + ".key");
  return s.substr(0, s.find('\n'));
}

void KillEngines(const std::string& engines_dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(engines_dir, ec)) {
    if (const int pid = StateFilePid(e.path()); pid > 0) ::kill(-pid, SIGKILL);
  }
}

}  // namespace segma::testing
