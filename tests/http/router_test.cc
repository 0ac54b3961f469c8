#include "http/router.h"

#include <gtest/gtest.h>

namespace segma::http {
namespace {

Handler Noop() {
  return [](RequestContext&) -> asio::awaitable<Response> { co_return Response::NoContent(); };
}

class RouterTest : public ::testing::Test {
 protected:
  RouterTest() : ctx_{req_, {}, {}, {}, {}, {}, {}} {
    router_.Add(bhttp::verb::get, "/v2/models", Noop());
    router_.Add(bhttp::verb::get, "/v2/models/{id}", Noop());
    router_.Add(bhttp::verb::delete_, "/v2/models/{id}", Noop());
    router_.Add(bhttp::verb::patch, "/v2/projects/{id}/members/{user_id}", Noop());
    router_.Add(bhttp::verb::get, "/files/{path...}", Noop());
  }
  Router::MatchResult Match(bhttp::verb m, std::string_view path) {
    const Router::Route* route = nullptr;
    return router_.Match(m, path, ctx_, route);
  }
  Request req_;
  RequestContext ctx_;
  Router router_;
};

TEST_F(RouterTest, MatchesLiteralsAndCaptures) {
  EXPECT_EQ(Match(bhttp::verb::get, "/v2/models"), Router::MatchResult::kFound);
  EXPECT_EQ(ctx_.route, "/v2/models");
  EXPECT_EQ(Match(bhttp::verb::get, "/v2/models/42"), Router::MatchResult::kFound);
  EXPECT_EQ(ctx_.path_params.at("id"), "42");
  EXPECT_EQ(Match(bhttp::verb::patch, "/v2/projects/3/members/7"), Router::MatchResult::kFound);
  EXPECT_EQ(ctx_.path_params.at("id"), "3");
  EXPECT_EQ(ctx_.path_params.at("user_id"), "7");
  EXPECT_EQ(Match(bhttp::verb::get, "/files/a/b/c.gguf"), Router::MatchResult::kFound);
  EXPECT_EQ(ctx_.path_params.at("path"), "a/b/c.gguf");
}

TEST_F(RouterTest, DistinguishesUnknownPathsFromWrongMethods) {
  EXPECT_EQ(Match(bhttp::verb::post, "/v2/models/42"), Router::MatchResult::kMethodNotAllowed);
  EXPECT_EQ(Match(bhttp::verb::get, "/v2/models/42/extra"), Router::MatchResult::kNotFound);
  EXPECT_EQ(Match(bhttp::verb::get, "/v2/models/"), Router::MatchResult::kNotFound);
  EXPECT_EQ(Match(bhttp::verb::get, "/v2"), Router::MatchResult::kNotFound);
  EXPECT_EQ(Match(bhttp::verb::get, "/files/"), Router::MatchResult::kNotFound);
  EXPECT_EQ(Match(bhttp::verb::get, ""), Router::MatchResult::kNotFound);
}

TEST_F(RouterTest, FallbackAnswersUnmatchedGetsOutsideReservedPrefixes) {
  router_.SetFallback(Noop(), {"/v2", "/healthz"});
  EXPECT_EQ(Match(bhttp::verb::get, "/"), Router::MatchResult::kFound);
  EXPECT_EQ(ctx_.route, "fallback");
  EXPECT_EQ(Match(bhttp::verb::get, "/deployments/3"), Router::MatchResult::kFound);
  EXPECT_EQ(Match(bhttp::verb::get, "/v2x"), Router::MatchResult::kFound);
  // Reserved paths and everything below them keep their 404; other methods are never served.
  EXPECT_EQ(Match(bhttp::verb::get, "/v2"), Router::MatchResult::kNotFound);
  EXPECT_EQ(Match(bhttp::verb::get, "/v2/nothing"), Router::MatchResult::kNotFound);
  EXPECT_EQ(Match(bhttp::verb::get, "/healthz/x"), Router::MatchResult::kNotFound);
  EXPECT_EQ(Match(bhttp::verb::post, "/deployments"), Router::MatchResult::kNotFound);
  // Real routes still win.
  EXPECT_EQ(Match(bhttp::verb::get, "/v2/models"), Router::MatchResult::kFound);
  EXPECT_EQ(ctx_.route, "/v2/models");
}

TEST_F(RouterTest, IdParamRejectsNonPositiveAndGarbage) {
  ctx_.path_params["id"] = "12";
  EXPECT_EQ(*ctx_.IdParam(), 12);
  for (const char* bad : {"0", "-1", "1x", "", "99999999999999999999", "0x10"}) {
    ctx_.path_params["id"] = bad;
    EXPECT_FALSE(ctx_.IdParam().ok()) << bad;
  }
}

}  // namespace
}  // namespace segma::http
