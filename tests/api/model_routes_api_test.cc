// /v2/model-routes through REST against the in-process server (ApiServerTest): strict bodies,
// the checks that need the database (target models of the route's project, names shared with
// models), clear errors in the API's format, nothing half-written, and the gateway's view
// (GET /v1/models, 404 for other projects). Traffic splitting and fallback with real engines:
// tests/integration/model_routes_test.cc.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "api/api_server_test_base.h"
#include "http/client.h"

namespace segma::api {
namespace {

using boost::beast::http::verb;
using segma::testing::Api;
using segma::testing::WaitUntil;

class ModelRoutesApiTest : public ApiServerTest {
 protected:
  int64_t Model(const std::string& name, int64_t project) {
    auto m = admin_.Post(
        "/v2/models", json::object{{"name", name},
                                   {"project_id", project},
                                   {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                                   {"replicas", 0}});
    EXPECT_EQ(m.status, 201u) << m.body;
    return Api::Obj(m).at("id").as_int64();
  }

  int64_t OtherProject() {
    auto p = admin_.Post("/v2/projects", json::object{{"name", "other"}});
    EXPECT_EQ(p.status, 201u) << p.body;
    return Api::Obj(p).at("id").as_int64();
  }

  json::object RouteBody(const std::string& name, json::array targets) const {
    return json::object{{"name", name}, {"project_id", project_}, {"targets", std::move(targets)}};
  }

  static json::object Target(int64_t model_id, int64_t weight) {
    return json::object{{"model_id", model_id}, {"weight", weight}};
  }

  // Expects `r` to be an API error with this HTTP status whose message contains `needle`.
  static void ExpectError(const http::ClientResponse& r, unsigned status, const std::string& code,
                          const std::string& needle) {
    EXPECT_EQ(r.status, status) << r.body;
    json::object o = Api::Obj(r);
    ASSERT_TRUE(o.contains("error")) << r.body;
    EXPECT_EQ(o.at("error").at("code").as_string(), code) << r.body;
    EXPECT_NE(std::string(o.at("error").at("message").as_string()).find(needle), std::string::npos)
        << "message lacks '" << needle << "': " << r.body;
  }

  std::string Key(int64_t project, const std::string& name) {
    auto k =
        admin_.Post("/v2/api-keys",
                    json::object{{"name", name}, {"project_id", project}, {"scope", "inference"}});
    EXPECT_EQ(k.status, 201u) << k.body;
    return std::string(Api::Obj(k).at("secret").as_string());
  }

  std::vector<std::string> ListedModels(const std::string& key) {
    Api gw{base_, key};
    std::vector<std::string> out;
    auto r = gw.Get("/v1/models");
    if (r.status != 200) return out;
    const json::object body = Api::Obj(r);
    for (const auto& m : body.at("data").as_array()) {
      out.emplace_back(m.at("id").as_string());
    }
    return out;
  }
};

TEST_F(ModelRoutesApiTest, CrudRoundTripsAndPatchReplacesTargets) {
  const int64_t a = Model("a", project_);
  const int64_t b = Model("b", project_);
  auto created = admin_.Post("/v2/model-routes",
                             json::object{{"name", "chat"},
                                          {"project_id", project_},
                                          {"description", "a/b split"},
                                          {"targets", json::array{Target(a, 3), Target(b, 1)}}});
  ASSERT_EQ(created.status, 201u) << created.body;
  json::object r = Api::Obj(created);
  const int64_t id = r.at("id").as_int64();
  EXPECT_EQ(r.at("name").as_string(), "chat");
  EXPECT_EQ(r.at("project_id").as_int64(), project_);
  EXPECT_EQ(r.at("description").as_string(), "a/b split");
  EXPECT_EQ(json::serialize(r.at("targets")),
            json::serialize(json::array{Target(a, 3), Target(b, 1)}));
  EXPECT_TRUE(r.contains("created_at") && r.contains("updated_at"));

  auto got = admin_.Get(fmt::format("/v2/model-routes/{}", id));
  ASSERT_EQ(got.status, 200u) << got.body;
  EXPECT_EQ(Api::Obj(got), r);
  auto list = Api::Obj(admin_.Get(fmt::format("/v2/model-routes?project_id={}", project_)));
  ASSERT_EQ(list.at("items").as_array().size(), 1u) << json::serialize(list);
  EXPECT_EQ(list.at("pagination").at("total").as_int64(), 1);
  // Weight defaults to 1; `targets` replaces the whole list.
  auto patched = admin_.Call(
      verb::patch, fmt::format("/v2/model-routes/{}", id),
      json::value(
          json::object{{"targets", json::array{json::object{{"model_id", b}}, Target(a, 0)}}}));
  ASSERT_EQ(patched.status, 200u) << patched.body;
  EXPECT_EQ(json::serialize(Api::Obj(patched).at("targets")),
            json::serialize(json::array{Target(b, 1), Target(a, 0)}));
  EXPECT_EQ(Api::Obj(patched).at("description").as_string(), "a/b split");  // untouched

  // Deleting a target model takes it out of the route.
  ASSERT_EQ(admin_.Call(verb::delete_, fmt::format("/v2/models/{}", a)).status, 204u);
  got = admin_.Get(fmt::format("/v2/model-routes/{}", id));
  EXPECT_EQ(json::serialize(Api::Obj(got).at("targets")),
            json::serialize(json::array{Target(b, 1)}));

  ASSERT_EQ(admin_.Call(verb::delete_, fmt::format("/v2/model-routes/{}", id)).status, 204u);
  ExpectError(admin_.Get(fmt::format("/v2/model-routes/{}", id)), 404, "not_found",
              fmt::format("model route {} not found", id));
  ExpectError(admin_.Call(verb::delete_, fmt::format("/v2/model-routes/{}", id)), 404, "not_found",
              "not found");
}

TEST_F(ModelRoutesApiTest, BadInputIsRefusedWithClearErrorsAndNothingChanges) {
  const int64_t a = Model("a", project_);
  const int64_t b = Model("b", project_);
  const int64_t other = OtherProject();
  const int64_t foreign = Model("foreign", other);
  auto ok = admin_.Post("/v2/model-routes", RouteBody("chat", {Target(a, 3), Target(b, 1)}));
  ASSERT_EQ(ok.status, 201u) << ok.body;
  const json::object before = Api::Obj(ok);
  const int64_t id = before.at("id").as_int64();

  auto post = [&](json::object body) { return admin_.Post("/v2/model-routes", body); };
  json::object unknown = RouteBody("x", {Target(a, 1)});
  unknown["colour"] = "red";
  ExpectError(post(unknown), 400, "invalid_argument", "unknown field 'colour'");
  json::object unknown_nested = RouteBody("x", {json::object{{"model_id", a}, {"wieght", 2}}});
  ExpectError(post(unknown_nested), 400, "invalid_argument", "unknown field 'targets[0].wieght'");
  json::object server_owned = RouteBody("x", {Target(a, 1)});
  server_owned["id"] = 5;
  ExpectError(post(server_owned), 400, "invalid_argument", "unknown field 'id'");
  ExpectError(post(json::object{{"project_id", project_}, {"targets", json::array{Target(a, 1)}}}),
              400, "invalid_argument", "name is required");
  ExpectError(post(json::object{{"name", "x"}, {"project_id", project_}}), 400, "invalid_argument",
              "targets is required");
  ExpectError(post(json::object{{"name", "x"}, {"targets", json::array{Target(a, 1)}}}), 400,
              "invalid_argument", "project_id is required");
  ExpectError(post(RouteBody("bad name", {Target(a, 1)})), 400, "invalid_argument",
              "name must be 1-64 characters");
  ExpectError(post(RouteBody("x", {})), 400, "invalid_argument", "at least one model");
  json::object not_array = RouteBody("x", {});
  not_array["targets"] = a;
  ExpectError(post(not_array), 400, "invalid_argument", "targets must be an array");
  ExpectError(post(RouteBody("x", {json::value(a)})), 400, "invalid_argument",
              "targets[0] must be an object");
  ExpectError(post(RouteBody("x", {Target(a, 1), Target(b, 1001)})), 400, "invalid_argument",
              "targets[1].weight must be an integer in 0..1000");
  ExpectError(post(RouteBody("x", {Target(a, -1)})), 400, "invalid_argument", "targets[0].weight");
  ExpectError(post(RouteBody("x", {json::object{{"model_id", a}, {"weight", 1.5}}})), 400,
              "invalid_argument", "targets[0].weight must be an integer");
  ExpectError(post(RouteBody("x", {json::object{{"model_id", a}, {"weight", "2"}}})), 400,
              "invalid_argument", "targets[0].weight must be an integer");
  ExpectError(post(RouteBody("x", {Target(a, 0), Target(b, 0)})), 400, "invalid_argument",
              "at least one model with weight > 0");
  ExpectError(post(RouteBody("x", {Target(a, 1), Target(a, 2)})), 400, "invalid_argument",
              fmt::format("model {} is listed twice", a));
  ExpectError(post(RouteBody("x", {Target(a, 1), Target(foreign, 1)})), 400, "invalid_argument",
              fmt::format("targets[1]: model {} does not exist in project {}", foreign, project_));
  ExpectError(post(RouteBody("x", {Target(987654, 1)})), 400, "invalid_argument",
              "model 987654 does not exist");
  // Names: one namespace per project for routes and models.
  ExpectError(post(RouteBody("chat", {Target(a, 1)})), 409, "already_exists",
              "model route 'chat' already exists");
  ExpectError(post(RouteBody("a", {Target(b, 1)})), 409, "already_exists",
              "model 'a' already exists");
  ExpectError(
      admin_.Post("/v2/models",
                  json::object{{"name", "chat"},
                               {"project_id", project_},
                               {"source", json::object{{"type", "simulated"}, {"params_b", 1}}}}),
      409, "already_exists", "model route 'chat' already exists");
  ExpectError(admin_.Call(verb::patch, fmt::format("/v2/models/{}", a),
                          json::value(json::object{{"name", "chat"}})),
              409, "already_exists", "model route 'chat'");
  // The same name in another project is fine.
  auto elsewhere =
      admin_.Post("/v2/model-routes", json::object{{"name", "chat"},
                                                   {"project_id", other},
                                                   {"targets", json::array{Target(foreign, 1)}}});
  EXPECT_EQ(elsewhere.status, 201u) << elsewhere.body;

  // A body that is not JSON at all.
  http::ClientRequest raw;
  raw.method = verb::post;
  raw.url = base_ + "/v2/model-routes";
  raw.Bearer(admin_.token);
  raw.body = "{\"name\": ";
  raw.headers.emplace_back("Content-Type", "application/json");
  auto broken = http::FetchSync(std::move(raw));
  ASSERT_TRUE(broken.ok());
  ExpectError(*broken, 400, "invalid_argument", "JSON");

  // PATCH: the same rules; a refused patch changes nothing.
  const std::string path = fmt::format("/v2/model-routes/{}", id);
  auto patch = [&](json::object body) {
    return admin_.Call(verb::patch, path, json::value(std::move(body)));
  };
  ExpectError(patch(json::object{{"project_id", other}}), 400, "invalid_argument",
              "project_id cannot be changed");
  ExpectError(patch(json::object{{"name", "renamed"},
                                 {"targets", json::array{Target(b, 5), Target(foreign, 1)}}}),
              400, "invalid_argument", fmt::format("model {} does not exist", foreign));
  ExpectError(patch(json::object{{"name", "b"}}), 409, "already_exists", "model 'b'");
  ExpectError(patch(json::object{{"targets", json::array()}}), 400, "invalid_argument",
              "at least one model");
  ExpectError(patch(json::object{{"weight", 3}}), 400, "invalid_argument",
              "unknown field 'weight'");
  ExpectError(admin_.Call(verb::patch, "/v2/model-routes/987654",
                          json::value(json::object{{"description", "x"}})),
              404, "not_found", "model route 987654 not found");
  ExpectError(admin_.Get("/v2/model-routes/abc"), 400, "invalid_argument", "");
  ExpectError(admin_.Get("/v2/model-routes?sort=weight"), 400, "invalid_argument", "sort");

  // Still serving, and the route is exactly as created.
  EXPECT_EQ(admin_.Get("/healthz").status, 200u);
  auto after = admin_.Get(path);
  ASSERT_EQ(after.status, 200u) << after.body;
  EXPECT_EQ(Api::Obj(after), before);
  auto list = Api::Obj(admin_.Get(fmt::format("/v2/model-routes?project_id={}", project_)));
  EXPECT_EQ(list.at("pagination").at("total").as_int64(), 1) << json::serialize(list);
}

TEST_F(ModelRoutesApiTest, GatewayListsTheRouteForKeysOfItsProjectOnly) {
  const int64_t a = Model("a", project_);
  const int64_t other = OtherProject();
  const std::string team_key = Key(project_, "team-key");
  const std::string other_key = Key(other, "other-key");
  auto r = admin_.Post("/v2/model-routes", RouteBody("smart", {Target(a, 1)}));
  ASSERT_EQ(r.status, 201u) << r.body;
  const int64_t id = Api::Obj(r).at("id").as_int64();
  auto has = [&](const std::string& key, const std::string& name) {
    std::vector<std::string> names = ListedModels(key);
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  ASSERT_TRUE(WaitUntil([&] { return has(team_key, "smart"); }, std::chrono::seconds(5)));
  EXPECT_TRUE(has(team_key, "a"));
  // The gateway learns of keys on its own (the key table), apart from routes: wait for the other
  // key too, or its requests below would be 401 rather than what the route table decides.
  ASSERT_TRUE(WaitUntil(
      [&] {
        return Api{base_, other_key}.Get("/v1/models").status == 200;
      },
      std::chrono::seconds(5)));
  EXPECT_FALSE(has(other_key, "smart"));
  // Another project's key does not see it: 404 as for any unknown model.
  Api other_gw{base_, other_key};
  auto chat = other_gw.Post(
      "/v1/chat/completions",
      json::object{{"model", "smart"},
                   {"messages", json::array{json::object{{"role", "user"}, {"content", "hi"}}}}});
  EXPECT_EQ(chat.status, 404u) << chat.body;
  // The team's key reaches the route; no replica runs (replicas 0), so 503, not 404.
  Api team_gw{base_, team_key};
  chat = team_gw.Post(
      "/v1/chat/completions",
      json::object{{"model", "smart"},
                   {"messages", json::array{json::object{{"role", "user"}, {"content", "hi"}}}}});
  EXPECT_EQ(chat.status, 503u) << chat.body;

  // Renamed: the old name goes, the new one comes. Deleted: gone.
  ASSERT_EQ(admin_
                .Call(verb::patch, fmt::format("/v2/model-routes/{}", id),
                      json::value(json::object{{"name", "smarter"}}))
                .status,
            200u);
  EXPECT_TRUE(WaitUntil([&] { return has(team_key, "smarter") && !has(team_key, "smart"); },
                        std::chrono::seconds(5)));
  ASSERT_EQ(admin_.Call(verb::delete_, fmt::format("/v2/model-routes/{}", id)).status, 204u);
  EXPECT_TRUE(WaitUntil([&] { return !has(team_key, "smarter"); }, std::chrono::seconds(5)));
  EXPECT_TRUE(has(team_key, "a"));
}

TEST_F(ModelRoutesApiTest, ProjectMembersReadAndOnlyProjectAdminsWrite) {
  const int64_t a = Model("a", project_);
  Api anon{base_, ""};
  for (const char* user : {"viewer1", "member1", "padmin1"}) {
    ASSERT_EQ(
        admin_.Post("/v2/users", json::object{{"username", user}, {"password", "password-123"}})
            .status,
        201u);
  }
  for (auto [user, role] :
       {std::pair{"viewer1", "viewer"}, {"member1", "member"}, {"padmin1", "project-admin"}}) {
    ASSERT_EQ(admin_
                  .Post(fmt::format("/v2/projects/{}/members", project_),
                        json::object{{"username", user}, {"role", role}})
                  .status,
              201u);
  }
  auto login = [&](const char* user) {
    auto r =
        anon.Post("/v2/auth/login", json::object{{"username", user}, {"password", "password-123"}});
    EXPECT_EQ(r.status, 200u) << r.body;
    return Api{base_, std::string(Api::Obj(r).at("token").as_string())};
  };
  Api viewer = login("viewer1");
  Api member = login("member1");
  Api padmin = login("padmin1");
  ExpectError(member.Post("/v2/model-routes", RouteBody("chat", {Target(a, 1)})), 403,
              "permission_denied", "");
  auto created = padmin.Post("/v2/model-routes", RouteBody("chat", {Target(a, 1)}));
  ASSERT_EQ(created.status, 201u) << created.body;
  const int64_t id = Api::Obj(created).at("id").as_int64();
  // Without project_id, a member's list holds the routes of their projects.
  auto list = viewer.Get("/v2/model-routes");
  ASSERT_EQ(list.status, 200u) << list.body;
  EXPECT_EQ(Api::Obj(list).at("items").as_array().size(), 1u);
  EXPECT_EQ(viewer.Get(fmt::format("/v2/model-routes/{}", id)).status, 200u);
  ExpectError(viewer.Call(verb::delete_, fmt::format("/v2/model-routes/{}", id)), 403,
              "permission_denied", "");
  EXPECT_EQ(padmin.Call(verb::delete_, fmt::format("/v2/model-routes/{}", id)).status, 204u);
}

}  // namespace
}  // namespace segma::api
