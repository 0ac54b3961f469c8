#include "auth/api_key_service.h"

#include <string>

#include <gtest/gtest.h>

#include "auth/auth_fixture.h"

namespace segma::auth {
namespace {

using std::chrono::hours;
using types::ApiKeyScope;
using types::ProjectRole;

class ApiKeyServiceTest : public AuthFixture {
 protected:
  void SetUp() override {
    AuthFixture::SetUp();
    keys_ = std::make_unique<ApiKeyService>(*store_, clock_);
    admin_ = MakeUser("root", /*admin=*/true);
    alice_ = MakeUser("alice");
    bob_ = MakeUser("bob");
    types::Project p;
    p.name = "finance-ai";
    project_ = *store_->CreateProject(p);
    p.name = "other";
    other_ = *store_->CreateProject(p);
    ASSERT_TRUE(store_->AddProjectMember(project_.id, alice_.id, ProjectRole::kMember).ok());
    ASSERT_TRUE(store_->AddProjectMember(project_.id, bob_.id, ProjectRole::kProjectAdmin).ok());
  }

  CreateApiKeyRequest Request(const std::string& name) {
    CreateApiKeyRequest r;
    r.name = name;
    r.project_id = project_.id;
    r.scope = ApiKeyScope::kAll;
    r.expires_at = clock_.Now() + hours(24);
    return r;
  }

  std::unique_ptr<ApiKeyService> keys_;
  types::User admin_, alice_, bob_;
  types::Project project_, other_;
};

TEST_F(ApiKeyServiceTest, SecretShownOnceAndOnlyItsHashStored) {
  auto created = keys_->Create(PrincipalOf(alice_), Request("ci"));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  const std::string secret = created->secret;
  EXPECT_TRUE(secret.starts_with("sk-segma-"));
  EXPECT_GE(secret.size(), 9u + 40u);
  EXPECT_EQ(created->key.prefix, secret.substr(0, 12));
  EXPECT_EQ(created->key.user_id, alice_.id);
  EXPECT_NE(created->key.secret_hash, secret);

  auto json = ToJsonString(types::ToJson(created->key));
  EXPECT_EQ(json.find(secret), std::string::npos);
  EXPECT_EQ(json.find(created->key.secret_hash), std::string::npos);

  // Neither the database nor its WAL holds the secret.
  store_.reset();  // checkpoint and close
  identity_.reset();
  const std::string db = ReadFile(data_dir_ + "/segma.db") + ReadFile(data_dir_ + "/segma.db-wal");
  ASSERT_FALSE(db.empty());
  EXPECT_EQ(db.find(secret), std::string::npos);
  EXPECT_EQ(db.find(secret.substr(9)), std::string::npos);
  OpenStore();
  auto p = identity_->Authenticate(secret);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->kind, Principal::Kind::kApiKey);
  EXPECT_EQ(p->user_id, alice_.id);
  ASSERT_TRUE(p->api_key.has_value());
  EXPECT_EQ(p->api_key->project_id, project_.id);
  EXPECT_EQ(p->RoleIn(project_.id), ProjectRole::kMember);
  EXPECT_TRUE(store_->GetApiKey(created->key.id)->last_used_at.has_value());
}

TEST_F(ApiKeyServiceTest, ExpiredAndRevokedKeysAreRefused) {
  auto created = keys_->Create(PrincipalOf(alice_), Request("short"));
  ASSERT_TRUE(created.ok());
  EXPECT_TRUE(identity_->Authenticate(created->secret).ok());
  clock_.Advance(hours(25));
  EXPECT_EQ(identity_->Authenticate(created->secret).status(),
            UnauthenticatedError("API key expired"));

  auto other = keys_->Create(PrincipalOf(alice_), Request("revoked"));
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(keys_->Revoke(PrincipalOf(alice_), other->key.id).ok());
  EXPECT_EQ(identity_->Authenticate(other->secret).status(),
            UnauthenticatedError("API key revoked"));
}

TEST_F(ApiKeyServiceTest, KeyOfDisabledOwnerIsRefused) {
  auto created = keys_->Create(PrincipalOf(alice_), Request("ci"));
  ASSERT_TRUE(created.ok());
  store::UserPatch off;
  off.is_active = false;
  ASSERT_TRUE(store_->UpdateUser(alice_.id, off).ok());
  EXPECT_EQ(identity_->Authenticate(created->secret).status().code(), StatusCode::kUnauthenticated);
}

TEST_F(ApiKeyServiceTest, Validation) {
  Principal alice = PrincipalOf(alice_);
  auto r = Request("bad name!");
  EXPECT_EQ(keys_->Create(alice, r).status().code(), StatusCode::kInvalidArgument);
  r = Request(std::string(65, 'k'));
  EXPECT_EQ(keys_->Create(alice, r).status().code(), StatusCode::kInvalidArgument);
  r = Request("models");
  r.allowed_models = std::vector<std::string>{"chat", ""};
  EXPECT_EQ(keys_->Create(alice, r).status().code(), StatusCode::kInvalidArgument);
  r = Request("past");
  r.expires_at = clock_.Now() - hours(1);
  EXPECT_EQ(keys_->Create(alice, r).status().code(), StatusCode::kInvalidArgument);
  r = Request("nowhere");
  r.project_id = 999;
  EXPECT_EQ(keys_->Create(alice, r).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(keys_->Create(PrincipalOf(admin_), r).status().code(), StatusCode::kNotFound);
  r = Request("outsider");
  r.project_id = other_.id;
  EXPECT_EQ(keys_->Create(alice, r).status().code(), StatusCode::kPermissionDenied);
  r = Request("dup");
  ASSERT_TRUE(keys_->Create(alice, r).ok());
  EXPECT_EQ(keys_->Create(alice, r).status().code(), StatusCode::kAlreadyExists);
  r = Request("no-expiry");
  r.expires_at.reset();
  EXPECT_TRUE(keys_->Create(alice, r).ok());
}

TEST_F(ApiKeyServiceTest, ListingIsScopedToMembership) {
  ASSERT_TRUE(keys_->Create(PrincipalOf(alice_), Request("a")).ok());
  auto other_req = Request("elsewhere");
  other_req.project_id = other_.id;
  ASSERT_TRUE(keys_->Create(PrincipalOf(admin_), other_req).ok());

  auto admin_list = keys_->List(PrincipalOf(admin_), store::ListOptions{});
  ASSERT_TRUE(admin_list.ok());
  EXPECT_EQ(admin_list->total, 2);
  auto alice_list = keys_->List(PrincipalOf(alice_), store::ListOptions{});
  ASSERT_TRUE(alice_list.ok());
  ASSERT_EQ(alice_list->total, 1);
  EXPECT_EQ(alice_list->items[0].name, "a");
  store::ListOptions forbidden;
  forbidden.project_id = other_.id;
  EXPECT_EQ(keys_->List(PrincipalOf(alice_), forbidden).status().code(),
            StatusCode::kPermissionDenied);
}

TEST_F(ApiKeyServiceTest, RevokeRights) {
  auto bobs = keys_->Create(PrincipalOf(bob_), Request("bobs"));
  ASSERT_TRUE(bobs.ok());
  auto alices = keys_->Create(PrincipalOf(alice_), Request("alices"));
  ASSERT_TRUE(alices.ok());
  // A member cannot revoke another's key; a project-admin can revoke any key of the project.
  EXPECT_EQ(keys_->Revoke(PrincipalOf(alice_), bobs->key.id).status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_TRUE(keys_->Revoke(PrincipalOf(bob_), alices->key.id).ok());
  // Outsiders learn nothing.
  types::User carol = MakeUser("carol");
  EXPECT_EQ(keys_->Revoke(PrincipalOf(carol), bobs->key.id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(keys_->Get(PrincipalOf(carol), bobs->key.id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(keys_->Revoke(PrincipalOf(bob_), 4242).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace segma::auth
