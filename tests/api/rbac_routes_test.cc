// Walks every /v2 route × every kind of caller against a real in-process server and checks that
// access is granted exactly where the table says. A route missing from the table fails the test,
// so new routes must declare who may call them.

#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "api/server_app.h"
#include "integration/harness.h"

namespace segma::api {
namespace {

using boost::beast::http::verb;
using segma::testing::Api;

enum Role {
  kAnonymous,
  kWorker,
  kInferenceKey,
  kOutsider,
  kViewer,
  kMember,
  kProjectAdmin,
  kAdmin
};
constexpr const char* kRoleNames[] = {"anonymous", "worker", "inference-key", "outsider",
                                      "viewer",    "member", "project-admin", "admin"};
constexpr Role kAllRoles[] = {kAnonymous, kWorker, kInferenceKey, kOutsider,
                              kViewer,    kMember, kProjectAdmin, kAdmin};

struct Expectation {
  std::vector<Role> allowed;  // everyone else: 401 (anonymous) or 403
};

class RbacRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerConfig config;
    config.data_dir = dir_.path();
    config.address = "127.0.0.1";
    config.port = 0;
    config.bootstrap_password = "rbac-admin-password";
    config.http.access_log = false;
    auto app = ServerApp::Create(config);
    ASSERT_TRUE(app.ok()) << app.status().ToString();
    app_ = std::move(app).value();
    auto port = app_->Start();
    ASSERT_TRUE(port.ok());
    io_thread_ = std::thread([this] { app_->Run(); });
    base_ = "http://127.0.0.1:" + std::to_string(*port);

    tokens_[kAdmin] = Login("admin", "rbac-admin-password");
    Api admin{base_, tokens_[kAdmin]};
    for (const char* name : {"viewer", "member", "padmin", "outsider", "victim", "newcomer"}) {
      auto r =
          admin.Post("/v2/users", json::object{{"username", name}, {"password", "password-123"}});
      ASSERT_EQ(r.status, 201u) << r.body;
      user_ids_[name] = Api::Obj(r).at("id").as_int64();
    }
    for (const char* pname : {"p1", "p2"}) {
      auto p = admin.Post("/v2/projects", json::object{{"name", pname}});
      ASSERT_EQ(p.status, 201u) << p.body;
      int64_t id = Api::Obj(p).at("id").as_int64();
      (pname == std::string("p1") ? project_ : project2_) = id;
      for (auto [user, role] : {std::pair{"viewer", "viewer"},
                                {"member", "member"},
                                {"padmin", "project-admin"},
                                {"victim", "viewer"}}) {
        auto m = admin.Post(fmt::format("/v2/projects/{}/members", id),
                            json::object{{"username", user}, {"role", role}});
        ASSERT_EQ(m.status, 201u) << m.body;
      }
    }
    tokens_[kViewer] = Login("viewer", "password-123");
    tokens_[kMember] = Login("member", "password-123");
    tokens_[kProjectAdmin] = Login("padmin", "password-123");
    tokens_[kOutsider] = Login("outsider", "password-123");
    Api member{base_, tokens_[kMember]};
    auto key = member.Post(
        "/v2/api-keys",
        json::object{{"name", "member-key"}, {"project_id", project_}, {"scope", "inference"}});
    ASSERT_EQ(key.status, 201u) << key.body;
    tokens_[kInferenceKey] = std::string(Api::Obj(key).at("secret").as_string());
    // A second key of the member's is the target of reads and revocation.
    auto victim_key =
        member.Post("/v2/api-keys", json::object{{"name", "victim-key"}, {"project_id", project_}});
    ASSERT_EQ(victim_key.status, 201u) << victim_key.body;
    member_key_id_ = Api::Obj(victim_key).at("id").as_int64();

    auto clusters = Api::Obj(admin.Get("/v2/clusters"));
    const std::string reg(clusters.at("items").as_array()[0].at("registration_token").as_string());
    cluster_id_ = clusters.at("items").as_array()[0].at("id").as_int64();
    Api reg_api{base_, reg};
    for (const char* wname : {"w1", "w2"}) {
      auto w = reg_api.Post("/v2/workers", json::object{{"name", wname}, {"port", 10150}});
      ASSERT_EQ(w.status, 201u) << w.body;
      if (std::string(wname) == "w1") {
        tokens_[kWorker] = std::string(Api::Obj(w).at("token").as_string());
        worker_id_ = Api::Obj(w).at("worker").at("id").as_int64();
      } else {
        worker2_id_ = Api::Obj(w).at("worker").at("id").as_int64();
      }
    }
    // Two model files reported by worker w1 (one for the admins' delete, one for the worker's).
    Api worker_api{base_, tokens_[kWorker]};
    for (const char* repo : {"org/a", "org/b"}) {
      auto f =
          worker_api.Call(verb::put, "/v2/worker/model-files",
                          json::value(json::object{
                              {"source", json::object{{"type", "huggingface"}, {"repo", repo}}},
                              {"state", "ready"},
                              {"size_bytes", 10},
                              {"downloaded_bytes", 10}}));
      ASSERT_EQ(f.status, 200u) << f.body;
      model_file_ids_.push_back(Api::Obj(f).at("id").as_int64());
    }
    auto c = admin.Post("/v2/clusters", json::object{{"name", "spare"}});
    ASSERT_EQ(c.status, 201u);
    spare_cluster_id_ = Api::Obj(c).at("id").as_int64();

    for (const char* mname : {"kept", "doomed"}) {
      auto m = admin.Post("/v2/models", ModelBody(mname));
      ASSERT_EQ(m.status, 201u) << m.body;
      (mname == std::string("kept") ? model_id_ : doomed_model_id_) =
          Api::Obj(m).at("id").as_int64();
    }
    for (const char* rname : {"kept-route", "doomed-route"}) {
      auto r = admin.Post("/v2/model-routes", RouteBody(rname));
      ASSERT_EQ(r.status, 201u) << r.body;
      (rname == std::string("kept-route") ? route_id_ : doomed_route_id_) =
          Api::Obj(r).at("id").as_int64();
    }
    for (const char* bname : {"kept-backend", "doomed-backend"}) {
      auto b = admin.Post(
          "/v2/backends",
          json::object{
              {"name", bname},
              {"default_version", "1"},
              {"versions",
               json::object{{"1", json::object{{"command", json::array{"/bin/true"}}}},
                            {"extra", json::object{{"command", json::array{"/bin/true"}}}}}}});
      ASSERT_EQ(b.status, 201u) << b.body;
    }
    ASSERT_TRUE(app_->RunControllersOnce().ok());  // creates the models' instances
    auto instances = Api::Obj(admin.Get(fmt::format("/v2/model-instances?model_id={}", model_id_)));
    ASSERT_EQ(instances.at("items").as_array().size(), 1u);
    instance_id_ = instances.at("items").as_array()[0].at("id").as_int64();
  }

  void TearDown() override {
    if (app_) app_->Shutdown();
    if (io_thread_.joinable()) io_thread_.join();
  }

  json::value ModelBody(const std::string& name) const {
    return json::object{{"name", name},
                        {"project_id", project_},
                        {"source", json::object{{"type", "simulated"}, {"params_b", 1}}}};
  }

  json::value RouteBody(const std::string& name) const {
    return json::object{
        {"name", name},
        {"project_id", project_},
        {"targets", json::array{json::object{{"model_id", model_id_}, {"weight", 1}}}}};
  }

  std::string Login(const std::string& user, const std::string& password) {
    Api anon{base_, ""};
    auto r = anon.Post("/v2/auth/login", json::object{{"username", user}, {"password", password}});
    EXPECT_EQ(r.status, 200u) << r.body;
    return std::string(Api::Obj(r).at("token").as_string());
  }

  segma::testing::TempDir dir_;
  std::unique_ptr<ServerApp> app_;
  std::thread io_thread_;
  std::string base_;
  std::map<Role, std::string> tokens_;
  std::map<std::string, int64_t> user_ids_;
  int64_t project_ = 0, project2_ = 0, member_key_id_ = 0, cluster_id_ = 0, spare_cluster_id_ = 0;
  int64_t worker_id_ = 0, worker2_id_ = 0;
  int64_t model_id_ = 0, doomed_model_id_ = 0, instance_id_ = 0;
  int64_t route_id_ = 0, doomed_route_id_ = 0;
  std::vector<int64_t> model_file_ids_;
};

TEST_F(RbacRoutesTest, EveryRouteTimesEveryRole) {
  const std::vector<Role> users = {kOutsider, kViewer, kMember, kProjectAdmin, kAdmin};
  const std::vector<Role> project_readers = {kViewer, kMember, kProjectAdmin, kAdmin};
  const std::vector<Role> project_writers = {kMember, kProjectAdmin, kAdmin};
  const std::vector<Role> project_admins = {kProjectAdmin, kAdmin};
  const std::vector<Role> admins = {kAdmin};
  // Inference-scoped keys are for /v1 only: they read nothing here.
  const std::vector<Role> readers_of_pool = {kOutsider, kViewer, kMember, kProjectAdmin, kAdmin};
  int counter = 0;
  auto unique = [&](const char* prefix) { return fmt::format("{}-{}", prefix, ++counter); };

  // pattern → (path, body maker, expectation). Ids point at fixtures that survive the call.
  struct Case {
    std::string path;
    std::function<std::optional<json::value>()> body;
    Expectation expect;
  };
  auto none = [] { return std::optional<json::value>(); };
  const std::string p = std::to_string(project_);
  std::map<std::string, Case> table = {
      {"POST /v2/auth/logout", {"/v2/auth/logout", none, {users}}},
      {"POST /v2/auth/change-password",
       {"/v2/auth/change-password",
        // Missing new_password: a 400 after the access check, without changing anything.
        [] {
          return json::value(json::object{{"old_password", "whatever"}});
        },
        {users}}},
      {"GET /v2/users/me", {"/v2/users/me", none, {users}}},
      {"GET /v2/sessions", {"/v2/sessions", none, {users}}},
      // Another user's session: theirs to end, or an admin's (999999 does not exist: 404 for
      // everyone allowed through the route's check, which a non-admin also gets).
      {"DELETE /v2/sessions/{id}", {"/v2/sessions/999999", none, {users}}},
      {"GET /v2/users", {"/v2/users", none, {admins}}},
      {"POST /v2/users",
       {"/v2/users",
        [&] {
          return json::value(json::object{{"username", unique("u")}, {"password", "password-123"}});
        },
        {admins}}},
      {"GET /v2/users/{id}", {fmt::format("/v2/users/{}", user_ids_["victim"]), none, {admins}}},
      {"PATCH /v2/users/{id}",
       {fmt::format("/v2/users/{}", user_ids_["victim"]),
        [] {
          return json::value(json::object{{"full_name", "V"}});
        },
        {admins}}},
      {"DELETE /v2/users/{id}",
       {fmt::format("/v2/users/{}", user_ids_["outsider"] + 1000), none, {admins}}},
      {"GET /v2/projects",
       {"/v2/projects", none, {{kOutsider, kViewer, kMember, kProjectAdmin, kAdmin}}}},
      {"POST /v2/projects",
       {"/v2/projects",
        [&] {
          return json::value(json::object{{"name", unique("proj")}});
        },
        {admins}}},
      {"GET /v2/projects/{id}", {"/v2/projects/" + p, none, {project_readers}}},
      {"PATCH /v2/projects/{id}",
       {"/v2/projects/" + p,
        [] {
          return json::value(json::object{{"description", "d"}});
        },
        {admins}}},
      {"DELETE /v2/projects/{id}", {fmt::format("/v2/projects/{}", project2_), none, {admins}}},
      {"GET /v2/projects/{id}/members",
       {"/v2/projects/" + p + "/members", none, {project_readers}}},
      {"POST /v2/projects/{id}/members",
       {"/v2/projects/" + p + "/members",
        [] {
          return json::value(json::object{{"username", "newcomer"}, {"role", "viewer"}});
        },
        {project_admins}}},
      {"PATCH /v2/projects/{id}/members/{user_id}",
       {fmt::format("/v2/projects/{}/members/{}", project_, user_ids_["victim"]),
        [] {
          return json::value(json::object{{"role", "viewer"}});
        },
        {project_admins}}},
      {"DELETE /v2/projects/{id}/members/{user_id}",
       {fmt::format("/v2/projects/{}/members/{}", project_, user_ids_["victim"]),
        none,
        {project_admins}}},
      {"GET /v2/api-keys", {"/v2/api-keys?project_id=" + p, none, {project_readers}}},
      {"POST /v2/api-keys",
       {"/v2/api-keys",
        [&] {
          return json::value(json::object{{"name", unique("k")}, {"project_id", project_}});
        },
        {project_writers}}},
      {"GET /v2/api-keys/{id}",
       {fmt::format("/v2/api-keys/{}", member_key_id_), none, {project_readers}}},
      {"PATCH /v2/api-keys/{id}",
       {fmt::format("/v2/api-keys/{}", member_key_id_),
        [] {
          return json::value(json::object{{"limits", json::object{{"requests_per_minute", 100}}}});
        },
        {project_writers}}},
      {"DELETE /v2/api-keys/{id}",
       {fmt::format("/v2/api-keys/{}", member_key_id_), none, {project_writers}}},
      {"GET /v2/clusters", {"/v2/clusters", none, {admins}}},
      {"POST /v2/clusters",
       {"/v2/clusters",
        [&] {
          return json::value(json::object{{"name", unique("c")}});
        },
        {admins}}},
      {"GET /v2/clusters/{id}", {fmt::format("/v2/clusters/{}", cluster_id_), none, {admins}}},
      {"PATCH /v2/clusters/{id}",
       {fmt::format("/v2/clusters/{}", cluster_id_),
        [] {
          return json::value(json::object{{"description", "d"}});
        },
        {admins}}},
      {"POST /v2/clusters/{id}/registration-token",
       {fmt::format("/v2/clusters/{}/registration-token", spare_cluster_id_), none, {admins}}},
      {"DELETE /v2/clusters/{id}",
       {fmt::format("/v2/clusters/{}", spare_cluster_id_), none, {admins}}},
      {"POST /v2/worker-heartbeat",
       {"/v2/worker-heartbeat",
        [] {
          return json::value(
              json::object{{"status", json::object{{"cpu_count", 2}, {"gpus", json::array{}}}}});
        },
        {{kWorker}}}},
      {"GET /v2/workers", {"/v2/workers", none, {readers_of_pool}}},
      {"GET /v2/workers/{id}",
       {fmt::format("/v2/workers/{}", worker_id_), none, {readers_of_pool}}},
      {"PATCH /v2/workers/{id}",
       {fmt::format("/v2/workers/{}", worker_id_),
        [] {
          return json::value(json::object{{"labels", json::object{{"zone", "a"}}}});
        },
        {admins}}},
      {"DELETE /v2/workers/{id}", {fmt::format("/v2/workers/{}", worker2_id_), none, {admins}}},
      {"GET /v2/gpus", {"/v2/gpus", none, {readers_of_pool}}},
      {"GET /v2/backends", {"/v2/backends", none, {readers_of_pool}}},
      {"POST /v2/backends",
       {"/v2/backends",
        [&] {
          return json::value(json::object{
              {"name", unique("b")},
              {"versions",
               json::object{{"1", json::object{{"command", json::array{"/bin/true"}}}}}}});
        },
        {admins}}},
      {"GET /v2/backends/{name}", {"/v2/backends/kept-backend", none, {readers_of_pool}}},
      {"PATCH /v2/backends/{name}",
       {"/v2/backends/kept-backend",
        [] {
          return json::value(json::object{{"health_path", "/healthz"}});
        },
        {admins}}},
      {"DELETE /v2/backends/{name}", {"/v2/backends/doomed-backend", none, {admins}}},
      {"POST /v2/backends/{name}/versions",
       {"/v2/backends/kept-backend/versions",
        [&] {
          return json::value(
              json::object{{"version", unique("v")}, {"command", json::array{"/bin/true"}}});
        },
        {admins}}},
      {"DELETE /v2/backends/{name}/versions/{version}",
       {"/v2/backends/kept-backend/versions/extra", none, {admins}}},
      {"GET /v2/models", {"/v2/models?project_id=" + p, none, {project_readers}}},
      {"POST /v2/models",
       {"/v2/models",
        [&] { return std::optional<json::value>(ModelBody(unique("m"))); },
        {project_writers}}},
      {"GET /v2/models/{id}", {fmt::format("/v2/models/{}", model_id_), none, {project_readers}}},
      {"PATCH /v2/models/{id}",
       {fmt::format("/v2/models/{}", model_id_),
        [] {
          return json::value(json::object{{"replicas", 1}});
        },
        {project_writers}}},
      {"DELETE /v2/models/{id}",
       {fmt::format("/v2/models/{}", doomed_model_id_), none, {project_writers}}},
      {"GET /v2/model-instances", {"/v2/model-instances?project_id=" + p, none, {project_readers}}},
      {"GET /v2/model-instances/{id}",
       {fmt::format("/v2/model-instances/{}", instance_id_), none, {project_readers}}},
      // The instance is not placed (no worker has GPUs): allowed callers get 409, not 403.
      {"GET /v2/model-instances/{id}/logs",
       {fmt::format("/v2/model-instances/{}/logs?tail=5", instance_id_), none, {project_readers}}},
      {"DELETE /v2/model-instances/{id}",
       {fmt::format("/v2/model-instances/{}", instance_id_), none, {project_writers}}},
      {"POST /v2/model-evaluations",
       {"/v2/model-evaluations",
        [&] { return std::optional<json::value>(ModelBody("eval")); },
        {project_writers}}},
      {"GET /v2/model-routes", {"/v2/model-routes?project_id=" + p, none, {project_readers}}},
      {"POST /v2/model-routes",
       {"/v2/model-routes",
        [&] { return std::optional<json::value>(RouteBody(unique("r"))); },
        {project_admins}}},
      {"GET /v2/model-routes/{id}",
       {fmt::format("/v2/model-routes/{}", route_id_), none, {project_readers}}},
      {"PATCH /v2/model-routes/{id}",
       {fmt::format("/v2/model-routes/{}", route_id_),
        [] {
          return json::value(json::object{{"description", "d"}});
        },
        {project_admins}}},
      {"DELETE /v2/model-routes/{id}",
       {fmt::format("/v2/model-routes/{}", doomed_route_id_), none, {project_admins}}},
      // Worker-only routes: the rows are not this worker's, so the worker gets 404, others 403.
      {"GET /v2/worker/instances",
       {fmt::format("/v2/worker/instances?worker_id={}", worker_id_), none, {{kWorker}}}},
      {"GET /v2/worker/models/{id}",
       {fmt::format("/v2/worker/models/{}", model_id_), none, {{kWorker}}}},
      {"PATCH /v2/worker/instances/{id}",
       {fmt::format("/v2/worker/instances/{}", instance_id_),
        [] {
          return json::value(json::object{{"state", "RUNNING"}});
        },
        {{kWorker}}}},
      {"GET /v2/usage", {"/v2/usage?project_id=" + p, none, {project_readers}}},
      {"GET /v2/prices", {"/v2/prices", none, {admins}}},
      {"GET /v2/audit-events", {"/v2/audit-events", none, {admins}}},
      {"GET /v2/audit-events/verify", {"/v2/audit-events/verify", none, {admins}}},
      {"PUT /v2/prices",
       {"/v2/prices",
        [] {
          return json::value(json::object{
              {"currency", "EUR"},
              {"items", json::array{json::object{
                            {"unit", "gpu_hour"}, {"name", "NVIDIA H200"}, {"price", 2.5}}}}});
        },
        {admins}}},
      {"GET /v2/model-files", {"/v2/model-files", none, {readers_of_pool}}},
      {"GET /v2/model-files/{id}",
       {fmt::format("/v2/model-files/{}", model_file_ids_[0]), none, {readers_of_pool}}},
      {"DELETE /v2/model-files/{id}",
       {fmt::format("/v2/model-files/{}", model_file_ids_[0]), none, {admins}}},
      {"PUT /v2/worker/model-files",
       {"/v2/worker/model-files",
        [] {
          return json::value(
              json::object{{"source", json::object{{"type", "modelscope"}, {"repo", "org/c"}}},
                           {"state", "downloading"}});
        },
        {{kWorker}}}},
      {"GET /v2/worker/model-files", {"/v2/worker/model-files", none, {{kWorker}}}},
      {"DELETE /v2/worker/model-files/{id}",
       {fmt::format("/v2/worker/model-files/{}", model_file_ids_[1]), none, {{kWorker}}}},
  };

  // Logging out revokes the sessions every other call uses: it goes last.
  std::vector<Route> routes = ControlPlaneRoutes();
  std::stable_partition(routes.begin(), routes.end(),
                        [](const Route& r) { return r.pattern != "/v2/auth/logout"; });
  for (const Route& route : routes) {
    const std::string key = fmt::format(
        "{} {}", std::string(boost::beast::http::to_string(route.method)), route.pattern);
    if (route.access == Access::kPublic) {
      // Public routes never answer 403 for lack of a role.
      continue;
    }
    auto it = table.find(key);
    ASSERT_NE(it, table.end()) << "route " << key << " has no RBAC expectation in this table";
    const Case& c = it->second;
    // Least privileged first, so that an allowed destructive call runs after every denied one.
    for (Role role : kAllRoles) {
      Api api{base_, role == kAnonymous ? "" : tokens_[role]};
      http::ClientResponse r = api.Call(route.method, c.path, c.body());
      const bool allowed = std::find(c.expect.allowed.begin(), c.expect.allowed.end(), role) !=
                           c.expect.allowed.end();
      const std::string what =
          fmt::format("{} as {}: {} {}", key, kRoleNames[role], r.status, r.body.substr(0, 200));
      if (role == kAnonymous) {
        EXPECT_EQ(r.status, 401u) << what;
      } else if (allowed) {
        EXPECT_NE(r.status, 403u) << what;
        EXPECT_NE(r.status, 401u) << what;
        EXPECT_LT(r.status, 500u) << what;
      } else {
        // 404 where the handler hides that a row the caller may not see exists.
        EXPECT_TRUE(r.status == 403u || r.status == 404u) << what;
      }
    }
    table.erase(it);
  }
  for (const auto& [key, unused] : table)
    ADD_FAILURE() << "table names a route that does not exist: " << key;
}

}  // namespace
}  // namespace segma::api
