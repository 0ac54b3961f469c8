#include "http/message.h"

#include <gtest/gtest.h>

namespace segma::http {
namespace {

TEST(ResponseTest, SegmaAndOpenAiErrorShapes) {
  Response r = Response::Error(NotFoundError("model 42 not found"));
  EXPECT_EQ(r.msg.result(), bhttp::status::not_found);
  EXPECT_EQ(r.msg.body(), R"({"error":{"code":"not_found","message":"model 42 not found"}})");

  Response o = Response::Error(ResourceExhaustedError("rate limit"), ErrorStyle::kOpenAi);
  EXPECT_EQ(o.msg.result(), bhttp::status::too_many_requests);
  auto v = ParseJson(o.msg.body());
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->at("error").at("type").as_string(), "rate_limit_error");
  EXPECT_TRUE(v->at("error").at("param").is_null());
}

TEST(ResponseTest, EveryCodeMapsToAnHttpStatus) {
  EXPECT_EQ(HttpStatusFor(StatusCode::kUnauthenticated), bhttp::status::unauthorized);
  EXPECT_EQ(HttpStatusFor(StatusCode::kPermissionDenied), bhttp::status::forbidden);
  EXPECT_EQ(HttpStatusFor(StatusCode::kAlreadyExists), bhttp::status::conflict);
  EXPECT_EQ(HttpStatusFor(StatusCode::kUnavailable), bhttp::status::service_unavailable);
  EXPECT_EQ(HttpStatusFor(StatusCode::kInvalidArgument), bhttp::status::bad_request);
}

TEST(RequestContextTest, BearerFromHeaderOrCookie) {
  Request req;
  RequestContext ctx{req, {}, {}, {}, {}, {}, {}};
  EXPECT_FALSE(ctx.BearerToken());
  req.set(bhttp::field::cookie, "theme=dark; segma_session=abc.def; other=1");
  EXPECT_EQ(ctx.BearerToken(), "abc.def");
  req.set(bhttp::field::authorization, "Bearer sk-segma-xyz");
  EXPECT_EQ(ctx.BearerToken(), "sk-segma-xyz");
  req.set(bhttp::field::authorization, "Basic dXNlcjpwYXNz");
  EXPECT_FALSE(ctx.BearerToken());
}

TEST(RequestContextTest, CookieByExactName) {
  Request req;
  RequestContext ctx{req, {}, {}, {}, {}, {}, {}};
  req.set(bhttp::field::cookie, "segma_csrf_x=1; segma_csrf=tok; a=");
  EXPECT_EQ(ctx.Cookie("segma_csrf"), "tok");
  EXPECT_EQ(ctx.Cookie("a"), "");
  EXPECT_FALSE(ctx.Cookie("segma"));
}

TEST(RequestContextTest, CookieSessionsNeedTheCsrfHeaderToChangeAnything) {
  Request req;
  RequestContext ctx{req, {}, {}, {}, {}, {}, {}};
  req.method(bhttp::verb::post);
  EXPECT_TRUE(ctx.CheckCsrf().ok());  // no credential at all: the route decides
  req.set(bhttp::field::cookie, "segma_session=s1; segma_csrf=c1");
  EXPECT_EQ(ctx.CheckCsrf().code(), StatusCode::kPermissionDenied);  // a cross-site form post
  req.set("X-CSRF-Token", "c2");
  EXPECT_EQ(ctx.CheckCsrf().code(), StatusCode::kPermissionDenied);
  req.set("X-CSRF-Token", "c1");
  EXPECT_TRUE(ctx.CheckCsrf().ok());
  req.erase("X-CSRF-Token");
  req.method(bhttp::verb::get);
  EXPECT_TRUE(ctx.CheckCsrf().ok());
  req.method(bhttp::verb::delete_);
  EXPECT_EQ(ctx.CheckCsrf().code(), StatusCode::kPermissionDenied);
  req.set(bhttp::field::authorization, "Bearer sk-segma-xyz");  // API clients are unchanged
  EXPECT_TRUE(ctx.CheckCsrf().ok());
}

}  // namespace
}  // namespace segma::http
