// `segma ctl` against a real server: login, projects, api-keys, workers, gpus, models,
// instances (logs, watch), backends and usage; table and JSON, and the errors a user sees.

#include <signal.h>
#include <stdio.h>

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

class CtlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    server_ = std::make_unique<Process>(
        std::vector<std::string>{SegmaBinary(), "start", "--no-demo", "--data-dir",
                                 dir_.path() + "/data", "--address", "127.0.0.1", "--port",
                                 std::to_string(port_), "--fake-gpus", "2xH100:80",
                                 "--heartbeat-interval", "0.2"},
        std::map<std::string, std::string>{{"SEGMA_BOOTSTRAP_PASSWORD", "ctl-admin-password"}},
        dir_.path() + "/server.log");
    api_.base = "http://127.0.0.1:" + std::to_string(port_);
    ASSERT_TRUE(
        WaitUntil([&] { return api_.Get("/healthz").status == 200; }, std::chrono::seconds(30)));
  }

  void TearDown() override {
    if (server_) server_->Signal(SIGKILL);
    KillEngines(dir_.path() + "/data/worker/engines");
  }

  // Logs `segma ctl` (and `api_`, for checking what the API says) in as the admin.
  void LogIn() {
    auto [rc, out] = Ctl("login --username admin --password ctl-admin-password");
    ASSERT_EQ(rc, 0) << out;
    auto login = api_.Post("/v2/auth/login",
                           json::object{{"username", "admin"}, {"password", "ctl-admin-password"}});
    ASSERT_EQ(login.status, 200u) << login.body;
    api_.token = std::string(Api::Obj(login).at("token").as_string());
  }

  // The environment of a `segma ctl` child: its own HOME, the server, and the token of `api_`.
  std::map<std::string, std::string> CtlEnv() const {
    return {{"HOME", dir_.path()}, {"SEGMA_SERVER", api_.base}, {"SEGMA_TOKEN", api_.token}};
  }

  // Runs `segma ctl ARGS` with its own HOME; returns exit status and output.
  std::pair<int, std::string> Ctl(const std::string& args) {
    const std::string cmd = "HOME=" + dir_.path() +
                            " SEGMA_SERVER=http://127.0.0.1:" + std::to_string(port_) + " " +
                            SegmaBinary() + " ctl " + args + " 2>&1";
    FILE* pipe = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
    int status = ::pclose(pipe);
    return {WEXITSTATUS(status), out};
  }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> server_;
  Api api_;
};

// Lines of `text` that start with `prefix`.
int CountLinesStartingWith(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  int n = 0;
  for (std::string line; std::getline(in, line);) n += line.rfind(prefix, 0) == 0 ? 1 : 0;
  return n;
}

// The rest of the first line of `text` that starts with `label` and spaces ("FITS    yes" → "yes").
std::string LineValue(const std::string& text, const std::string& label) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(label + " ", 0) != 0) continue;
    const size_t value = line.find_first_not_of(' ', label.size());
    return value == std::string::npos ? "" : line.substr(value);
  }
  return "";
}

// Whether `text` has a number in scientific notation ("3.2E1", "1e+20").
bool HasScientificNumber(const std::string& text) {
  for (size_t i = 1; i + 1 < text.size(); ++i) {
    if ((text[i] != 'e' && text[i] != 'E') ||
        !std::isdigit(static_cast<unsigned char>(text[i - 1]))) {
      continue;
    }
    size_t next = i + 1;
    if (text[next] == '+' || text[next] == '-') ++next;
    if (next < text.size() && std::isdigit(static_cast<unsigned char>(text[next]))) return true;
  }
  return false;
}

// Whether some line of `text` from `from` on starts with `prefix` and contains `word`.
bool HasLine(const std::string& text, size_t from, const std::string& prefix,
             const std::string& word) {
  std::istringstream in(text.substr(std::min(from, text.size())));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) == 0 && line.find(word) != std::string::npos) return true;
  }
  return false;
}

int CountOf(const std::string& text, const std::string& word) {
  int n = 0;
  for (size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++n;
  return n;
}

TEST_F(CtlTest, LoginProjectKeyAndPool) {
  auto [rc, out] = Ctl("login --username admin --password wrong-password");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("invalid username or password"), std::string::npos) << out;

  std::tie(rc, out) = Ctl("login --username admin --password ctl-admin-password");
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) = Ctl("projects create --name finance-ai");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("finance-ai"), std::string::npos);
  std::tie(rc, out) =
      Ctl("-o json api-keys create --name ci --project 1 --scope all --models chat,embed");
  ASSERT_EQ(rc, 0) << out;
  auto key = ParseJson(out);
  ASSERT_TRUE(key.ok()) << out;
  const std::string secret(key->at("secret").as_string());
  EXPECT_EQ(secret.rfind("sk-segma-", 0), 0u);
  std::tie(rc, out) = Ctl("api-keys list");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("PREFIX"), std::string::npos) << out;
  EXPECT_EQ(out.find(secret), std::string::npos) << "the secret is shown once";

  ASSERT_TRUE(
      WaitUntil([&] { return Ctl("workers list").second.find("READY") != std::string::npos; },
                std::chrono::seconds(20)));
  std::tie(rc, out) = Ctl("-o json gpus list");
  ASSERT_EQ(rc, 0) << out;
  auto gpus = ParseJson(out);
  ASSERT_TRUE(gpus.ok()) << out;
  EXPECT_EQ(gpus->at("pagination").at("total").as_int64(), 2);

  // The key works as a bearer token for the CLI too.
  std::tie(rc, out) = Ctl("--token " + secret + " projects list");
  EXPECT_EQ(rc, 0) << out;
  std::tie(rc, out) = Ctl("--token " + secret + " users list");
  EXPECT_EQ(rc, 1) << "an API key never carries admin powers: " << out;

  // Client ranges of a key: a clear error for a bad one, then this host only, then any.
  std::tie(rc, out) = Ctl("api-keys restrict " + std::to_string(key->at("id").as_int64()) +
                          " 127.0.0.0/8,10.1.2.3/8");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("did you mean 10.0.0.0/8?"), std::string::npos) << out;
  std::tie(rc, out) =
      Ctl("-o json api-keys create --name office --project 1 --scope all "
          "--allowed-cidrs 192.0.2.0/24");
  ASSERT_EQ(rc, 0) << out;
  auto office = ParseJson(out);
  ASSERT_TRUE(office.ok()) << out;
  EXPECT_EQ(json::serialize(office->at("allowed_cidrs")), R"(["192.0.2.0/24"])");
  std::tie(rc, out) =
      Ctl("--token " + std::string(office->at("secret").as_string()) + " projects list");
  EXPECT_EQ(rc, 1) << "used from 127.0.0.1, outside 192.0.2.0/24: " << out;
  EXPECT_NE(out.find("may not be used from 127.0.0.1"), std::string::npos) << out;
  std::tie(rc, out) =
      Ctl("api-keys restrict " + std::to_string(office->at("id").as_int64()) + " any");
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) =
      Ctl("--token " + std::string(office->at("secret").as_string()) + " projects list");
  EXPECT_EQ(rc, 0) << out;

  // Sessions: this CLI's own, listed without its token, and ended.
  std::tie(rc, out) = Ctl("-o json sessions list");
  ASSERT_EQ(rc, 0) << out;
  auto sessions = ParseJson(out);
  ASSERT_TRUE(sessions.ok()) << out;
  ASSERT_EQ(sessions->at("items").as_array().size(), 1u) << out;
  const json::object& mine = sessions->at("items").as_array()[0].as_object();
  EXPECT_TRUE(mine.at("current").as_bool());
  EXPECT_EQ(mine.at("client_address").as_string(), "127.0.0.1");
  EXPECT_EQ(out.find("segma_st."), std::string::npos) << out;
  std::tie(rc, out) = Ctl("sessions list");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("CLIENT ADDRESS"), std::string::npos) << out;
  std::tie(rc, out) = Ctl("sessions revoke " + std::to_string(mine.at("id").as_int64()));
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("revoked"), std::string::npos) << out;
  std::tie(rc, out) = Ctl("projects list");
  EXPECT_EQ(rc, 1) << "the revoked session's token is refused: " << out;

  // A user whose password an admin set must change it first; the CLI can.
  LogIn();
  auto made = api_.Post("/v2/users", json::object{{"username", "nina"},
                                                  {"password", "nina-first-pw"},
                                                  {"require_password_change", true}});
  ASSERT_EQ(made.status, 201u) << made.body;
  std::tie(rc, out) = Ctl("login --username nina --password nina-first-pw");
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) = Ctl("projects list");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("segma ctl change-password"), std::string::npos) << out;
  std::tie(rc, out) = Ctl("change-password --old nina-first-pw --new nina-second-pw");
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) = Ctl("projects list");
  EXPECT_EQ(rc, 0) << out;
}

TEST_F(CtlTest, GpusForPeople) {
  LogIn();
  ASSERT_TRUE(WaitUntil([&] { return CountOf(Ctl("gpus list").second, "80.0 GiB") == 2; },
                        std::chrono::seconds(20)))
      << Ctl("gpus list").second;
  auto [rc, out] = Ctl("gpus list");
  ASSERT_EQ(rc, 0) << out;
  for (const char* header : {"TOTAL", "USED", "ALLOCATED", "UTIL", "TEMP", "POWER"}) {
    EXPECT_NE(out.find(header), std::string::npos) << header << "\n" << out;
  }
  EXPECT_NE(out.find("°C"), std::string::npos) << out;
  EXPECT_NE(out.find('%'), std::string::npos) << out;
  EXPECT_NE(out.find(" W"), std::string::npos) << out;
  EXPECT_FALSE(HasScientificNumber(out)) << out;
  EXPECT_TRUE(HasScientificNumber("a 3.2E1 b") && HasScientificNumber("1e+20"));

  std::tie(rc, out) = Ctl("gpus list --wide");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("UUID"), std::string::npos) << out;
  EXPECT_NE(out.find("PROCESSES"), std::string::npos) << out;
  EXPECT_NE(out.find("GPU-"), std::string::npos) << out;

  // -o json is the API's answer, byte for byte apart from what changed in between.
  std::tie(rc, out) = Ctl("-o json gpus list");
  ASSERT_EQ(rc, 0) << out;
  auto parsed = ParseJson(out);
  ASSERT_TRUE(parsed.ok()) << out;
  const json::object& gpu = parsed->at("items").at(0).as_object();
  EXPECT_EQ(gpu.at("memory_total").as_int64(), int64_t{80} << 30);
  EXPECT_TRUE(gpu.contains("memory_allocated")) << out;
}

TEST_F(CtlTest, ModelsInstancesLogsUsageAndWatch) {
  LogIn();
  ASSERT_TRUE(
      WaitUntil([&] { return Ctl("workers list").second.find("READY") != std::string::npos; },
                std::chrono::seconds(20)));
  auto [rc, out] = Ctl("-o json projects create --name team");
  ASSERT_EQ(rc, 0) << out;
  auto project = ParseJson(out);
  ASSERT_TRUE(project.ok()) << out;
  const std::string p = std::to_string(project->at("id").as_int64());

  // Dry run: fits, with the simulator engine, a claim per GPU; nothing is created.
  std::tie(rc, out) =
      Ctl("models evaluate --project " + p + " --name chat --source-type simulated --params-b 7");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(LineValue(out, "FITS"), "yes") << out;
  EXPECT_NE(out.find("simulator"), std::string::npos) << out;
  EXPECT_EQ(LineValue(out, "CLAIM").rfind("GPU ", 0), 0u) << out;
  EXPECT_NE(LineValue(out, "CLAIM").find(" GiB"), std::string::npos) << out;
  EXPECT_NE(LineValue(out, "SERVES").find(" sequences × "), std::string::npos) << out;
  // No measurements of the simulator: the prediction says so rather than guess.
  EXPECT_EQ(LineValue(out, "PREDICTED"), "- (no measurements of simulator yet)") << out;
  EXPECT_FALSE(HasScientificNumber(out)) << out;
  std::tie(rc, out) = Ctl("-o json models evaluate --project " + p +
                          " --name chat --source-type simulated --params-b 7");
  ASSERT_EQ(rc, 0) << out;
  auto evaluation = ParseJson(out);
  ASSERT_TRUE(evaluation.ok()) << out;
  EXPECT_TRUE(evaluation->at("fits").as_bool());
  EXPECT_EQ(evaluation->at("engine").at("backend").as_string(), "simulator");

  // Bad input: the server's message, exit 1, nothing created.
  std::tie(rc, out) =
      Ctl("models create --project " + p + " --name '' --source-type simulated --params-b 1");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_EQ(out.rfind("error: ", 0), 0u) << out;
  EXPECT_NE(out.find("name must be 1-64 characters"), std::string::npos) << out;
  std::tie(rc, out) = Ctl("models create --project " + p + " --name x --source-type simulated");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("error: source.params_b is required"), std::string::npos) << out;
  EXPECT_EQ(Api::Obj(api_.Get("/v2/models")).at("pagination").at("total").as_int64(), 0);

  // Create: -o json is the API's row.
  std::tie(rc, out) =
      Ctl("-o json models create --project " + p + " --name chat --params-b 1 --replicas 1");
  ASSERT_EQ(rc, 0) << out;
  auto created = ParseJson(out);
  ASSERT_TRUE(created.ok()) << out;
  const std::string id = std::to_string(created->at("id").as_int64());
  const json::object api_model = Api::Obj(api_.Get("/v2/models/" + id));
  for (const char* field : {"id", "name", "project_id", "source", "replicas", "backend"}) {
    EXPECT_EQ(created->at(field), api_model.at(field)) << field;
  }
  std::tie(rc, out) = Ctl("models list --project " + p);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("simulated 1B"), std::string::npos) << out;

  ASSERT_TRUE(WaitUntil(
      [&] {
        return Ctl("instances list --model " + id).second.find("RUNNING") != std::string::npos;
      },
      std::chrono::seconds(60)))
      << Ctl("instances list --model " + id).second << server_->Log();
  std::tie(rc, out) = Ctl("instances list --model " + id);
  for (const char* header : {"ID", "NAME", "STATE", "WORKER NAME", "GPU INDEXES", "PORT",
                             "RESTART COUNT", "STATE MESSAGE"}) {
    EXPECT_NE(out.find(header), std::string::npos) << header << "\n" << out;
  }
  std::tie(rc, out) = Ctl("instances list --model " + id + " --wide");
  EXPECT_NE(out.find("CLAIM VRAM"), std::string::npos) << out;
  EXPECT_TRUE(out.find("GPU 0: ") != std::string::npos || out.find("GPU 1: ") != std::string::npos)
      << out;

  // Watch: the current instance, then the one that scaling adds.
  Process watch({SegmaBinary(), "ctl", "instances", "list", "--model", id, "--watch"}, CtlEnv(),
                dir_.path() + "/watch.log");
  ASSERT_TRUE(WaitUntil([&] { return CountLinesStartingWith(watch.Log(), "CREATED") == 1; },
                        std::chrono::seconds(20)))
      << watch.Log();
  EXPECT_EQ(watch.Log().rfind("EVENT", 0), 0u) << watch.Log();
  std::tie(rc, out) = Ctl("models scale " + id + " 2");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("/2"), std::string::npos) << out;
  ASSERT_TRUE(WaitUntil([&] { return CountLinesStartingWith(watch.Log(), "CREATED") == 2; },
                        std::chrono::seconds(20)))
      << watch.Log();
  // ... and follows it until it runs.
  ASSERT_TRUE(WaitUntil(
      [&] {
        const std::string log = watch.Log();
        const size_t added = log.rfind("\nCREATED");
        return added != std::string::npos && HasLine(log, added, "UPDATED", "RUNNING");
      },
      std::chrono::seconds(60)))
      << watch.Log();
  EXPECT_TRUE(watch.running()) << watch.Log();
  watch.Signal(SIGKILL);
  watch.Wait(std::chrono::seconds(5));

  ASSERT_TRUE(
      WaitUntil([&] { return CountOf(Ctl("instances list --model " + id).second, "RUNNING") == 2; },
                std::chrono::seconds(60)))
      << Ctl("instances list --model " + id).second;
  std::tie(rc, out) = Ctl("-o json instances list --model " + id);
  ASSERT_EQ(rc, 0) << out;
  auto instances = ParseJson(out);
  ASSERT_TRUE(instances.ok()) << out;
  ASSERT_EQ(instances->at("pagination").at("total").as_int64(), 2);

  // Logs: the last lines of the engine's log.
  const std::string instance = std::to_string(instances->at("items").at(0).at("id").as_int64());
  {
    std::ofstream log(dir_.path() + "/data/worker/logs/instance-" + instance + ".log",
                      std::ios::app);
    log << "ctl-line-1\nctl-line-2\nctl-line-3\n";
  }
  std::tie(rc, out) = Ctl("instances logs " + instance + " --tail 2");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out, "ctl-line-2\nctl-line-3\n");
  std::tie(rc, out) = Ctl("instances logs " + instance + " --tail 5");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("ctl-line-1\nctl-line-2\nctl-line-3\n"), std::string::npos) << out;
  std::tie(rc, out) = Ctl("instances logs 999999");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_EQ(out.rfind("error: ", 0), 0u) << out;

  // The GPUs show what segma claimed for the two instances.
  std::tie(rc, out) = Ctl("-o json gpus list");
  auto gpus = ParseJson(out);
  ASSERT_TRUE(gpus.ok()) << out;
  int64_t allocated = 0;
  for (const json::value& g : gpus->at("items").as_array()) {
    allocated += g.at("memory_allocated").as_int64();
  }
  EXPECT_GT(allocated, 0) << out;

  // Usage as the server's CSV; backends as the API lists them.
  std::tie(rc, out) = Ctl("usage --group-by project --csv");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out.rfind("project,requests,errors,prompt_tokens,completion_tokens", 0), 0u) << out;
  std::tie(rc, out) = Ctl("usage --group-by model --from 2020-01-01T00:00:00Z");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out.rfind("MODEL", 0), 0u) << out;
  std::tie(rc, out) = Ctl("usage --from yesterday");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_EQ(out.rfind("error: ", 0), 0u) << out;

  // GPU-hours and cost: the two RUNNING instances' GPU time, priced per GPU type.
  auto by_type = Api::Obj(api_.Get("/v2/usage?group_by=gpu_type"));
  ASSERT_EQ(by_type.at("items").as_array().size(), 1u) << by_type;
  const std::string gpu_type(by_type.at("items").at(0).at("gpu_type").as_string());
  EXPECT_NE(gpu_type.find("H100"), std::string::npos) << gpu_type;
  std::tie(rc, out) = Ctl("prices set gpu_hour '" + gpu_type + "' 3600");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("gpu_hour"), std::string::npos) << out;
  std::tie(rc, out) = Ctl("prices set prompt_1m_tokens chat 0.5");
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) = Ctl("prices get");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out.rfind("currency: USD\nUNIT", 0), 0u) << out;
  EXPECT_NE(out.find(gpu_type), std::string::npos) << out;
  EXPECT_NE(out.find("prompt_1m_tokens"), std::string::npos) << out;
  std::tie(rc, out) = Ctl("prices set --currency usd");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("currency must be three capital letters"), std::string::npos) << out;
  std::tie(rc, out) = Ctl("usage --bucket day --group-by gpu_type");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out.rfind("BUCKET", 0), 0u) << out;
  for (const char* header : {"GPU TYPE", "GPU HOURS", "VRAM GIB HOURS", "COST (USD)"}) {
    EXPECT_NE(out.find(header), std::string::npos) << header << " missing: " << out;
  }
  EXPECT_NE(out.find(gpu_type), std::string::npos) << out;
  std::tie(rc, out) = Ctl("-o json usage --bucket day --group-by gpu_type");
  ASSERT_EQ(rc, 0) << out;
  auto priced = ParseJson(out);
  ASSERT_TRUE(priced.ok()) << out;
  const json::value& row = priced->at("items").at(0);
  const double gpu_hours = row.at("gpu_hours").as_double();
  EXPECT_GT(gpu_hours, 0) << out;
  // 3,600 per GPU-hour is 1 per GPU-second; no tokens were used in this test.
  EXPECT_NEAR(row.at("cost").as_double(), gpu_hours * 3600, 1e-6) << out;
  std::tie(rc, out) = Ctl("-o json backends list");
  ASSERT_EQ(rc, 0) << out;
  auto backends = ParseJson(out);
  ASSERT_TRUE(backends.ok()) << out;
  EXPECT_EQ(*backends, *ParseJson(api_.Get("/v2/backends?per_page=500").body));
  std::tie(rc, out) = Ctl("backends list");
  EXPECT_NE(out.find("simulator"), std::string::npos) << out;
  std::tie(rc, out) = Ctl("routes list");
  EXPECT_EQ(rc, 0) << out;
  std::tie(rc, out) = Ctl("model-files list");
  EXPECT_EQ(rc, 0) << out;

  std::tie(rc, out) = Ctl("models delete " + id);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(api_.Get("/v2/models/" + id).status, 404u);
}

}  // namespace
}  // namespace segma::testing
