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

TEST(IdentityTest, LimitsParseStrictlyAndRoundTrip) {
  auto parse = [](std::string_view text) {
    auto v = ParseJson(text);
    EXPECT_TRUE(v.ok()) << text;
    return ParseLimits(*v);
  };
  auto l = parse(R"({"requests_per_minute": 2, "tokens_per_day": 0, "max_concurrent": null})");
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->requests_per_minute, 2);
  EXPECT_EQ(l->tokens_per_day, 0);
  EXPECT_FALSE(l->max_concurrent);
  EXPECT_FALSE(l->unlimited());
  EXPECT_TRUE(parse("null")->unlimited());
  EXPECT_TRUE(parse("{}")->unlimited());
  EXPECT_EQ(EncodeLimits(Limits{}), "");

  // Stored form: only the limited fields; reads back equal.
  const std::string stored = EncodeLimits(*l);
  EXPECT_EQ(stored.find("max_concurrent"), std::string::npos);
  EXPECT_EQ(parse(stored).value(), *l);
  json::object view = ToJson(*l);
  EXPECT_TRUE(view.at("max_concurrent").is_null());
  EXPECT_EQ(view.at("requests_per_minute"), json::value(2));

  struct Bad {
    const char* body;
    const char* message;
  };
  for (const Bad& b : {
           Bad{R"({"rpm": 1})", "unknown field 'limits.rpm'"},
           Bad{R"({"tokens_per_day": -1})", "limits.tokens_per_day must be an integer >= 0"},
           Bad{R"({"tokens_per_minute": 1.5})", "limits.tokens_per_minute must be an integer"},
           Bad{R"({"max_concurrent": "3"})", "limits.max_concurrent must be an integer"},
           Bad{R"({"tokens_per_month": 18446744073709551615})",
               "limits.tokens_per_month must be an integer"},
           Bad{"[1]", "limits must be an object or null"},
           Bad{"5", "limits must be an object or null"},
       }) {
    auto r = parse(b.body);
    ASSERT_FALSE(r.ok()) << b.body;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << b.body;
    EXPECT_NE(r.status().message().find(b.message), std::string::npos)
        << b.body << " -> " << r.status().message();
  }

  // Merge patch semantics.
  Limits current;
  current.requests_per_minute = 5;
  current.tokens_per_day = 100;
  auto patch =
      ParseLimitsPatch(*ParseJson(R"({"requests_per_minute": null, "max_concurrent": 3})"));
  ASSERT_TRUE(patch.ok());
  Limits next = patch->ApplyTo(current);
  EXPECT_FALSE(next.requests_per_minute);
  EXPECT_EQ(next.max_concurrent, 3);
  EXPECT_EQ(next.tokens_per_day, 100);
  EXPECT_TRUE(ParseLimitsPatch(json::value(nullptr))->ApplyTo(current).unlimited());
}

}  // namespace
}  // namespace segma::types
