// Which forwarded client address is believed: hostile input from untrusted peers, chains of
// proxies, both header forms, garbage, and the hop limit.

#include "http/forwarded.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace segma::http {
namespace {

CidrSet Trusted(std::string_view list) {
  Result<CidrSet> s = CidrSet::ParseList(list);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? *s : CidrSet();
}

class ForwardedTest : public ::testing::Test {
 protected:
  ClientInfo Resolve(std::string_view peer) { return ResolveClient(req_, peer, trusted_); }

  Request req_;
  CidrSet trusted_ = Trusted("10.0.0.0/8, 2001:db8:1::/48");
};

TEST_F(ForwardedTest, HeadersFromAnUntrustedPeerAreIgnored) {
  req_.set("X-Forwarded-For", "198.51.100.7");
  req_.set(bhttp::field::forwarded, "for=198.51.100.8;proto=https");
  req_.set("X-Forwarded-Proto", "https");
  ClientInfo c = Resolve("203.0.113.5");
  EXPECT_EQ(c.address, "203.0.113.5");
  EXPECT_FALSE(c.proto.has_value());
}

TEST_F(ForwardedTest, NoTrustedProxiesMeansThePeer) {
  trusted_ = CidrSet();
  req_.set("X-Forwarded-For", "198.51.100.7");
  EXPECT_EQ(Resolve("10.0.0.1").address, "10.0.0.1");
}

TEST_F(ForwardedTest, ATrustedPeersForwardedForIsBelieved) {
  req_.set("X-Forwarded-For", "198.51.100.7");
  req_.set("X-Forwarded-Proto", "https");
  ClientInfo c = Resolve("10.1.1.1");
  EXPECT_EQ(c.address, "198.51.100.7");
  EXPECT_EQ(c.proto, "https");
}

TEST_F(ForwardedTest, WalksFromTheRightSkippingTrustedProxies) {
  // The client forged the leftmost entry; the ADC appended the address it saw.
  req_.set("X-Forwarded-For", "1.2.3.4, 198.51.100.7, 10.2.2.2");
  EXPECT_EQ(Resolve("10.1.1.1").address, "198.51.100.7");
  // Every header line counts, in order.
  req_.set("X-Forwarded-For", "1.2.3.4");
  req_.insert("X-Forwarded-For", "198.51.100.9");
  EXPECT_EQ(Resolve("10.1.1.1").address, "198.51.100.9");
}

TEST_F(ForwardedTest, AllTrustedMeansTheLeftmost) {
  req_.set("X-Forwarded-For", "10.9.9.9, 10.2.2.2");
  EXPECT_EQ(Resolve("10.1.1.1").address, "10.9.9.9");
}

TEST_F(ForwardedTest, GarbageEndsTheWalkAtTheLastAddressRead) {
  req_.set("X-Forwarded-For", "198.51.100.7, unknown, 10.2.2.2");
  EXPECT_EQ(Resolve("10.1.1.1").address, "10.2.2.2");
  req_.set("X-Forwarded-For", "<script>");
  EXPECT_EQ(Resolve("10.1.1.1").address, "10.1.1.1");
  req_.set("X-Forwarded-For", "");
  EXPECT_EQ(Resolve("10.1.1.1").address, "10.1.1.1");
  req_.set("X-Forwarded-For", "198.51.100.7, , 10.2.2.2");
  EXPECT_EQ(Resolve("10.1.1.1").address, "10.2.2.2");
}

TEST_F(ForwardedTest, PortsBracketsAndIpv6) {
  req_.set("X-Forwarded-For", "198.51.100.7:51234");
  EXPECT_EQ(Resolve("10.1.1.1").address, "198.51.100.7");
  req_.set("X-Forwarded-For", "[2001:db8:2::5]:443");
  EXPECT_EQ(Resolve("2001:db8:1::1").address, "2001:db8:2::5");
  req_.set("X-Forwarded-For", "2001:db8:2::6");
  EXPECT_EQ(Resolve("::ffff:10.1.1.1").address, "2001:db8:2::6");
  req_.set("X-Forwarded-For", "::ffff:198.51.100.7");
  EXPECT_EQ(Resolve("10.1.1.1").address, "198.51.100.7");
}

TEST_F(ForwardedTest, Rfc7239Forwarded) {
  req_.set(bhttp::field::forwarded,
           R"(for=1.2.3.4, For="[2001:db8:2::17]:4711";proto=HTTPS;by=10.1.1.1, for=10.2.2.2)");
  ClientInfo c = Resolve("10.1.1.1");
  EXPECT_EQ(c.address, "2001:db8:2::17");
  EXPECT_FALSE(c.proto.has_value());  // the last element says nothing about the scheme
  req_.set(bhttp::field::forwarded, R"(for=198.51.100.7;proto=https)");
  c = Resolve("10.1.1.1");
  EXPECT_EQ(c.address, "198.51.100.7");
  EXPECT_EQ(c.proto, "https");
  // An obfuscated or unknown node ends the walk.
  req_.set(bhttp::field::forwarded, "for=198.51.100.7, for=_hidden, for=10.2.2.2");
  EXPECT_EQ(Resolve("10.1.1.1").address, "10.2.2.2");
  req_.set(bhttp::field::forwarded, "by=10.2.2.2");
  EXPECT_EQ(Resolve("10.1.1.1").address, "10.1.1.1");
  // X-Forwarded-For wins where both are present.
  req_.set(bhttp::field::forwarded, "for=198.51.100.1");
  req_.set("X-Forwarded-For", "198.51.100.2");
  EXPECT_EQ(Resolve("10.1.1.1").address, "198.51.100.2");
}

TEST_F(ForwardedTest, ProtoIsTheNearestProxysWordAndOnlyHttpOrHttps) {
  req_.set("X-Forwarded-Proto", "http, https");
  EXPECT_EQ(Resolve("10.1.1.1").proto, "https");
  req_.set("X-Forwarded-Proto", "gopher");
  EXPECT_FALSE(Resolve("10.1.1.1").proto.has_value());
}

TEST_F(ForwardedTest, AtMost32HopsAreExamined) {
  std::string chain = "198.51.100.7";
  for (int i = 0; i < 40; ++i) chain += fmt::format(", 10.0.0.{}", i + 1);
  req_.set("X-Forwarded-For", chain);
  // The 32nd address from the right is trusted too; the walk stops there.
  EXPECT_EQ(Resolve("10.1.1.1").address, "10.0.0.9");
}

}  // namespace
}  // namespace segma::http
