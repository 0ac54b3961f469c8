#include "types/identity.h"

#include <string>

#include <gtest/gtest.h>

namespace segma::types {
namespace {

TEST(IdentityTest, RoleAndScopeNamesRoundTrip) {
  for (ProjectRole r : {ProjectRole::kViewer, ProjectRole::kMember, ProjectRole::kProjectAdmin}) {
    EXPECT_EQ(ParseProjectRole(ProjectRoleName(r)), r);
  }
  EXPECT_EQ(ProjectRoleName(ProjectRole::kProjectAdmin), "project-admin");
  EXPECT_FALSE(ParseProjectRole("admin").has_value());
  EXPECT_LT(ProjectRole::kViewer, ProjectRole::kMember);
  EXPECT_LT(ProjectRole::kMember, ProjectRole::kProjectAdmin);
  for (ApiKeyScope s : {ApiKeyScope::kInference, ApiKeyScope::kManagement, ApiKeyScope::kAll}) {
    EXPECT_EQ(ParseApiKeyScope(ApiKeyScopeName(s)), s);
  }
  EXPECT_FALSE(ParseApiKeyScope("ALL").has_value());
}

TEST(IdentityTest, JsonViewsHideSecrets) {
  User u;
  u.id = 1;
  u.username = "alice";
  u.password_hash = "$argon2id$secret";
  const std::string user_json = ToJsonString(ToJson(u));
  EXPECT_EQ(user_json.find("argon2id"), std::string::npos);
  EXPECT_EQ(user_json.find("password_hash"), std::string::npos);

  ApiKey k;
  k.secret_hash = "deadbeef";
  k.prefix = "sk-segma-abc";
  json::object kj = ToJson(k);
  EXPECT_EQ(ToJsonString(kj).find("deadbeef"), std::string::npos);
  EXPECT_EQ(kj.at("allowed_models").as_string(), "*");
  EXPECT_TRUE(kj.at("expires_at").is_null());
  k.allowed_models = std::vector<std::string>{"chat"};
  k.expires_at = FromUnixMillis(1'800'000'000'123);
  kj = ToJson(k);
  EXPECT_EQ(kj.at("allowed_models").as_array().size(), 1u);
  EXPECT_EQ(kj.at("expires_at").as_string(), "2027-01-15T08:00:00.123Z");

  Worker w;
  w.token_hash = "cafebabe";
  w.labels["zone"] = "a";
  json::object wj = ToJson(w);
  EXPECT_EQ(ToJsonString(wj).find("cafebabe"), std::string::npos);
  EXPECT_EQ(wj.at("state").as_string(), "REGISTERING");
  EXPECT_EQ(wj.at("labels").at("zone").as_string(), "a");

  Cluster c;
  c.registration_token = "reg";
  EXPECT_EQ(ToJson(c).at("registration_token").as_string(), "reg");

  Project p;
  p.max_gpus = 1.5;
  json::object pj = ToJson(p);
  EXPECT_EQ(pj.at("max_gpus").as_double(), 1.5);
  EXPECT_TRUE(pj.at("max_instances").is_null());
}

}  // namespace
}  // namespace segma::types
