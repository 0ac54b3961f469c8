// /v2/backends through REST against an in-process ServerApp: built-ins listed read-only, custom
// backends created, validated, updated and deleted, versions added to built-in and custom
// backends, models refused for unknown backends, and backends in use kept.

#include <gtest/gtest.h>

#include "api/api_server_test_base.h"

namespace segma::api {
namespace {

using boost::beast::http::verb;
using segma::testing::Api;

class BackendsApiTest : public ApiServerTest {
 protected:
  static json::object Custom(const std::string& name) {
    return json::object{
        {"name", name},
        {"versions",
         json::object{
             {"1.0", json::object{{"command", json::array{"/opt/my-engine", "--port", "{{port}}",
                                                          "--model", "{{model_path}}"}}}}}},
        {"health_path", "/ready"},
        {"model_formats", json::array{"gguf"}}};
  }

  static std::string ErrorMessage(const http::ClientResponse& r) {
    json::object o = Api::Obj(r);
    if (!o.contains("error")) return "";
    return std::string(o.at("error").at("message").as_string());
  }

  json::object Model(const std::string& name, const std::string& backend,
                     const std::string& version = "") {
    json::object m{{"name", name},
                   {"project_id", project_},
                   {"backend", backend},
                   {"replicas", 0},
                   {"source", json::object{{"type", "simulated"}, {"params_b", 1}}}};
    if (!version.empty()) m["backend_version"] = version;
    return m;
  }
};

TEST_F(BackendsApiTest, BuiltInsAreListedAndReadOnly) {
  auto list = admin_.Get("/v2/backends");
  ASSERT_EQ(list.status, 200u) << list.body;
  std::vector<std::string> names;
  const json::object listed = Api::Obj(list);
  for (const auto& item : listed.at("items").as_array()) {
    names.emplace_back(item.at("name").as_string());
    EXPECT_TRUE(item.at("built_in").as_bool());
  }
  EXPECT_EQ(names,
            (std::vector<std::string>{"llama.cpp", "vllm", "sglang", "tensorrt-llm", "simulator"}));
  auto llama = Api::Obj(admin_.Get("/v2/backends/llama.cpp"));
  EXPECT_EQ(llama.at("versions").at("3.21.1").at("command").as_array()[0].as_string(),
            "llama-server");

  auto patch =
      admin_.Call(verb::patch, "/v2/backends/llama.cpp", json::object{{"health_path", "/x"}});
  EXPECT_EQ(patch.status, 409u) << patch.body;
  EXPECT_NE(ErrorMessage(patch).find("built in"), std::string::npos) << patch.body;
  auto del = admin_.Call(verb::delete_, "/v2/backends/vllm");
  EXPECT_EQ(del.status, 409u) << del.body;
  auto clash = admin_.Post("/v2/backends", Custom("vllm"));
  EXPECT_EQ(clash.status, 409u) << clash.body;
  EXPECT_NE(ErrorMessage(clash).find("built in"), std::string::npos) << clash.body;
  EXPECT_EQ(admin_.Get("/v2/backends/nope").status, 404u);
}

TEST_F(BackendsApiTest, ListPagesAndSearches) {
  auto names_of = [&](const std::string& query, int64_t* total) {
    auto r = admin_.Get("/v2/backends" + query);
    EXPECT_EQ(r.status, 200u) << r.body;
    const json::object o = Api::Obj(r);
    *total = o.at("pagination").at("total").as_int64();
    std::vector<std::string> names;
    for (const auto& item : o.at("items").as_array())
      names.emplace_back(item.at("name").as_string());
    return names;
  };
  int64_t total = 0;
  EXPECT_EQ(names_of("?page=2&per_page=2", &total),
            (std::vector<std::string>{"sglang", "tensorrt-llm"}));
  EXPECT_EQ(total, 5);
  EXPECT_EQ(names_of("?page=3&per_page=2", &total), (std::vector<std::string>{"simulator"}));
  EXPECT_EQ(names_of("?page=4&per_page=2", &total), std::vector<std::string>{});
  EXPECT_EQ(total, 5);
  EXPECT_EQ(names_of("?q=LLaMA", &total), (std::vector<std::string>{"llama.cpp"}));
  EXPECT_EQ(total, 1);
}

TEST_F(BackendsApiTest, CustomBackendLifecycle) {
  auto created = admin_.Post("/v2/backends", Custom("my-engine"));
  ASSERT_EQ(created.status, 201u) << created.body;
  EXPECT_FALSE(Api::Obj(created).at("built_in").as_bool());
  EXPECT_EQ(Api::Obj(created).at("default_version").as_string(), "1.0");
  auto again = admin_.Post("/v2/backends", Custom("my-engine"));
  EXPECT_EQ(again.status, 409u) << again.body;
  EXPECT_NE(ErrorMessage(again).find("already exists"), std::string::npos);

  auto got = Api::Obj(admin_.Get("/v2/backends/my-engine"));
  EXPECT_EQ(got.at("health_path").as_string(), "/ready");
  EXPECT_EQ(Api::Obj(admin_.Get("/v2/backends")).at("pagination").at("total").as_int64(), 6);
  EXPECT_EQ(Api::Obj(admin_.Get("/v2/backends?q=my-")).at("items").as_array().size(), 1u);

  auto patched =
      admin_.Call(verb::patch, "/v2/backends/my-engine", json::object{{"health_path", "/health"}});
  ASSERT_EQ(patched.status, 200u) << patched.body;
  EXPECT_EQ(Api::Obj(patched).at("health_path").as_string(), "/health");
  auto renamed =
      admin_.Call(verb::patch, "/v2/backends/my-engine", json::object{{"name", "other"}});
  EXPECT_EQ(renamed.status, 400u) << renamed.body;

  // A second version, then a model on it: the version and the backend are kept while used.
  auto v2 = admin_.Post(
      "/v2/backends/my-engine/versions",
      json::object{{"version", "2.0"}, {"command", json::array{"/opt/my-engine-2", "{{port}}"}}});
  ASSERT_EQ(v2.status, 201u) << v2.body;
  auto model = admin_.Post("/v2/models", Model("m", "my-engine", "2.0"));
  ASSERT_EQ(model.status, 201u) << model.body;
  auto del_version = admin_.Call(verb::delete_, "/v2/backends/my-engine/versions/2.0");
  EXPECT_EQ(del_version.status, 409u) << del_version.body;
  EXPECT_NE(ErrorMessage(del_version).find("used by model 'm'"), std::string::npos)
      << del_version.body;
  auto del = admin_.Call(verb::delete_, "/v2/backends/my-engine");
  EXPECT_EQ(del.status, 409u) << del.body;
  EXPECT_NE(ErrorMessage(del).find("used by model 'm'"), std::string::npos) << del.body;
  EXPECT_EQ(admin_.Get("/v2/backends/my-engine").status, 200u) << "nothing deleted";

  // Once the model is gone the backend goes too.
  const int64_t model_id = Api::Obj(model).at("id").as_int64();
  ASSERT_EQ(admin_.Call(verb::delete_, "/v2/models/" + std::to_string(model_id)).status, 204u);
  EXPECT_EQ(admin_.Call(verb::delete_, "/v2/backends/my-engine/versions/2.0").status, 204u);
  EXPECT_EQ(admin_.Call(verb::delete_, "/v2/backends/my-engine/versions/1.0").status, 409u)
      << "the default version stays";
  EXPECT_EQ(admin_.Call(verb::delete_, "/v2/backends/my-engine").status, 204u);
  EXPECT_EQ(admin_.Get("/v2/backends/my-engine").status, 404u);
}

TEST_F(BackendsApiTest, InvalidDefinitionsAreRefusedWithTheField) {
  struct Case {
    json::object body;
    std::string message;
  };
  json::object unknown_var = Custom("bad");
  unknown_var["versions"] =
      json::object{{"1", json::object{{"command", json::array{"/bin/x", "{{no_such_var}}"}}}}};
  json::object unbalanced = Custom("bad");
  unbalanced["versions"] =
      json::object{{"1", json::object{{"command", json::array{"/bin/x", "{{port"}}}}};
  json::object empty_command = Custom("bad");
  empty_command["versions"] = json::object{{"1", json::object{{"command", json::array{}}}}};
  json::object bad_health = Custom("bad");
  bad_health["health_path"] = "health";
  json::object bad_format = Custom("bad");
  bad_format["model_formats"] = json::array{"onnx"};
  json::object unknown_field = Custom("bad");
  unknown_field["colour"] = "red";
  json::object bad_name = Custom("bad name");
  for (const Case& c : std::vector<Case>{{unknown_var, "unknown template variable 'no_such_var'"},
                                         {unbalanced, "unterminated"},
                                         {empty_command, "must start with the executable"},
                                         {bad_health, "health_path"},
                                         {bad_format, "onnx"},
                                         {unknown_field, "colour"},
                                         {bad_name, "name"}}) {
    auto r = admin_.Post("/v2/backends", c.body);
    EXPECT_EQ(r.status, 400u) << json::serialize(c.body) << " " << r.body;
    EXPECT_NE(ErrorMessage(r).find(c.message), std::string::npos) << r.body;
  }
  EXPECT_EQ(Api::Obj(admin_.Get("/v2/backends")).at("pagination").at("total").as_int64(), 5)
      << "nothing half-written";
  auto not_json = admin_.Call(verb::post, "/v2/backends", json::value("x"));
  EXPECT_EQ(not_json.status, 400u);
}

TEST_F(BackendsApiTest, VersionsAddedToBuiltInsAndModelsCheckedAgainstThem) {
  auto model = admin_.Post("/v2/models", Model("m1", "no-such-backend"));
  EXPECT_EQ(model.status, 400u) << model.body;
  EXPECT_NE(ErrorMessage(model).find("backend 'no-such-backend' does not exist"),
            std::string::npos);
  auto no_version = admin_.Post("/v2/models", Model("m1", "llama.cpp", "9.9"));
  EXPECT_EQ(no_version.status, 400u) << no_version.body;
  EXPECT_NE(ErrorMessage(no_version).find("no version '9.9'"), std::string::npos);

  auto added =
      admin_.Post("/v2/backends/llama.cpp/versions",
                  json::object{{"version", "mine"},
                               {"command", json::array{"/opt/llama/llama-server", "-m",
                                                       "{{model_path}}", "--port", "{{port}}"}}});
  ASSERT_EQ(added.status, 201u) << added.body;
  auto llama = Api::Obj(admin_.Get("/v2/backends/llama.cpp"));
  EXPECT_TRUE(llama.at("versions").as_object().contains("mine"));
  EXPECT_TRUE(llama.at("versions").as_object().contains("3.21.1"));
  EXPECT_EQ(llama.at("custom_versions").as_array().size(), 1u);
  EXPECT_EQ(admin_
                .Post("/v2/backends/llama.cpp/versions",
                      json::object{{"version", "3.21.1"}, {"command", json::array{"/bin/x"}}})
                .status,
            409u);
  EXPECT_EQ(admin_.Call(verb::delete_, "/v2/backends/llama.cpp/versions/3.21.1").status, 409u);

  auto on_mine = admin_.Post("/v2/models", Model("m2", "llama.cpp", "mine"));
  ASSERT_EQ(on_mine.status, 201u) << on_mine.body;
  EXPECT_EQ(admin_.Call(verb::delete_, "/v2/backends/llama.cpp/versions/mine").status, 409u);
  ASSERT_EQ(admin_
                .Call(verb::delete_,
                      "/v2/models/" + std::to_string(Api::Obj(on_mine).at("id").as_int64()))
                .status,
            204u);
  EXPECT_EQ(admin_.Call(verb::delete_, "/v2/backends/llama.cpp/versions/mine").status, 204u);
  EXPECT_EQ(Api::Obj(admin_.Get("/v2/backends/llama.cpp")).at("custom_versions").as_array().size(),
            0u);
}

}  // namespace
}  // namespace segma::api
