// Gateway limits through REST (ADR 0013): set when creating a key, changed with PATCH on the key
// (a merge patch), project limits only by administrators, strict validation with the field named,
// and nothing written by a refused request.

#include <gtest/gtest.h>

#include "api/api_server_test_base.h"

namespace segma::api {
namespace {

using boost::beast::http::verb;
using segma::testing::Api;

class LimitsApiTest : public ApiServerTest {
 protected:
  static std::string ErrorMessage(const http::ClientResponse& r) {
    json::object o = Api::Obj(r);
    if (!o.contains("error")) return "";
    return std::string(o.at("error").at("message").as_string());
  }

  // A user with `role` in project_, logged in.
  Api Member(const std::string& name, const std::string& role) {
    auto u =
        admin_.Post("/v2/users", json::object{{"username", name}, {"password", "password-123"}});
    EXPECT_EQ(u.status, 201u) << u.body;
    auto m = admin_.Post("/v2/projects/" + std::to_string(project_) + "/members",
                         json::object{{"username", name}, {"role", role}});
    EXPECT_EQ(m.status, 201u) << m.body;
    Api anon{base_, ""};
    auto login =
        anon.Post("/v2/auth/login", json::object{{"username", name}, {"password", "password-123"}});
    EXPECT_EQ(login.status, 200u) << login.body;
    return Api{base_, std::string(Api::Obj(login).at("token").as_string())};
  }

  int64_t KeyCount() {
    return Api::Obj(admin_.Get("/v2/api-keys?project_id=" + std::to_string(project_)))
        .at("pagination")
        .at("total")
        .as_int64();
  }

  json::object Limits(const std::string& path) {
    return Api::Obj(admin_.Get(path)).at("limits").as_object();
  }
};

TEST_F(LimitsApiTest, KeyLimitsAreSetAtCreationAndPatched) {
  auto created = admin_.Post(
      "/v2/api-keys",
      json::object{{"name", "limited"},
                   {"project_id", project_},
                   {"limits", json::object{{"requests_per_minute", 2}, {"tokens_per_day", 0}}}});
  ASSERT_EQ(created.status, 201u) << created.body;
  const json::object key = Api::Obj(created);
  const std::string path = "/v2/api-keys/" + std::to_string(key.at("id").as_int64());
  // Every field is shown; unset ones are null (unlimited); 0 is a limit.
  EXPECT_EQ(key.at("limits"), json::value(json::object{{"requests_per_minute", 2},
                                                       {"tokens_per_minute", nullptr},
                                                       {"max_concurrent", nullptr},
                                                       {"tokens_per_day", 0},
                                                       {"tokens_per_month", nullptr}}));
  EXPECT_EQ(Limits(path).at("requests_per_minute"), json::value(2));

  // A key without limits shows all five as null.
  auto plain =
      admin_.Post("/v2/api-keys", json::object{{"name", "plain"}, {"project_id", project_}});
  ASSERT_EQ(plain.status, 201u) << plain.body;
  const json::object plain_key = Api::Obj(plain);
  for (const auto& kv : plain_key.at("limits").as_object()) {
    EXPECT_TRUE(kv.value().is_null()) << kv.key();
  }

  // PATCH is a merge patch: named fields change, null lifts one, the rest stay.
  auto patched = admin_.Call(verb::patch, path,
                             json::object{{"limits", json::object{{"requests_per_minute", 10},
                                                                  {"tokens_per_day", nullptr},
                                                                  {"tokens_per_month", 5000}}}});
  ASSERT_EQ(patched.status, 200u) << patched.body;
  json::object l = Limits(path);
  EXPECT_EQ(l.at("requests_per_minute"), json::value(10));
  EXPECT_TRUE(l.at("tokens_per_day").is_null());
  EXPECT_EQ(l.at("tokens_per_month"), json::value(5000));
  // An empty body changes nothing.
  ASSERT_EQ(admin_.Call(verb::patch, path, json::object{}).status, 200u);
  EXPECT_EQ(Limits(path), l);
  // "limits": null lifts them all.
  ASSERT_EQ(admin_.Call(verb::patch, path, json::object{{"limits", nullptr}}).status, 200u);
  for (const auto& kv : Limits(path)) EXPECT_TRUE(kv.value().is_null()) << kv.key();

  auto missing = admin_.Call(verb::patch, "/v2/api-keys/987654",
                             json::object{{"limits", json::object{{"max_concurrent", 1}}}});
  EXPECT_EQ(missing.status, 404u) << missing.body;
}

TEST_F(LimitsApiTest, BadLimitsAre400NamingTheFieldAndWriteNothing) {
  struct Bad {
    json::value limits;
    std::string field;
  };
  const std::vector<Bad> bad = {
      {json::object{{"rpm", 1}}, "limits.rpm"},
      {json::object{{"tokens_per_day", -1}}, "limits.tokens_per_day"},
      {json::object{{"tokens_per_minute", 1.5}}, "limits.tokens_per_minute"},
      {json::object{{"max_concurrent", "3"}}, "limits.max_concurrent"},
      {json::array{1}, "limits"},
  };
  const int64_t before = KeyCount();
  for (const Bad& b : bad) {
    auto r =
        admin_.Post("/v2/api-keys",
                    json::object{{"name", "bad"}, {"project_id", project_}, {"limits", b.limits}});
    EXPECT_EQ(r.status, 400u) << r.body;
    EXPECT_NE(ErrorMessage(r).find(b.field), std::string::npos) << r.body;
  }
  EXPECT_EQ(KeyCount(), before);  // no key was created by a refused request

  auto created = admin_.Post("/v2/api-keys",
                             json::object{{"name", "k"},
                                          {"project_id", project_},
                                          {"limits", json::object{{"requests_per_minute", 3}}}});
  ASSERT_EQ(created.status, 201u) << created.body;
  const std::string path = "/v2/api-keys/" + std::to_string(Api::Obj(created).at("id").as_int64());
  const std::string project_path = "/v2/projects/" + std::to_string(project_);
  for (const Bad& b : bad) {
    for (const std::string& p : {path, project_path}) {
      auto r = admin_.Call(verb::patch, p, json::object{{"limits", b.limits}});
      EXPECT_EQ(r.status, 400u) << p << " " << r.body;
      EXPECT_NE(ErrorMessage(r).find(b.field), std::string::npos) << r.body;
    }
  }
  // A bad field next to a good one: nothing of the patch is applied.
  auto mixed = admin_.Call(
      verb::patch, path,
      json::object{{"limits", json::object{{"requests_per_minute", 50}, {"tokens_per_day", -5}}}});
  EXPECT_EQ(mixed.status, 400u);
  EXPECT_EQ(Limits(path).at("requests_per_minute"), json::value(3));
  auto unknown = admin_.Call(verb::patch, path, json::object{{"name", "renamed"}});
  EXPECT_EQ(unknown.status, 400u);
  EXPECT_NE(ErrorMessage(unknown).find("name"), std::string::npos) << unknown.body;
  for (const auto& kv : Limits(project_path)) EXPECT_TRUE(kv.value().is_null()) << kv.key();
}

TEST_F(LimitsApiTest, OnlyAdminsSetProjectLimits) {
  const std::string path = "/v2/projects/" + std::to_string(project_);
  auto set = admin_.Call(
      verb::patch, path,
      json::object{{"limits", json::object{{"tokens_per_minute", 1000}, {"tokens_per_month", 1}}}});
  ASSERT_EQ(set.status, 200u) << set.body;
  EXPECT_EQ(Api::Obj(set).at("limits").at("tokens_per_minute"), json::value(1000));

  // The project's own admin may read the limits but not lift them.
  Api padmin = Member("padmin", "project-admin");
  auto read = padmin.Get(path);
  ASSERT_EQ(read.status, 200u) << read.body;
  EXPECT_EQ(Api::Obj(read).at("limits").at("tokens_per_month"), json::value(1));
  auto lift = padmin.Call(verb::patch, path, json::object{{"limits", nullptr}});
  EXPECT_EQ(lift.status, 403u) << lift.body;
  EXPECT_EQ(Limits(path).at("tokens_per_month"), json::value(1));

  // Project creation takes limits too (admins only, like creating a project).
  auto created = admin_.Post(
      "/v2/projects",
      json::object{{"name", "capped"}, {"limits", json::object{{"max_concurrent", 4}}}});
  ASSERT_EQ(created.status, 201u) << created.body;
  EXPECT_EQ(Api::Obj(created).at("limits").at("max_concurrent"), json::value(4));

  // Key limits follow key management: a member sets them on its own key, a viewer cannot.
  Api member = Member("member", "member");
  auto key =
      member.Post("/v2/api-keys", json::object{{"name", "mine"},
                                               {"project_id", project_},
                                               {"limits", json::object{{"max_concurrent", 2}}}});
  ASSERT_EQ(key.status, 201u) << key.body;
  const std::string key_path = "/v2/api-keys/" + std::to_string(Api::Obj(key).at("id").as_int64());
  EXPECT_EQ(member
                .Call(verb::patch, key_path,
                      json::object{{"limits", json::object{{"max_concurrent", 3}}}})
                .status,
            200u);
  Api viewer = Member("viewer", "viewer");
  EXPECT_EQ(viewer
                .Call(verb::patch, key_path,
                      json::object{{"limits", json::object{{"max_concurrent", nullptr}}}})
                .status,
            403u);
  EXPECT_EQ(Limits(key_path).at("max_concurrent"), json::value(3));
}

}  // namespace
}  // namespace segma::api
