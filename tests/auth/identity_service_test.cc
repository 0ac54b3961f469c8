#include "auth/identity_service.h"

#include <string>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "auth/auth_fixture.h"

namespace segma::auth {
namespace {

using std::chrono::hours;
using std::chrono::minutes;

class IdentityServiceTest : public AuthFixture {
 protected:
  std::string PasswordFile() { return data_dir_ + "/initial_admin_password"; }
};

TEST_F(IdentityServiceTest, BootstrapWithEnvPassword) {
  auto r = identity_->BootstrapAdmin(data_dir_, std::string("from-the-env"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ(**r, "from-the-env");
  EXPECT_FALSE(std::filesystem::exists(PasswordFile()));
  auto login = identity_->Login("admin", "from-the-env");
  ASSERT_TRUE(login.ok()) << login.status().ToString();
  EXPECT_TRUE(login->user.is_admin);
  EXPECT_FALSE(login->user.require_password_change);  // the operator chose it

  auto again = identity_->BootstrapAdmin(data_dir_, std::string("something-else"));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());
  EXPECT_EQ(identity_->BootstrapAdmin(data_dir_, std::string("short")).status().code(),
            StatusCode::kOk);  // an admin exists: nothing is validated or changed
}

TEST_F(IdentityServiceTest, BootstrapRejectsShortEnvPassword) {
  EXPECT_EQ(identity_->BootstrapAdmin(data_dir_, std::string("short")).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(IdentityServiceTest, BootstrapRandomPasswordFileWrittenOnce) {
  auto r = identity_->BootstrapAdmin(data_dir_, std::nullopt);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(r->has_value());
  const std::string password = **r;
  EXPECT_GE(password.size(), 20u);
  struct stat st {};
  ASSERT_EQ(stat(PasswordFile().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(ReadFile(PasswordFile()), password + "\n");
  auto login = identity_->Login("admin", password);
  ASSERT_TRUE(login.ok()) << login.status().ToString();
  // A printed password: the console makes the admin choose a new one first.
  EXPECT_TRUE(login->user.require_password_change);

  // Restart: a new store and service on the same data directory.
  OpenStore();
  auto again = identity_->BootstrapAdmin(data_dir_, std::nullopt);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());
  EXPECT_EQ(ReadFile(PasswordFile()), password + "\n");

  // The password never reaches the database in plain text.
  EXPECT_EQ(ReadFile(data_dir_ + "/segma.db").find(password), std::string::npos);
  EXPECT_EQ(ReadFile(data_dir_ + "/segma.db-wal").find(password), std::string::npos);

  // Changing the password removes the file.
  ASSERT_TRUE(
      identity_->ChangePassword(store_->GetUserByUsername("admin")->id, password, "a-new-password")
          .ok());
  EXPECT_FALSE(std::filesystem::exists(PasswordFile()));
  EXPECT_FALSE(store_->GetUserByUsername("admin")->require_password_change);
}

TEST_F(IdentityServiceTest, LoginAndAuthenticate) {
  types::User alice = MakeUser("alice");
  auto login = identity_->Login("alice", "password-1");
  ASSERT_TRUE(login.ok()) << login.status().ToString();
  EXPECT_TRUE(login->token.starts_with("segma_st."));
  EXPECT_EQ(login->expires_at, clock_.Now() + hours(24));
  auto p = identity_->Authenticate(login->token);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->kind, Principal::Kind::kUser);
  EXPECT_EQ(p->user_id, alice.id);
  EXPECT_EQ(p->username, "alice");
  EXPECT_GT(p->session_id, 0);
}

TEST_F(IdentityServiceTest, BadCredentialsLookTheSame) {
  MakeUser("alice");
  auto wrong = identity_->Login("alice", "wrong-password");
  auto unknown = identity_->Login("mallory", "password-1");
  EXPECT_EQ(wrong.status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(wrong.status(), unknown.status());
}

TEST_F(IdentityServiceTest, SignInLockoutByNameSparesAdmins) {
  MakeUser("alice");
  MakeUser("root", /*admin=*/true);
  const SignInContext from{"192.0.2.1", "test"};
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(identity_->Login("alice", "wrong", from).status().code(),
              StatusCode::kUnauthenticated);
    EXPECT_EQ(identity_->Login("root", "wrong", {"192.0.2.2", ""}).status().code(),
              StatusCode::kUnauthenticated);
  }
  Duration wait{};
  auto locked = identity_->Login("alice", "password-1", {"198.51.100.1", ""}, &wait);
  EXPECT_EQ(locked.status(),
            ResourceExhaustedError("too many failed sign-ins; try again in 15 minutes"));
  EXPECT_EQ(wait, minutes(15));
  // The admin's name is not locked; unknown names are counted like known ones (no tell).
  EXPECT_TRUE(identity_->Login("root", "password-1", {"198.51.100.1", ""}).ok());
  for (int i = 0; i < 5; ++i) (void)identity_->Login("ghost", "x", {"198.51.100.3", ""});
  EXPECT_EQ(identity_->Login("ghost", "x").status().code(), StatusCode::kResourceExhausted);
  clock_.Advance(minutes(14) + std::chrono::seconds(1));
  wait = {};
  EXPECT_EQ(identity_->Login("alice", "password-1", {}, &wait).status(),
            ResourceExhaustedError("too many failed sign-ins; try again in 1 minute"));
  EXPECT_EQ(wait, std::chrono::seconds(59));
  clock_.Advance(std::chrono::seconds(59));
  EXPECT_TRUE(identity_->Login("alice", "password-1", from).ok());
}

TEST_F(IdentityServiceTest, SessionsKeepTheirClientAndLastUse) {
  types::User alice = MakeUser("alice");
  auto login = identity_->Login("alice", "password-1", {"2001:db8::7", "curl/8.0"});
  ASSERT_TRUE(login.ok());
  auto p = identity_->Authenticate(login->token);
  ASSERT_TRUE(p.ok());
  auto session = store_->GetSession(p->session_id);
  ASSERT_TRUE(session.ok());
  EXPECT_EQ(session->client_address, "2001:db8::7");
  EXPECT_EQ(session->user_agent, "curl/8.0");
  ASSERT_TRUE(session->last_used_at.has_value());
  const Timestamp first_use = *session->last_used_at;
  // Written at most once a minute.
  clock_.Advance(std::chrono::seconds(30));
  ASSERT_TRUE(identity_->Authenticate(login->token).ok());
  EXPECT_EQ(*store_->GetSession(p->session_id)->last_used_at, first_use);
  clock_.Advance(std::chrono::seconds(30));
  ASSERT_TRUE(identity_->Authenticate(login->token).ok());
  EXPECT_EQ(*store_->GetSession(p->session_id)->last_used_at, clock_.Now());
}

TEST_F(IdentityServiceTest, PrincipalCarriesRequirePasswordChange) {
  NewUser u;
  u.username = "bob";
  u.password = "password-1";
  u.require_password_change = true;
  types::User bob = *identity_->CreateUser(u);
  auto login = identity_->Login("bob", "password-1");
  ASSERT_TRUE(login.ok());
  EXPECT_TRUE(identity_->Authenticate(login->token)->require_password_change);
  ASSERT_TRUE(identity_
                  ->ChangePassword(bob.id, "password-1", "password-2",
                                   identity_->Authenticate(login->token)->session_id)
                  .ok());
  EXPECT_FALSE(identity_->Authenticate(login->token)->require_password_change);
}

TEST_F(IdentityServiceTest, InactiveUserRefused) {
  types::User alice = MakeUser("alice");
  auto login = identity_->Login("alice", "password-1");
  ASSERT_TRUE(login.ok());
  store::UserPatch off;
  off.is_active = false;
  ASSERT_TRUE(store_->UpdateUser(alice.id, off).ok());
  EXPECT_EQ(identity_->Login("alice", "password-1").status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(identity_->Authenticate(login->token).status().code(), StatusCode::kUnauthenticated);
}

TEST_F(IdentityServiceTest, SessionExpiresWithTheClock) {
  MakeUser("alice");
  auto login = identity_->Login("alice", "password-1");
  ASSERT_TRUE(login.ok());
  clock_.Advance(hours(23));
  EXPECT_TRUE(identity_->Authenticate(login->token).ok());
  clock_.Advance(hours(1));
  auto expired = identity_->Authenticate(login->token);
  EXPECT_EQ(expired.status(), UnauthenticatedError("session expired"));
}

TEST_F(IdentityServiceTest, ConfigurableTtl) {
  MakeUser("alice");
  IdentityService short_lived(*store_, clock_, "test-signing-key", minutes(5));
  auto login = short_lived.Login("alice", "password-1");
  ASSERT_TRUE(login.ok());
  clock_.Advance(minutes(6));
  EXPECT_FALSE(short_lived.Authenticate(login->token).ok());
}

TEST_F(IdentityServiceTest, LogoutRevokes) {
  MakeUser("alice");
  auto login = identity_->Login("alice", "password-1");
  ASSERT_TRUE(login.ok());
  ASSERT_TRUE(identity_->Logout(login->token).ok());
  EXPECT_EQ(identity_->Authenticate(login->token).status(),
            UnauthenticatedError("session revoked"));
  EXPECT_EQ(identity_->Logout(login->token).code(), StatusCode::kUnauthenticated);
}

TEST_F(IdentityServiceTest, ForgedAndTamperedTokens) {
  MakeUser("alice");
  auto login = identity_->Login("alice", "password-1");
  ASSERT_TRUE(login.ok());
  const std::string& t = login->token;
  // segma_st.<id>.<expiry>.<mac>
  const size_t d1 = t.find('.');
  const size_t d2 = t.find('.', d1 + 1);
  const size_t d3 = t.find('.', d2 + 1);
  const std::string id = t.substr(d1 + 1, d2 - d1 - 1);
  const std::string expiry = t.substr(d2 + 1, d3 - d2 - 1);
  const std::string mac = t.substr(d3 + 1);

  std::string flipped = t;
  flipped.back() = flipped.back() == 'A' ? 'B' : 'A';
  const std::vector<std::string> bad = {
      "",
      "segma_st.",
      "segma_st.1",
      "segma_st.1.2",
      "segma_st.1.2.3",
      flipped,
      "segma_st." + std::to_string(std::stoll(id) + 1) + "." + expiry + "." + mac,
      "segma_st." + id + "." + std::to_string(std::stoll(expiry) + 3600000) + "." + mac,
      "segma_st.0" + id + "." + expiry + "." + mac,
      "segma_st.-1." + expiry + "." + mac,
      t + ".extra",
      " " + t,
      "Bearer " + t,
      "sk-segma-",
      "segma_wt_",
      "sk-segma-doesnotexist",
      "segma_wt_doesnotexist",
      std::string(10000, 'x'),
  };
  for (const std::string& token : bad) {
    auto r = identity_->Authenticate(token);
    EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated) << token;
  }

  // The same token under another signing key is worthless.
  IdentityService other(*store_, clock_, "another-key");
  EXPECT_EQ(other.Authenticate(t).status().code(), StatusCode::kUnauthenticated);
}

TEST_F(IdentityServiceTest, ChangePasswordRevokesOtherSessions) {
  types::User alice = MakeUser("alice");
  auto s1 = identity_->Login("alice", "password-1");
  auto s2 = identity_->Login("alice", "password-1");
  ASSERT_TRUE(s1.ok() && s2.ok());
  auto p1 = identity_->Authenticate(s1->token);
  ASSERT_TRUE(p1.ok());

  EXPECT_EQ(identity_->ChangePassword(alice.id, "wrong-one", "password-2", p1->session_id).code(),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(identity_->ChangePassword(alice.id, "password-1", "short", p1->session_id).code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(identity_->ChangePassword(alice.id, "password-1", "password-2", p1->session_id).ok());
  EXPECT_TRUE(identity_->Authenticate(s1->token).ok());
  EXPECT_EQ(identity_->Authenticate(s2->token).status().code(), StatusCode::kUnauthenticated);
  EXPECT_FALSE(identity_->Login("alice", "password-1").ok());
  EXPECT_TRUE(identity_->Login("alice", "password-2").ok());
}

TEST_F(IdentityServiceTest, ResetPasswordRevokesAllSessions) {
  types::User alice = MakeUser("alice");
  auto s1 = identity_->Login("alice", "password-1");
  ASSERT_TRUE(s1.ok());
  ASSERT_TRUE(identity_->ResetPassword(alice.id, "password-3", true).ok());
  EXPECT_FALSE(identity_->Authenticate(s1->token).ok());
  auto login = identity_->Login("alice", "password-3");
  ASSERT_TRUE(login.ok());
  EXPECT_TRUE(login->user.require_password_change);
}

TEST_F(IdentityServiceTest, CreateUserValidates) {
  NewUser u;
  u.username = "bad name";
  u.password = "password-1";
  EXPECT_EQ(identity_->CreateUser(u).status().code(), StatusCode::kInvalidArgument);
  u.username = "good";
  u.password = "short";
  EXPECT_EQ(identity_->CreateUser(u).status().code(), StatusCode::kInvalidArgument);
  MakeUser("taken");
  u.username = "taken";
  u.password = "password-1";
  EXPECT_EQ(identity_->CreateUser(u).status().code(), StatusCode::kAlreadyExists);
}

TEST_F(IdentityServiceTest, PrincipalCarriesProjectRoles) {
  types::User alice = MakeUser("alice");
  types::Project p;
  p.name = "p";
  auto project = store_->CreateProject(p);
  ASSERT_TRUE(project.ok());
  ASSERT_TRUE(store_->AddProjectMember(project->id, alice.id, types::ProjectRole::kMember).ok());
  auto login = identity_->Login("alice", "password-1");
  auto principal = identity_->Authenticate(login->token);
  ASSERT_TRUE(principal.ok());
  EXPECT_EQ(principal->RoleIn(project->id), types::ProjectRole::kMember);
}

TEST(SigningKeyTest, CreatedOncePrivateAndStable) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "segma-key-XXXXXX").string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  auto k1 = LoadOrCreateSigningKey(tmpl);
  ASSERT_TRUE(k1.ok()) << k1.status().ToString();
  EXPECT_GE(k1->size(), 40u);
  struct stat st {};
  ASSERT_EQ(stat((tmpl + "/session.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto k2 = LoadOrCreateSigningKey(tmpl);
  ASSERT_TRUE(k2.ok());
  EXPECT_EQ(*k1, *k2);
  chmod((tmpl + "/session.key").c_str(), 0644);
  EXPECT_EQ(LoadOrCreateSigningKey(tmpl).status().code(), StatusCode::kFailedPrecondition);
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace segma::auth
