// GET /v2/usage with buckets, GPU time and cost, and the admin-only price table (GET/PUT
// /v2/prices): RBAC (a viewer reads usage with its cost but not the prices), strict validation
// in the API's error format with nothing written, JSON and CSV that carry the same rows.

#include <gtest/gtest.h>

#include "api/api_server_test_base.h"

namespace segma::api {
namespace {

using boost::beast::http::verb;
using segma::testing::Api;

class UsageApiTest : public ApiServerTest {
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

  http::ClientResponse PutPrices(const Api& api, const json::value& body) {
    return api.Call(verb::put, "/v2/prices", body);
  }

  // `n` records of route `model` at `time`, each 1,000 prompt and 500 completion tokens.
  void Record(const std::string& model, Timestamp time, int n) {
    std::vector<store::UsageRecord> batch;
    for (int i = 0; i < n; ++i) {
      store::UsageRecord r;
      r.request_id = model + std::to_string(ToUnixMillis(time)) + "-" + std::to_string(i);
      r.time = time;
      r.project_id = project_;
      r.model = model;
      r.prompt_tokens = 1000;
      r.completion_tokens = 500;
      r.status = 200;
      batch.push_back(std::move(r));
    }
    ASSERT_TRUE(app_->store().InsertUsageRecords(batch).ok());
  }

  json::object GoodPrices() {
    return json::object{
        {"currency", "TWD"},
        {"items",
         json::array{
             json::object{{"unit", "prompt_1m_tokens"}, {"name", "chat"}, {"price", 10}},
             json::object{{"unit", "completion_1m_tokens"}, {"name", "chat"}, {"price", 30.5}},
             json::object{{"unit", "gpu_hour"}, {"name", "NVIDIA H200"}, {"price", 120}}}}};
  }
};

TEST_F(UsageApiTest, PricesAreAdminOnlyAndValidated) {
  auto put = PutPrices(admin_, GoodPrices());
  ASSERT_EQ(put.status, 200u) << put.body;
  json::object got = Api::Obj(admin_.Get("/v2/prices"));
  EXPECT_EQ(got.at("currency").as_string(), "TWD");
  ASSERT_EQ(got.at("items").as_array().size(), 3u);
  EXPECT_EQ(got.at("items").as_array()[2].at("unit").as_string(), "prompt_1m_tokens");

  Api viewer = Member("vera", "viewer");
  EXPECT_EQ(viewer.Get("/v2/prices").status, 403u);
  EXPECT_EQ(PutPrices(viewer, GoodPrices()).status, 403u);
  Api project_admin = Member("pat", "project-admin");
  EXPECT_EQ(PutPrices(project_admin, GoodPrices()).status, 403u);

  struct Bad {
    json::value body;
    std::string message;
  };
  const std::vector<Bad> bad = {
      {json::object{{"items", json::array{json::object{
                                  {"unit", "gpu_hour"}, {"name", "A100"}, {"price", -1}}}}},
       "items[0].price must be a non-negative number"},
      {json::object{{"items", json::array{json::object{
                                  {"unit", "per_token"}, {"name", "chat"}, {"price", 1}}}}},
       "items[0].unit"},
      {json::object{{"items", json::array{json::object{{"unit", "gpu_hour"}, {"price", 1}}}}},
       "items[0].name"},
      {json::object{{"items", json::array{json::object{
                                  {"unit", "gpu_hour"}, {"name", "A100"}, {"price", "1"}}}}},
       "items[0].price"},
      {json::object{{"currency", "dollars"}, {"items", json::array{}}}, "currency"},
      {json::object{{"currency", "USD"}}, "items"},
      {json::object{{"items", json::array{}}, {"colour", "red"}}, "colour"},
  };
  for (const Bad& b : bad) {
    auto r = PutPrices(admin_, b.body);
    EXPECT_EQ(r.status, 400u) << r.body;
    EXPECT_NE(ErrorMessage(r).find(b.message), std::string::npos)
        << ErrorMessage(r) << " lacks " << b.message;
  }
  // Nothing of a refused table was written.
  EXPECT_EQ(Api::Obj(admin_.Get("/v2/prices")), got);
}

TEST_F(UsageApiTest, BucketsCostAndCsv) {
  ASSERT_EQ(PutPrices(admin_, GoodPrices()).status, 200u);
  const Timestamp day1 = FromUnixMillis(1'740'823'200'000);  // 2025-03-01T10:00:00Z
  Record("chat", day1, 4);
  Record("chat", day1 + std::chrono::hours(24), 2);
  Record("embed", day1 + std::chrono::hours(25), 1);
  const std::string range =
      "&from=2025-03-01T00:00:00Z&to=2025-03-03T00:00:00Z&project_id=" + std::to_string(project_);
  Api viewer = Member("vera", "viewer");
  auto r = viewer.Get("/v2/usage?group_by=route&bucket=day" + range);
  ASSERT_EQ(r.status, 200u) << r.body;
  json::object o = Api::Obj(r);
  EXPECT_EQ(o.at("bucket").as_string(), "day");
  EXPECT_EQ(o.at("currency").as_string(), "TWD");
  const json::array& items = o.at("items").as_array();
  ASSERT_EQ(items.size(), 3u) << r.body;
  EXPECT_EQ(std::string(items[0].at("bucket").as_string()).substr(0, 19), "2025-03-01T00:00:00");
  EXPECT_EQ(items[0].at("route").as_string(), "chat");
  EXPECT_EQ(items[0].at("requests").as_int64(), 4);
  // 4,000 prompt tokens x 10/1M + 2,000 completion x 30.5/1M.
  EXPECT_DOUBLE_EQ(items[0].at("cost").as_double(), 0.04 + 0.061);
  EXPECT_EQ(std::string(items[1].at("bucket").as_string()).substr(0, 19), "2025-03-02T00:00:00");
  EXPECT_EQ(items[1].at("route").as_string(), "chat");
  EXPECT_EQ(items[2].at("route").as_string(), "embed");
  EXPECT_DOUBLE_EQ(items[2].at("cost").as_double(), 0.0);  // no price for embed
  EXPECT_DOUBLE_EQ(items[2].at("gpu_hours").as_double(), 0.0);
  EXPECT_EQ(o.at("totals").at("requests").as_int64(), 7);
  EXPECT_EQ(o.at("totals").at("prompt_tokens").as_int64(), 7000);

  // The CSV carries the same rows and columns.
  auto csv = viewer.Get("/v2/usage?group_by=route&bucket=day&format=csv" + range);
  ASSERT_EQ(csv.status, 200u);
  const std::string header =
      "bucket,route,requests,errors,prompt_tokens,completion_tokens,cached_tokens,cut_short,"
      "gpu_hours,vram_gib_hours,cost\n";
  ASSERT_EQ(csv.body.substr(0, header.size()), header) << csv.body;
  EXPECT_EQ(std::count(csv.body.begin(), csv.body.end(), '\n'), 4);
  EXPECT_NE(csv.body.find(",chat,4,0,4000,2000,0,0,0,0,0.10"), std::string::npos) << csv.body;

  // Without a bucket: one row per route, no bucket column.
  auto whole = Api::Obj(viewer.Get("/v2/usage?group_by=route" + range));
  ASSERT_EQ(whole.at("items").as_array().size(), 2u);
  EXPECT_FALSE(whole.at("items").as_array()[0].as_object().contains("bucket"));
  EXPECT_EQ(whole.at("items").as_array()[0].at("requests").as_int64(), 6);
}

TEST_F(UsageApiTest, BadUsageParametersAre400) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"/v2/usage?bucket=week", "bucket must be one of hour, day, month"},
      {"/v2/usage?group_by=colour", "group_by must be one of"},
      {"/v2/usage?bucket=hour&from=2020-01-01T00:00:00Z&to=2025-01-01T00:00:00Z",
       "bucket=hour covers at most 400 days"},
      {"/v2/usage?from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z", "to must be after from"},
      {"/v2/usage?format=xml", "format must be json or csv"},
  };
  for (const auto& [path, message] : bad) {
    auto r = admin_.Get(path);
    EXPECT_EQ(r.status, 400u) << path << ": " << r.body;
    EXPECT_NE(ErrorMessage(r).find(message), std::string::npos) << path << ": " << r.body;
  }
}

}  // namespace
}  // namespace segma::api
