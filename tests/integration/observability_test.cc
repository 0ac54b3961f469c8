// The test that matters for observability (docs/observability.md): a real Prometheus (Debian's
// /usr/bin/prometheus, free port, temporary data dir, 1 s scrapes) discovers a running
// `segma start` (fake GPUs, two engine-sim deployments) through GET /v2/metrics/targets with the
// metrics token, scrapes it while `segma bench load` sends chat requests, and then every query
// of every panel of every dashboard in deploy/grafana/dashboards — its variables substituted
// with values Prometheus knows — must return at least one series. A panel showing "no data" on a
// working platform fails the test. The shipped alert rules are loaded too (Prometheus refuses
// to start on a broken rule file).

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

std::string SourceDir() {
  const char* dir = std::getenv("SEGMA_SOURCE_DIR");
  return dir != nullptr ? dir : SEGMA_DEFAULT_SOURCE_DIR;
}

std::string UrlEncode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

// One query of a panel, with where it comes from.
struct PanelQuery {
  std::string where;  // "segma-gpus.json: GPU utilization [A]"
  std::string expr;
};

struct Dashboard {
  std::string file;
  // Query variables: name → (label, metric) from label_values(metric, label).
  std::map<std::string, std::pair<std::string, std::string>> variables;
  std::vector<PanelQuery> queries;
};

std::vector<Dashboard> LoadDashboards(std::string& error) {
  std::vector<Dashboard> out;
  const std::string dir = SourceDir() + "/deploy/grafana/dashboards";
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".json") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  for (const std::string& file : files) {
    boost::system::error_code ec;
    json::value v = json::parse(ReadFile(file), ec);
    if (ec || !v.is_object()) {
      error = file + " is not a JSON object";
      return {};
    }
    Dashboard d;
    d.file = std::filesystem::path(file).filename().string();
    const json::object& o = v.as_object();
    for (const json::value& var : o.at("templating").at("list").as_array()) {
      const json::object& vo = var.as_object();
      if (vo.at("type").as_string() != "query") continue;
      std::string def(vo.at("definition").as_string());
      // label_values(metric, label)
      const size_t open = def.find('(');
      const size_t comma = def.find(',');
      const size_t close = def.rfind(')');
      if (!def.starts_with("label_values(") || comma == std::string::npos) {
        error = d.file + ": variable query not of the form label_values(metric, label): " + def;
        return {};
      }
      std::string metric = def.substr(open + 1, comma - open - 1);
      std::string label = def.substr(comma + 1, close - comma - 1);
      label.erase(0, label.find_first_not_of(' '));
      d.variables[std::string(vo.at("name").as_string())] = {label, metric};
    }
    for (const json::value& p : o.at("panels").as_array()) {
      const json::object& po = p.as_object();
      for (const json::value& t : po.at("targets").as_array()) {
        d.queries.push_back({fmt::format("{}: {} [{}]", d.file, po.at("title").as_string(),
                                         t.at("refId").as_string()),
                             std::string(t.at("expr").as_string())});
      }
    }
    out.push_back(std::move(d));
  }
  return out;
}

void ReplaceAll(std::string& s, std::string_view from, std::string_view to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

class ObservabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists("/usr/bin/prometheus"))
        << "Debian's prometheus package is required (scripts/bootstrap installs it)";
    port_ = FreePort();
    ASSERT_EQ(StartSegma(data(), port_, "obs-admin-pw", dir_.path() + "/server.log", server_, api_,
                         {"--engine-metrics-interval", "0.5", "--log-format", "json"}),
              "");
  }

  void TearDown() override {
    if (load_) load_->Signal(SIGKILL);
    if (prometheus_) prometheus_->Signal(SIGKILL);
    if (server_) server_->Signal(SIGKILL);
    KillEngines(data() + "/worker/engines");
  }

  std::string data() const { return dir_.path() + "/data"; }

  // GET on Prometheus' HTTP API; the "data" member, or null.
  json::value Prom(const std::string& path_and_query) const {
    Api prom{prom_base_, ""};
    auto r = prom.Get(path_and_query);
    if (r.status != 200) return nullptr;
    boost::system::error_code ec;
    json::value v = json::parse(r.body, ec);
    if (ec || !v.is_object() || !v.as_object().contains("data")) return nullptr;
    return v.as_object().at("data");
  }

  // The number of series an instant query returns (-1 on error).
  int64_t Series(const std::string& expr) const {
    json::value d = Prom("/api/v1/query?query=" + UrlEncode(expr));
    if (!d.is_object() || !d.as_object().at("result").is_array()) return -1;
    return static_cast<int64_t>(d.as_object().at("result").as_array().size());
  }

  TempDir dir_;
  uint16_t port_ = 0;
  std::string prom_base_;
  std::unique_ptr<Process> server_;
  std::unique_ptr<Process> prometheus_;
  std::unique_ptr<Process> load_;
  Api api_;
};

TEST_F(ObservabilityTest, EveryDashboardQueryReturnsSeriesFromARealPrometheus) {
  std::string error;
  const std::vector<Dashboard> dashboards = LoadDashboards(error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_EQ(dashboards.size(), 4u);

  // Two deployments in two projects, one key each.
  std::vector<std::string> secrets;
  std::vector<std::string> models;
  for (const std::string name : {"chat", "assistant"}) {
    auto p = api_.Post("/v2/projects", json::object{{"name", name + "-team"}});
    ASSERT_EQ(p.status, 201u) << p.body;
    const int64_t project = Api::Obj(p).at("id").as_int64();
    auto m = api_.Post(
        "/v2/models", json::object{{"name", name},
                                   {"project_id", project},
                                   {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                                   {"replicas", 1}});
    ASSERT_EQ(m.status, 201u) << m.body;
    auto k =
        api_.Post("/v2/api-keys",
                  json::object{{"name", name}, {"project_id", project}, {"scope", "inference"}});
    ASSERT_EQ(k.status, 201u) << k.body;
    secrets.emplace_back(Api::Obj(k).at("secret").as_string());
    models.push_back(name);
  }
  const auto chat_ok = [&](size_t i) {
    Api gw{api_.base, secrets[i]};
    return gw.Post("/v1/chat/completions",
                   json::object{{"model", models[i]},
                                {"max_tokens", 4},
                                {"messages",
                                 json::array{json::object{{"role", "user"}, {"content", "hi"}}}}})
               .status == 200;
  };
  ASSERT_TRUE(WaitUntil([&] { return chat_ok(0) && chat_ok(1); }, std::chrono::seconds(90)))
      << server_->Log();

  // Service discovery: refused without the token; with it, the server, the worker and both
  // engines, labelled.
  Api sd{api_.base, ""};
  EXPECT_EQ(sd.Get("/v2/metrics/targets").status, 401u);
  std::string token = ReadFile(data() + "/metrics_token");
  token = token.substr(0, token.find('\n'));
  ASSERT_FALSE(token.empty());
  sd.token = token;
  auto targets = sd.Get("/v2/metrics/targets");
  ASSERT_EQ(targets.status, 200u) << targets.body;
  std::multiset<std::string> roles;
  boost::system::error_code ec;
  const json::value groups = json::parse(targets.body, ec);
  ASSERT_TRUE(!ec && groups.is_array()) << targets.body;
  for (const json::value& g : groups.as_array()) {
    roles.insert(std::string(g.at("labels").at("segma_role").as_string()));
  }
  EXPECT_EQ(roles.count("server"), 1u) << targets.body;
  EXPECT_EQ(roles.count("worker"), 1u) << targets.body;
  EXPECT_EQ(roles.count("engine"), 2u) << targets.body;

  // Prometheus, configured like deploy/prometheus/prometheus.yml but scraping every second.
  const std::string token_file = dir_.path() + "/metrics_token";
  std::ofstream(token_file) << token << "\n";
  const std::string config = dir_.path() + "/prometheus.yml";
  std::ofstream(config) << fmt::format(
      R"(global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: segma
    honor_labels: true
    http_sd_configs:
      - url: {base}/v2/metrics/targets
        refresh_interval: 1s
        authorization:
          type: Bearer
          credentials_file: {token}
    relabel_configs:
      - source_labels: [segma_role]
        regex: engine
        action: drop
)",
      fmt::arg("rules", SourceDir() + "/deploy/prometheus/rules/segma.rules.yml"),
      fmt::arg("base", api_.base), fmt::arg("token", token_file));
  const uint16_t prom_port = FreePort();
  prom_base_ = fmt::format("http://127.0.0.1:{}", prom_port);
  prometheus_ = std::make_unique<Process>(
      std::vector<std::string>{"/usr/bin/prometheus", "--config.file=" + config,
                               "--storage.tsdb.path=" + dir_.path() + "/tsdb",
                               fmt::format("--web.listen-address=127.0.0.1:{}", prom_port),
                               "--log.level=warn"},
      std::map<std::string, std::string>{}, dir_.path() + "/prometheus.log");

  // Load on both deployments for the whole evaluation (it is killed in TearDown).
  load_ = std::make_unique<Process>(
      std::vector<std::string>{SegmaBinary(), "bench", "load", "--url", api_.base, "--key",
                               secrets[0], "--model", models[0], "--concurrency", "2", "--duration",
                               "120", "--max-tokens", "16"},
      std::map<std::string, std::string>{}, dir_.path() + "/load.log");
  auto load2 = std::make_unique<Process>(
      std::vector<std::string>{SegmaBinary(), "bench", "load", "--url", api_.base, "--key",
                               secrets[1], "--model", models[1], "--concurrency", "1", "--duration",
                               "120", "--max-tokens", "8"},
      std::map<std::string, std::string>{}, dir_.path() + "/load2.log");

  // Both targets (server, worker) up.
  ASSERT_TRUE(
      WaitUntil([&] { return Series("up{job=\"segma\"} == 1") == 2; }, std::chrono::seconds(60)))
      << "Prometheus did not scrape the server and the worker; its log:\n"
      << prometheus_->Log() << "\ntargets: " << targets.body;

  // Every query of every panel, variables substituted with a value Prometheus has. Rates need two
  // samples in their window and the engines' histograms some traffic: retried until a deadline.
  std::vector<std::string> failing;
  const auto evaluate = [&] {
    failing.clear();
    for (const Dashboard& d : dashboards) {
      std::map<std::string, std::string> values;
      for (const auto& [name, lm] : d.variables) {
        json::value v = Prom(
            fmt::format("/api/v1/label/{}/values?match%5B%5D={}", lm.first, UrlEncode(lm.second)));
        if (!v.is_array() || v.as_array().empty()) {
          failing.push_back(fmt::format("{}: variable ${} has no values", d.file, name));
          continue;
        }
        values[name] = std::string(v.as_array()[0].as_string());
      }
      for (const PanelQuery& q : d.queries) {
        std::string expr = q.expr;
        ReplaceAll(expr, "$__rate_interval", "15s");
        ReplaceAll(expr, "$__interval", "5s");
        ReplaceAll(expr, "$__range", "1m");
        for (const auto& [name, value] : values) ReplaceAll(expr, "$" + name, value);
        const int64_t n = Series(expr);
        if (n <= 0) failing.push_back(fmt::format("{}: {} → {}", q.where, expr, n));
      }
    }
    return failing.empty();
  };
  const bool all = WaitUntil(evaluate, std::chrono::seconds(90));
  std::string report;
  for (const std::string& f : failing) report += "\n  " + f;
  EXPECT_TRUE(all) << "panels without data:" << report << "\nload: " << load_->Log();
  size_t queries = 0;
  for (const Dashboard& d : dashboards) queries += d.queries.size();
  std::printf("%zu dashboard queries over %zu dashboards returned series\n", queries,
              dashboards.size());

  // The fake GPUs move: the utilization Prometheus scraped changes over time. Waited for with a
  // deadline, not read once: under a loaded machine a 1 s scrape (its timeout is the interval)
  // can miss, and a window with a single sample has no change to count.
  double gpu_util_changes = 0;
  EXPECT_TRUE(WaitUntil(
      [&] {
        json::value changes =
            Prom("/api/v1/query?query=" + UrlEncode("max(changes(DCGM_FI_DEV_GPU_UTIL[20s]))"));
        if (!changes.is_object()) return false;
        const auto& result = changes.as_object().at("result").as_array();
        if (result.empty()) return false;
        gpu_util_changes = std::stod(std::string(result[0].at("value").as_array()[1].as_string()));
        return gpu_util_changes > 0;
      },
      std::chrono::seconds(60)))
      << "DCGM_FI_DEV_GPU_UTIL did not change within 20 s (changes = " << gpu_util_changes
      << "); Prometheus' log:\n"
      << prometheus_->Log();
  load2->Signal(SIGKILL);

  // --log-format json: every line of the run's log is one JSON object with time, level,
  // component and message; API requests carry their request_id, engine events their instance.
  const std::string log = server_->Log();
  size_t lines = 0;
  size_t with_request = 0;
  size_t with_instance = 0;
  for (size_t start = 0; start < log.size();) {
    size_t end = log.find('\n', start);
    if (end == std::string::npos) end = log.size();
    const std::string line = log.substr(start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    ++lines;
    boost::system::error_code parse_ec;
    json::value v = json::parse(line, parse_ec);
    ASSERT_TRUE(!parse_ec && v.is_object()) << "not a JSON object: " << line;
    const json::object& o = v.as_object();
    for (const char* field : {"time", "level", "component", "message"}) {
      ASSERT_TRUE(o.contains(field) && o.at(field).is_string()) << field << " missing: " << line;
    }
    with_request += o.contains("request_id");
    with_instance += o.contains("instance_id");
  }
  EXPECT_GT(lines, 10u);
  EXPECT_GT(with_request, 0u) << log;
  EXPECT_GT(with_instance, 0u) << log;
}

}  // namespace
}  // namespace segma::testing
