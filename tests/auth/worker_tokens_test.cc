#include "auth/worker_tokens.h"

#include <string>

#include <gtest/gtest.h>

#include "auth/auth_fixture.h"

namespace segma::auth {
namespace {

class WorkerTokensTest : public AuthFixture {
 protected:
  void SetUp() override {
    AuthFixture::SetUp();
    types::Cluster c;
    c.name = "default";
    c.is_default = true;
    c.registration_token = "cluster-secret-token";
    cluster_ = *store_->CreateCluster(c);
    tokens_ = std::make_unique<WorkerTokens>(*store_);
  }
  types::Cluster cluster_;
  std::unique_ptr<WorkerTokens> tokens_;
};

TEST_F(WorkerTokensTest, RegisterAndAuthenticate) {
  EXPECT_EQ(tokens_->RegisterWorker("wrong", "gpu-1", "10.0.0.1", 10150, {}).status(),
            UnauthenticatedError("invalid registration token"));
  EXPECT_EQ(tokens_->RegisterWorker("", "gpu-1", "10.0.0.1", 10150, {}).status().code(),
            StatusCode::kUnauthenticated);

  auto r =
      tokens_->RegisterWorker("cluster-secret-token", "gpu-1", "10.0.0.1", 10150, {{"zone", "a"}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->worker_token.starts_with("segma_wt_"));
  EXPECT_EQ(r->worker.cluster_id, cluster_.id);
  EXPECT_NE(r->worker.token_hash, r->worker_token);

  auto p = identity_->Authenticate(r->worker_token);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->kind, Principal::Kind::kWorker);
  EXPECT_EQ(p->worker_id, r->worker.id);
  EXPECT_EQ(p->cluster_id, cluster_.id);

  // Re-registration issues a new token and invalidates the old one.
  auto again = tokens_->RegisterWorker("cluster-secret-token", "gpu-1", "10.0.0.1", 10150, {});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->worker.id, r->worker.id);
  EXPECT_NE(again->worker_token, r->worker_token);
  EXPECT_FALSE(identity_->Authenticate(r->worker_token).ok());
  EXPECT_TRUE(identity_->Authenticate(again->worker_token).ok());
}

TEST_F(WorkerTokensTest, ValidatesInput) {
  const std::string t = "cluster-secret-token";
  EXPECT_EQ(tokens_->RegisterWorker(t, "../evil", "h", 1, {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(tokens_->RegisterWorker(t, "w", "", 1, {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(tokens_->RegisterWorker(t, "w", "h", 0, {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(tokens_->RegisterWorker(t, "w", "h", 70000, {}).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace segma::auth
