// Passwords, sessions and the ADC in front (issue 21), against the real `segma server`:
//  - a user who must change their password can do nothing else until they have (403
//    password_change_required), and can afterwards;
//  - failed sign-ins lock a name (5) and an address (20) with 429 and Retry-After; an admin's
//    name is never locked, only the address that keeps guessing;
//  - sessions are listed (never their tokens) and revoked by their user and by admins, and a
//    revoked token is refused at once;
//  - with --trusted-proxies 127.0.0.1/32 the test is its own proxy: X-Forwarded-For is the client
//    address of sessions, audit records and key allow-lists; a server that does not trust the
//    peer ignores the header (hostile input);
//  - an API key's allowed_cidrs: validated (400), enforced on /v1 (the server's gateway and a
//    stand-alone `segma gateway`) and on /v2.
// Lockout timing (windows, doubling, the cap) is the unit tests' (auth/sign_in_limiter_test.cc,
// on a FakeClock); here only the immediate behaviour.

#include <signal.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

using boost::beast::http::verb;
using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr const char* kAdminPassword = "sessions-admin-pw";

class SessionsTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> flags = {"--trusted-proxies", "127.0.0.1/32"}) {
    port_ = FreePort();
    ASSERT_EQ(StartServer(data(), port_, kAdminPassword, dir_.path() + "/server.log", server_,
                          admin_, flags),
              "");
  }

  void TearDown() override {
    if (replica_) replica_->Signal(SIGKILL);
    if (server_) server_->Signal(SIGKILL);
  }

  // POST /v2/auth/login as if from `from` (X-Forwarded-For), with a User-Agent.
  http::ClientResponse SignIn(const std::string& user, const std::string& password,
                              const std::string& from = "192.0.2.1",
                              const std::string& agent = "sessions-test/1") const {
    Api anon{admin_.base, ""};
    return anon.Call(verb::post, "/v2/auth/login",
                     json::object{{"username", user}, {"password", password}},
                     Headers{{"X-Forwarded-For", from}, {"User-Agent", agent}});
  }
  std::string TokenOf(const http::ClientResponse& r) const {
    json::object o = Api::Obj(r);
    return o.contains("token") ? std::string(o.at("token").as_string()) : "";
  }

  int64_t CreateUser(const std::string& name, bool must_change = false) {
    auto r = admin_.Post("/v2/users", json::object{{"username", name},
                                                   {"password", "first-password-1"},
                                                   {"require_password_change", must_change}});
    EXPECT_EQ(r.status, 201u) << r.body;
    return Api::Obj(r).contains("id") ? Api::Obj(r).at("id").as_int64() : 0;
  }

  static std::string ErrorCode(const http::ClientResponse& r) {
    json::object o = Api::Obj(r);
    if (!o.contains("error") || !o.at("error").is_object()) return "";
    const json::object& e = o.at("error").as_object();
    return e.contains("code") && e.at("code").is_string() ? std::string(e.at("code").as_string())
                                                          : "";
  }

  static json::array Items(const http::ClientResponse& r) {
    json::object o = Api::Obj(r);
    return o.contains("items") ? o.at("items").as_array() : json::array();
  }

  // The newest audit record of a sign-in as `user`.
  json::object LastSignInRecord(const std::string& user) const {
    for (const json::value& e : Items(admin_.Get("/v2/audit-events?sort=-id&per_page=100"))) {
      const json::object& o = e.as_object();
      if (o.at("route").as_string() == "/v2/auth/login" && o.at("actor_name").as_string() == user) {
        return o;
      }
    }
    return {};
  }

  std::string data() const { return dir_.path() + "/data"; }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> server_;
  std::unique_ptr<Process> replica_;
  Api admin_;
  int keys_ = 0;
};

TEST_F(SessionsTest, AForcedPasswordChangeComesBeforeAnythingElse) {
  Start();
  CreateUser("carol", /*must_change=*/true);
  auto login = SignIn("carol", "first-password-1");
  ASSERT_EQ(login.status, 200u) << login.body;
  EXPECT_TRUE(Api::Obj(login).at("user").at("require_password_change").as_bool());
  Api carol{admin_.base, TokenOf(login)};

  for (auto [method, path] : {std::pair{verb::get, "/v2/projects"},
                              {verb::get, "/v2/sessions"},
                              {verb::get, "/v2/workers"},
                              {verb::post, "/v2/api-keys"}}) {
    auto r = carol.Call(method, path, json::object{});
    EXPECT_EQ(r.status, 403u) << path << " " << r.body;
    EXPECT_EQ(ErrorCode(r), "password_change_required") << path << " " << r.body;
  }
  // Who am I, change password and sign out stay open.
  auto me = carol.Get("/v2/users/me");
  ASSERT_EQ(me.status, 200u) << me.body;
  EXPECT_TRUE(Api::Obj(me).at("require_password_change").as_bool());
  auto wrong = carol.Post(
      "/v2/auth/change-password",
      json::object{{"old_password", "not-it-at-all"}, {"new_password", "second-password-2"}});
  EXPECT_EQ(wrong.status, 401u) << wrong.body;
  auto changed = carol.Post(
      "/v2/auth/change-password",
      json::object{{"old_password", "first-password-1"}, {"new_password", "second-password-2"}});
  ASSERT_EQ(changed.status, 204u) << changed.body;

  // The same session may now do what its roles allow.
  EXPECT_EQ(carol.Get("/v2/projects").status, 200u);
  EXPECT_EQ(carol.Get("/v2/sessions").status, 200u);
  EXPECT_FALSE(Api::Obj(carol.Get("/v2/users/me")).at("require_password_change").as_bool());

  // An admin's reset sets the flag again (the default of a reset): refused again.
  const int64_t carol_id = Api::Obj(me).at("id").as_int64();
  auto reset = admin_.Call(verb::patch, fmt::format("/v2/users/{}", carol_id),
                           json::object{{"password", "third-password-3"}});
  ASSERT_EQ(reset.status, 200u) << reset.body;
  Api again{admin_.base, TokenOf(SignIn("carol", "third-password-3"))};
  EXPECT_EQ(ErrorCode(again.Get("/v2/projects")), "password_change_required");
  EXPECT_EQ(again.Post("/v2/auth/logout", json::object{}).status, 204u);
}

TEST_F(SessionsTest, FailedSignInsLockTheNameWith429AndRetryAfter) {
  Start();
  CreateUser("dave");
  CreateUser("erin");
  // Five wrong passwords from five addresses: the name is what is guessed.
  for (int i = 1; i <= 5; ++i) {
    auto r = SignIn("dave", "wrong-password", fmt::format("198.51.100.{}", i));
    EXPECT_EQ(r.status, 401u) << i << " " << r.body;
  }
  auto locked = SignIn("dave", "first-password-1", "198.51.100.99");  // even the right one
  EXPECT_EQ(locked.status, 429u) << locked.body;
  EXPECT_EQ(ErrorCode(locked), "resource_exhausted") << locked.body;
  EXPECT_NE(locked.body.find("try again in 15 minutes"), std::string::npos) << locked.body;
  const std::string retry_after = locked.Header("retry-after");
  ASSERT_FALSE(retry_after.empty());
  EXPECT_GT(std::stoi(retry_after), 800);
  EXPECT_LE(std::stoi(retry_after), 900);
  // Others, from the same addresses, are not affected; the refusal is in the audit trail.
  EXPECT_EQ(SignIn("erin", "first-password-1", "198.51.100.1").status, 200u);
  json::object record = LastSignInRecord("dave");
  ASSERT_FALSE(record.empty());
  EXPECT_EQ(record.at("status").as_int64(), 429);
  EXPECT_EQ(record.at("client_address").as_string(), "198.51.100.99");
}

TEST_F(SessionsTest, AnAdminIsLockedOnlyByAddressNeverByName) {
  Start();
  // Someone guesses the admin's password from several places, more than a name's limit.
  for (int i = 1; i <= 8; ++i) {
    EXPECT_EQ(SignIn("admin", "guess-" + std::to_string(i), fmt::format("203.0.113.{}", i)).status,
              401u);
  }
  // The admin at their desk is not locked out.
  EXPECT_EQ(SignIn("admin", kAdminPassword, "192.0.2.50").status, 200u);

  // One address that keeps guessing (any names) is locked after 20, for everyone.
  for (int i = 1; i <= 20; ++i) {
    EXPECT_EQ(SignIn(fmt::format("nobody-{}", i), "guess", "203.0.113.200").status, 401u) << i;
  }
  auto locked = SignIn("admin", kAdminPassword, "203.0.113.200");
  EXPECT_EQ(locked.status, 429u) << locked.body;
  EXPECT_FALSE(locked.Header("retry-after").empty());
  EXPECT_EQ(SignIn("admin", kAdminPassword, "192.0.2.50").status, 200u);
}

TEST_F(SessionsTest, SessionsAreListedAndRevokedByTheirUserAndByAdmins) {
  Start();
  const int64_t frank_id = CreateUser("frank");
  auto first = SignIn("frank", "first-password-1", "192.0.2.21", "browser/1.0");
  auto second = SignIn("frank", "first-password-1", "2001:db8::21", "segma-ctl/0.1");
  ASSERT_EQ(first.status, 200u);
  ASSERT_EQ(second.status, 200u);
  Api frank1{admin_.base, TokenOf(first)};
  Api frank2{admin_.base, TokenOf(second)};

  auto mine = frank1.Get("/v2/sessions");
  ASSERT_EQ(mine.status, 200u) << mine.body;
  json::array items = Items(mine);
  ASSERT_EQ(items.size(), 2u) << mine.body;
  // Never a token: neither this session's nor the other's.
  EXPECT_EQ(mine.body.find(frank1.token), std::string::npos);
  EXPECT_EQ(mine.body.find(frank2.token), std::string::npos);
  EXPECT_EQ(mine.body.find("segma_st."), std::string::npos);
  int64_t id1 = 0, id2 = 0;
  for (const json::value& v : items) {
    const json::object& s = v.as_object();
    EXPECT_EQ(s.at("username").as_string(), "frank");
    EXPECT_EQ(s.at("user_id").as_int64(), frank_id);
    EXPECT_FALSE(s.contains("token"));
    for (const char* field : {"created_at", "expires_at", "last_used_at"}) {
      EXPECT_TRUE(s.contains(field)) << field;
    }
    if (s.at("client_address").as_string() == "192.0.2.21") {
      id1 = s.at("id").as_int64();
      EXPECT_EQ(s.at("user_agent").as_string(), "browser/1.0");
      EXPECT_TRUE(s.at("current").as_bool());
      EXPECT_TRUE(s.at("last_used_at").is_string());  // this very call used it
    } else {
      EXPECT_EQ(s.at("client_address").as_string(), "2001:db8::21");
      EXPECT_EQ(s.at("user_agent").as_string(), "segma-ctl/0.1");
      EXPECT_FALSE(s.at("current").as_bool());
      id2 = s.at("id").as_int64();
    }
  }
  ASSERT_GT(id1, 0);
  ASSERT_GT(id2, 0);

  // Only admins see other users' sessions.
  EXPECT_EQ(frank1.Get("/v2/sessions?all=true").status, 403u);
  EXPECT_EQ(frank1.Get("/v2/sessions?user_id=1").status, 403u);
  EXPECT_EQ(Items(admin_.Get(fmt::format("/v2/sessions?user_id={}", frank_id))).size(), 2u);
  json::array everyone = Items(admin_.Get("/v2/sessions?all=true"));
  EXPECT_EQ(everyone.size(), 3u);  // frank's two and the admin's own
  int64_t admin_session = 0;
  for (const json::value& v : Items(admin_.Get("/v2/sessions"))) {
    admin_session = v.at("id").as_int64();
  }
  ASSERT_GT(admin_session, 0);

  // Frank ends his other session: its token stops working at once.
  EXPECT_EQ(frank1.Call(verb::delete_, fmt::format("/v2/sessions/{}", id2)).status, 204u);
  auto revoked = frank2.Get("/v2/users/me");
  EXPECT_EQ(revoked.status, 401u) << revoked.body;
  EXPECT_EQ(Items(frank1.Get("/v2/sessions")).size(), 1u);
  // Another user's session does not exist for him.
  EXPECT_EQ(frank1.Call(verb::delete_, fmt::format("/v2/sessions/{}", admin_session)).status, 404u);
  EXPECT_EQ(admin_.Get("/v2/users/me").status, 200u);
  // An admin ends Frank's last one.
  EXPECT_EQ(admin_.Call(verb::delete_, fmt::format("/v2/sessions/{}", id1)).status, 204u);
  EXPECT_EQ(frank1.Get("/v2/users/me").status, 401u);
  EXPECT_EQ(admin_.Call(verb::delete_, "/v2/sessions/999999").status, 404u);
  // API keys are not sessions: they cannot list or end any.
  auto p = admin_.Post("/v2/projects", json::object{{"name", "keys"}});
  auto key = admin_.Post("/v2/api-keys", json::object{{"name", "mgmt"},
                                                      {"project_id", Api::Obj(p).at("id")},
                                                      {"scope", "management"}});
  Api with_key{admin_.base, std::string(Api::Obj(key).at("secret").as_string())};
  EXPECT_EQ(with_key.Get("/v2/sessions").status, 403u);
}

TEST_F(SessionsTest, ATrustedProxysForwardedForIsTheClientAddress) {
  Start({"--trusted-proxies", "127.0.0.1/32"});
  CreateUser("gina");
  // Through a chain: the client forged the leftmost entry; the walk stops at the first untrusted.
  auto r = SignIn("gina", "first-password-1", "10.66.66.66, 198.51.100.42");
  ASSERT_EQ(r.status, 200u) << r.body;
  Api gina{admin_.base, TokenOf(r)};
  json::array items = Items(gina.Get("/v2/sessions"));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].at("client_address").as_string(), "198.51.100.42");
  EXPECT_EQ(LastSignInRecord("gina").at("client_address").as_string(), "198.51.100.42");
  // X-Forwarded-Proto: https from the trusted proxy makes the cookies Secure.
  Api anon{admin_.base, ""};
  auto tls =
      anon.Call(verb::post, "/v2/auth/login",
                json::object{{"username", "gina"}, {"password", "first-password-1"}},
                Headers{{"X-Forwarded-For", "198.51.100.42"}, {"X-Forwarded-Proto", "https"}});
  ASSERT_EQ(tls.status, 200u);
  EXPECT_NE(tls.Header("set-cookie").find("; Secure"), std::string::npos)
      << tls.Header("set-cookie");
  auto plain = SignIn("gina", "first-password-1");
  EXPECT_EQ(plain.Header("set-cookie").find("; Secure"), std::string::npos);
}

TEST_F(SessionsTest, ForwardedHeadersFromAnUntrustedPeerAreIgnored) {
  // The proxy is elsewhere: this test's own connections (127.0.0.1) are not it.
  Start({"--trusted-proxies", "10.0.0.0/8"});
  CreateUser("hugo");
  Api anon{admin_.base, ""};
  auto r = anon.Call(verb::post, "/v2/auth/login",
                     json::object{{"username", "hugo"}, {"password", "first-password-1"}},
                     Headers{{"X-Forwarded-For", "198.51.100.7"},
                             {"Forwarded", "for=198.51.100.8;proto=https"},
                             {"X-Forwarded-Proto", "https"}});
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.Header("set-cookie").find("; Secure"), std::string::npos);
  Api hugo{admin_.base, TokenOf(r)};
  json::array items = Items(hugo.Get("/v2/sessions"));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].at("client_address").as_string(), "127.0.0.1");
  EXPECT_EQ(LastSignInRecord("hugo").at("client_address").as_string(), "127.0.0.1");

  // Nor can a forged header pass a key's allow-list.
  auto p = admin_.Post("/v2/projects", json::object{{"name", "spoof"}});
  auto key =
      admin_.Post("/v2/api-keys", json::object{{"name", "office"},
                                               {"project_id", Api::Obj(p).at("id")},
                                               {"scope", "all"},
                                               {"allowed_cidrs", json::array{"198.51.100.0/24"}}});
  ASSERT_EQ(key.status, 201u) << key.body;
  Api with_key{admin_.base, std::string(Api::Obj(key).at("secret").as_string())};
  http::ClientResponse spoofed;
  // The gateway learns of the new key from its events (401 until then).
  EXPECT_TRUE(WaitUntil(
      [&] {
        spoofed = with_key.Call(verb::get, "/v1/models", std::nullopt,
                                Headers{{"X-Forwarded-For", "198.51.100.7"}});
        return spoofed.status != 401;
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(spoofed.status, 403u) << spoofed.body;
  EXPECT_NE(spoofed.body.find("may not be used from 127.0.0.1"), std::string::npos) << spoofed.body;
}

TEST_F(SessionsTest, KeysAreUsableOnlyFromTheirAllowedRanges) {
  Start();
  auto p = admin_.Post("/v2/projects", json::object{{"name", "ranges"}});
  ASSERT_EQ(p.status, 201u);
  const json::value project = Api::Obj(p).at("id");
  auto create = [&](json::value cidrs) {
    return admin_.Post("/v2/api-keys", json::object{{"name", "k" + std::to_string(++keys_)},
                                                    {"project_id", project},
                                                    {"scope", "all"},
                                                    {"allowed_cidrs", std::move(cidrs)}});
  };
  // Bad input: a clear 400 naming the entry.
  auto host_bits = create(json::array{"198.51.100.0/24", "10.1.2.3/8"});
  EXPECT_EQ(host_bits.status, 400u);
  EXPECT_NE(host_bits.body.find("allowed_cidrs[1]: '10.1.2.3/8' has bits set beyond its /8 "
                                "prefix; did you mean 10.0.0.0/8?"),
            std::string::npos)
      << host_bits.body;
  auto name = create(json::array{"office.example.com"});
  EXPECT_EQ(name.status, 400u);
  EXPECT_NE(name.body.find("allowed_cidrs[0]: 'office.example.com' is not an IP address"),
            std::string::npos)
      << name.body;
  EXPECT_EQ(create(json::array{}).status, 400u);
  EXPECT_EQ(create(json::value("10.0.0.0/8")).status, 400u);
  EXPECT_EQ(create(json::array{"2001:db8::/129"}).status, 400u);

  auto key = create(json::array{"198.51.100.0/24", "2001:DB8::/32", "192.0.2.9"});
  ASSERT_EQ(key.status, 201u) << key.body;
  json::object k = Api::Obj(key);
  EXPECT_EQ(json::serialize(k.at("allowed_cidrs")),
            R"(["198.51.100.0/24","2001:db8::/32","192.0.2.9/32"])");
  const int64_t key_id = k.at("id").as_int64();
  Api with_key{admin_.base, std::string(k.at("secret").as_string())};
  auto from = [&](const std::string& address, const std::string& path = "/v1/models") {
    return with_key.Call(verb::get, path, std::nullopt, Headers{{"X-Forwarded-For", address}});
  };
  // The server's own gateway (/v1) learns the key from its events.
  ASSERT_TRUE(
      WaitUntil([&] { return from("198.51.100.7").status == 200; }, std::chrono::seconds(10)))
      << from("198.51.100.7").body;
  EXPECT_EQ(from("2001:db8:5::1").status, 200u);
  EXPECT_EQ(from("192.0.2.9").status, 200u);
  auto refused = from("203.0.113.1");
  EXPECT_EQ(refused.status, 403u) << refused.body;
  // In OpenAI's error format on /v1.
  EXPECT_EQ(Api::Obj(refused).at("error").at("type").as_string(), "permission_error");
  EXPECT_NE(refused.body.find("this API key may not be used from 203.0.113.1"), std::string::npos)
      << refused.body;
  EXPECT_EQ(from("192.0.2.10").status, 403u);
  // And on /v2, in the API's format.
  EXPECT_EQ(from("198.51.100.7", "/v2/projects").status, 200u);
  auto refused_v2 = from("203.0.113.1", "/v2/projects");
  EXPECT_EQ(refused_v2.status, 403u);
  EXPECT_EQ(ErrorCode(refused_v2), "permission_denied") << refused_v2.body;

  // A stand-alone gateway gets the ranges with the key (/internal/gateway/state).
  std::string token = ReadFile(data() + "/gateway_token");
  token = token.substr(0, token.find('\n'));
  const uint16_t gw_port = FreePort();
  replica_ = std::make_unique<Process>(
      std::vector<std::string>{SegmaBinary(), "gateway", "--server", admin_.base, "--token", token,
                               "--address", "127.0.0.1", "--port", std::to_string(gw_port),
                               "--data-dir", dir_.path() + "/replica", "--trusted-proxies",
                               "127.0.0.1/32"},
      std::map<std::string, std::string>{}, dir_.path() + "/replica.log");
  Api gw{"http://127.0.0.1:" + std::to_string(gw_port), with_key.token};
  auto gw_from = [&](const std::string& address) {
    return gw.Call(verb::get, "/v1/models", std::nullopt, Headers{{"X-Forwarded-For", address}});
  };
  ASSERT_TRUE(
      WaitUntil([&] { return gw_from("198.51.100.7").status == 200; }, std::chrono::seconds(30)))
      << replica_->Log();
  EXPECT_EQ(gw_from("203.0.113.1").status, 403u);

  // null lifts the restriction (on the server and, within moments, on the replica).
  auto lifted = admin_.Call(verb::patch, fmt::format("/v2/api-keys/{}", key_id),
                            json::object{{"allowed_cidrs", nullptr}});
  ASSERT_EQ(lifted.status, 200u) << lifted.body;
  EXPECT_TRUE(Api::Obj(lifted).at("allowed_cidrs").is_null());
  EXPECT_EQ(from("203.0.113.1", "/v2/projects").status, 200u);
  EXPECT_TRUE(
      WaitUntil([&] { return from("203.0.113.1").status == 200; }, std::chrono::seconds(10)));
  EXPECT_TRUE(
      WaitUntil([&] { return gw_from("203.0.113.1").status == 200; }, std::chrono::seconds(10)));
  // And a range set by PATCH applies the same way.
  auto narrowed = admin_.Call(verb::patch, fmt::format("/v2/api-keys/{}", key_id),
                              json::object{{"allowed_cidrs", json::array{"203.0.113.0/24"}}});
  ASSERT_EQ(narrowed.status, 200u) << narrowed.body;
  EXPECT_EQ(from("198.51.100.7", "/v2/projects").status, 403u);
  EXPECT_TRUE(
      WaitUntil([&] { return gw_from("198.51.100.7").status == 403; }, std::chrono::seconds(10)));
}

}  // namespace
}  // namespace segma::testing
