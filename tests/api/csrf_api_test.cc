// The browser session's CSRF defence (RequestContext::CheckCsrf): login sets segma_csrf beside the
// HttpOnly session cookie; a state-changing call authenticated by the cookie alone (what another
// site's form can make a browser send) is refused, the same call with the header echoing the
// cookie succeeds, and Bearer calls are unchanged.

#include "api/api_server_test_base.h"

namespace segma::api {
namespace {

using boost::beast::http::verb;
using segma::testing::Api;

class CsrfApiTest : public ApiServerTest {
 protected:
  bool ProjectExists(const std::string& name) {
    const json::object list = Api::Obj(admin_.Get("/v2/projects?q=" + name));
    for (const auto& p : list.at("items").as_array()) {
      if (p.as_object().at("name").as_string() == name) return true;
    }
    return false;
  }
};

TEST_F(CsrfApiTest, ACrossSiteFormPostWithOnlyTheSessionCookieIsRefused) {
  Api anon{base_, ""};
  auto login = anon.Post("/v2/auth/login", json::object{{"username", "admin"},
                                                        {"password", "api-test-admin-password"}});
  ASSERT_EQ(login.status, 200u) << login.body;
  const std::string session(Api::Obj(login).at("token").as_string());
  // Two Set-Cookie fields (joined by the client): the HttpOnly session, then the CSRF token,
  // readable by script (no HttpOnly), same site only.
  const std::string both = login.Header("set-cookie");
  ASSERT_TRUE(both.starts_with("segma_session=" + session + "; Path=/; HttpOnly")) << both;
  const size_t csrf_at = both.find("segma_csrf=");
  ASSERT_NE(csrf_at, std::string::npos) << both;
  const std::string set_cookie = both.substr(csrf_at);
  EXPECT_EQ(set_cookie.find("HttpOnly"), std::string::npos) << set_cookie;
  EXPECT_NE(set_cookie.find("SameSite=Strict"), std::string::npos) << set_cookie;
  const std::string csrf = set_cookie.substr(11, set_cookie.find(';') - 11);
  ASSERT_GE(csrf.size(), 20u);
  const std::string cookies = "segma_session=" + session + "; segma_csrf=" + csrf;

  // What a form on another site makes the browser send: the cookies, no header.
  auto forged = anon.Call(verb::post, "/v2/projects", json::object{{"name", "forged"}},
                          {{"Cookie", cookies}});
  EXPECT_EQ(forged.status, 403u) << forged.body;
  EXPECT_EQ(Api::Obj(forged).at("error").as_object().at("code").as_string(), "permission_denied");
  EXPECT_FALSE(ProjectExists("forged"));
  auto wrong = anon.Call(verb::post, "/v2/projects", json::object{{"name", "forged"}},
                         {{"Cookie", cookies}, {"X-CSRF-Token", csrf + "x"}});
  EXPECT_EQ(wrong.status, 403u) << wrong.body;
  EXPECT_FALSE(ProjectExists("forged"));

  // Reads need no header; the console's own call (header = cookie) works.
  EXPECT_EQ(anon.Call(verb::get, "/v2/users/me", std::nullopt, {{"Cookie", cookies}}).status, 200u);
  auto own = anon.Call(verb::post, "/v2/projects", json::object{{"name", "console"}},
                       {{"Cookie", cookies}, {"X-CSRF-Token", csrf}});
  EXPECT_EQ(own.status, 201u) << own.body;
  EXPECT_TRUE(ProjectExists("console"));

  // Bearer calls are unchanged.
  EXPECT_EQ(admin_.Post("/v2/projects", json::object{{"name", "bearer"}}).status, 201u);

  // Logout (itself a state change) clears both cookies.
  auto out = anon.Call(verb::post, "/v2/auth/logout", json::object{},
                       {{"Cookie", cookies}, {"X-CSRF-Token", csrf}});
  EXPECT_EQ(out.status, 204u) << out.body;
  const std::string cleared = out.Header("set-cookie");
  EXPECT_NE(cleared.find("segma_session=;"), std::string::npos) << cleared;
  EXPECT_NE(cleared.find("segma_csrf=;"), std::string::npos) << cleared;
}

}  // namespace
}  // namespace segma::api
