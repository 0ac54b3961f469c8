// Model routes (ADR 0012) against the real stack: `segma start` with its embedded worker running
// `segma engine-sim` engines, a route over two deployments with weights 3 and 1, a route whose
// weighted target always fails (engine-sim --error-rate 1) with a fallback, a stand-alone
// `segma gateway` replica that must split the same way, deleting a target model, and bad input
// that is refused while the server keeps serving. Requests are counted per deployment from the
// "model" each engine puts in its answer (its own served name) and, for the total, from
// GET /v2/usage?group_by=model.

#include <signal.h>

#include <map>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

using boost::beast::http::verb;

class ModelRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    ASSERT_EQ(
        StartSegma(data(), port_, "routes-admin-pw", dir_.path() + "/server.log", server_, api_),
        "");
  }

  void TearDown() override {
    if (replica_) replica_->Signal(SIGKILL);
    if (server_) server_->Signal(SIGKILL);
    // The engines run in their own process groups.
    KillEngines(data() + "/worker/engines");
  }

  int64_t Project(const std::string& name) {
    auto p = api_.Post("/v2/projects", json::object{{"name", name}});
    EXPECT_EQ(p.status, 201u) << p.body;
    return Api::Obj(p).at("id").as_int64();
  }

  int64_t Model(const std::string& name, int64_t project, json::array params = {}) {
    auto m = api_.Post(
        "/v2/models", json::object{{"name", name},
                                   {"project_id", project},
                                   {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                                   {"backend_parameters", std::move(params)},
                                   {"replicas", 1}});
    EXPECT_EQ(m.status, 201u) << m.body;
    return Api::Obj(m).at("id").as_int64();
  }

  http::ClientResponse CreateRoute(const std::string& name, int64_t project,
                                   std::vector<std::pair<int64_t, int64_t>> targets) {
    json::array t;
    for (auto [model, weight] : targets) {
      t.push_back(json::object{{"model_id", model}, {"weight", weight}});
    }
    return api_.Post(
        "/v2/model-routes",
        json::object{{"name", name}, {"project_id", project}, {"targets", std::move(t)}});
  }

  bool Running(int64_t model_id) { return InstanceState(api_, model_id) == "RUNNING"; }

  // One chat completion for `model`; returns the HTTP status and the answering engine's name.
  static std::pair<unsigned, std::string> Chat(const Api& gw, const std::string& model) {
    auto r = gw.Post(
        "/v1/chat/completions",
        json::object{{"model", model},
                     {"max_tokens", 2},
                     {"messages", json::array{json::object{{"role", "user"}, {"content", "hi"}}}}});
    json::object o = Api::Obj(r);
    std::string served = o.contains("model") ? std::string(o.at("model").as_string()) : "";
    return {r.status, served};
  }

  // `n` chats through `gw` for `model`: answering engine → count (non-200 as "HTTP <status>").
  static std::map<std::string, int> Count(const Api& gw, const std::string& model, int n) {
    std::map<std::string, int> out;
    for (int i = 0; i < n; ++i) {
      auto [status, served] = Chat(gw, model);
      out[status == 200 ? served : fmt::format("HTTP {}", status)]++;
    }
    return out;
  }

  // Requests metered for public model `model` so far.
  int64_t MeteredRequests(const std::string& model) {
    auto u = Api::Obj(api_.Get("/v2/usage?group_by=model"));
    if (!u.contains("items")) return -1;
    for (const auto& row : u.at("items").as_array()) {
      if (row.at("model").as_string() == model) return row.at("requests").as_int64();
    }
    return 0;
  }

  std::string data() const { return dir_.path() + "/data"; }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> server_;
  std::unique_ptr<Process> replica_;
  Api api_;
};

TEST_F(ModelRoutesTest, WeightedSplitFallbackReplicaAndTargetDeletion) {
  const int64_t project = Project("routes");
  const int64_t a = Model("a", project);
  const int64_t b = Model("b", project);
  const int64_t broken = Model("broken", project, json::array{"--error-rate", "1"});
  auto key =
      api_.Post("/v2/api-keys",
                json::object{{"name", "app"}, {"project_id", project}, {"scope", "inference"}});
  ASSERT_EQ(key.status, 201u) << key.body;
  Api gw{api_.base, std::string(Api::Obj(key).at("secret").as_string())};

  auto split = CreateRoute("split", project, {{a, 3}, {b, 1}});
  ASSERT_EQ(split.status, 201u) << split.body;
  const int64_t split_id = Api::Obj(split).at("id").as_int64();
  auto safe = CreateRoute("safe", project, {{broken, 1}, {b, 0}});
  ASSERT_EQ(safe.status, 201u) << safe.body;

  ASSERT_TRUE(WaitUntil([&] { return Running(a) && Running(b) && Running(broken); },
                        std::chrono::seconds(90)))
      << server_->Log();
  // Both deployments answer under their own names: the gateway has their replicas.
  ASSERT_TRUE(WaitUntil([&] { return Chat(gw, "a").first == 200 && Chat(gw, "b").first == 200; },
                        std::chrono::seconds(20)))
      << server_->Log();
  EXPECT_EQ(Chat(gw, "broken").first, 500u);  // the failure injection works

  // GET /v1/models lists the routes beside the models.
  auto listed = gw.Get("/v1/models");
  ASSERT_EQ(listed.status, 200u) << listed.body;
  for (const char* name : {"split", "safe", "a", "b"}) {
    EXPECT_NE(listed.body.find(fmt::format("\"{}\"", name)), std::string::npos)
        << name << " missing: " << listed.body;
  }

  // Weights 3 and 1: the weighted choice is deterministic, 40 requests split exactly 30/10.
  const std::map<std::string, int> want_split = {{"a", 30}, {"b", 10}};
  std::map<std::string, int> got = Count(gw, "split", 40);
  EXPECT_EQ(got, want_split);
  std::printf("split through the server: a=%d b=%d\n", got["a"], got["b"]);
  // Metered under the public name.
  EXPECT_TRUE(WaitUntil([&] { return MeteredRequests("split") == 40; }, std::chrono::seconds(10)))
      << api_.Get("/v2/usage?group_by=model").body;

  // Fallback: the weighted target answers 500 every time; weight 0 takes over.
  const std::map<std::string, int> want_safe = {{"b", 20}};
  got = Count(gw, "safe", 20);
  EXPECT_EQ(got, want_safe);

  // A stand-alone gateway replica carries the weights and splits the same way.
  const uint16_t replica_port = FreePort();
  std::string token = ReadFile(data() + "/gateway_token");
  token = token.substr(0, token.find('\n'));
  replica_ = std::make_unique<Process>(
      std::vector<std::string>{SegmaBinary(), "gateway", "--server", api_.base, "--token", token,
                               "--address", "127.0.0.1", "--port", std::to_string(replica_port),
                               "--data-dir", dir_.path() + "/replica"},
      std::map<std::string, std::string>{}, dir_.path() + "/replica.log");
  Api replica_gw{"http://127.0.0.1:" + std::to_string(replica_port), gw.token};
  ASSERT_TRUE(WaitUntil(
      [&] { return replica_gw.Get("/v1/models").body.find("\"split\"") != std::string::npos; },
      std::chrono::seconds(20)))
      << replica_->Log();
  got = Count(replica_gw, "split", 40);
  EXPECT_EQ(got, want_split) << replica_->Log();
  std::printf("split through a replica: a=%d b=%d\n", got["a"], got["b"]);
  got = Count(replica_gw, "safe", 8);
  EXPECT_EQ(got, (std::map<std::string, int>{{"b", 8}}));

  // Bad input is refused and changes nothing; the server keeps serving.
  const int64_t other = Project("other");
  const int64_t foreign = Model("foreign", other);
  EXPECT_EQ(CreateRoute("x", project, {{a, 1}, {foreign, 1}}).status, 400u);
  EXPECT_EQ(CreateRoute("split", project, {{b, 1}}).status, 409u);
  EXPECT_EQ(CreateRoute("a", project, {{b, 1}}).status, 409u);
  EXPECT_EQ(CreateRoute("x", project, {{a, 0}}).status, 400u);
  EXPECT_EQ(api_.Call(verb::patch, "/v2/model-routes/999999",
                      json::value(json::object{{"description", "d"}}))
                .status,
            404u);
  EXPECT_EQ(
      api_.Call(verb::patch, fmt::format("/v2/model-routes/{}", split_id),
                json::value(json::object{
                    {"targets", json::array{json::object{{"model_id", a}, {"weight", 5000}}}}}))
          .status,
      400u);
  got = Count(gw, "split", 8);
  EXPECT_EQ(got, (std::map<std::string, int>{{"a", 6}, {"b", 2}}));

  // Deleting a target model removes it from the route: everything goes to the other one.
  ASSERT_EQ(api_.Call(verb::delete_, fmt::format("/v2/models/{}", a)).status, 204u);
  auto route = Api::Obj(api_.Get(fmt::format("/v2/model-routes/{}", split_id)));
  ASSERT_EQ(route.at("targets").as_array().size(), 1u) << json::serialize(route);
  EXPECT_EQ(route.at("targets").as_array()[0].at("model_id").as_int64(), b);
  ASSERT_TRUE(WaitUntil(
      [&] {
        return Count(gw, "split", 4) == std::map<std::string, int>{{"b", 4}};
      },
      std::chrono::seconds(10)));
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Count(replica_gw, "split", 4) == std::map<std::string, int>{{"b", 4}};
      },
      std::chrono::seconds(10)))
      << replica_->Log();
  EXPECT_EQ(Count(gw, "split", 12), (std::map<std::string, int>{{"b", 12}}));
}

}  // namespace
}  // namespace segma::testing
