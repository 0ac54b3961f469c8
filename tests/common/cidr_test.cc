#include "common/cidr.h"

#include <gtest/gtest.h>

namespace segma {
namespace {

TEST(CidrTest, ParsesAddresses) {
  EXPECT_EQ(ParseIpAddress("192.0.2.1")->ToString(), "192.0.2.1");
  EXPECT_FALSE(ParseIpAddress("192.0.2.1")->v6);
  EXPECT_EQ(ParseIpAddress("2001:DB8:0:0::1")->ToString(), "2001:db8::1");
  EXPECT_TRUE(ParseIpAddress("2001:db8::1")->v6);
  // What a dual-stack socket reports for an IPv4 peer is the IPv4 address.
  EXPECT_EQ(ParseIpAddress("::ffff:192.0.2.1")->ToString(), "192.0.2.1");
  EXPECT_FALSE(ParseIpAddress("::ffff:192.0.2.1")->v6);
  for (const char* bad : {"", "localhost", "192.0.2", "192.0.2.1.5", "192.0.2.256", "010.0.0.1",
                          "[::1]", "192.0.2.1:80", "fe80::1%eth0", " 192.0.2.1", "::g"}) {
    EXPECT_FALSE(ParseIpAddress(bad).has_value()) << bad;
  }
}

TEST(CidrTest, RangesContainTheirAddresses) {
  auto r = ParseCidr("10.0.0.0/8");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->Contains(*ParseIpAddress("10.255.1.2")));
  EXPECT_FALSE(r->Contains(*ParseIpAddress("11.0.0.1")));
  EXPECT_TRUE(r->Contains(*ParseIpAddress("::ffff:10.1.1.1")));
  EXPECT_FALSE(r->Contains(*ParseIpAddress("::a01:101")));  // IPv6, not IPv4
  EXPECT_EQ(r->ToString(), "10.0.0.0/8");

  auto v6 = ParseCidr("2001:db8::/32");
  ASSERT_TRUE(v6.ok());
  EXPECT_TRUE(v6->Contains(*ParseIpAddress("2001:db8:ffff::1")));
  EXPECT_FALSE(v6->Contains(*ParseIpAddress("2001:db9::1")));
  EXPECT_FALSE(v6->Contains(*ParseIpAddress("10.0.0.1")));

  EXPECT_EQ(ParseCidr("192.0.2.7")->ToString(), "192.0.2.7/32");
  EXPECT_EQ(ParseCidr("::1")->ToString(), "::1/128");
  EXPECT_EQ(ParseCidr("0.0.0.0/0")->ToString(), "0.0.0.0/0");
  EXPECT_TRUE(ParseCidr("0.0.0.0/0")->Contains(*ParseIpAddress("203.0.113.9")));
  EXPECT_TRUE(ParseCidr("::/0")->Contains(*ParseIpAddress("2001:db8::1")));
  EXPECT_TRUE(ParseCidr("172.16.0.0/12")->Contains(*ParseIpAddress("172.31.255.255")));
  EXPECT_FALSE(ParseCidr("172.16.0.0/12")->Contains(*ParseIpAddress("172.32.0.0")));
  // An IPv4-mapped range is the IPv4 range.
  EXPECT_EQ(ParseCidr("::ffff:10.0.0.0/104")->ToString(), "10.0.0.0/8");
}

TEST(CidrTest, BadRangesSayWhatIsWrong) {
  EXPECT_EQ(ParseCidr("10.1.2.3/8").status().message(),
            "'10.1.2.3/8' has bits set beyond its /8 prefix; did you mean 10.0.0.0/8?");
  EXPECT_EQ(ParseCidr("10.0.0.0/33").status().message(),
            "'10.0.0.0/33' has a bad prefix length (0 to 32)");
  EXPECT_EQ(ParseCidr("2001:db8::/129").status().message(),
            "'2001:db8::/129' has a bad prefix length (0 to 128)");
  EXPECT_EQ(ParseCidr("example.com/8").status().message(),
            "'example.com/8' is not an IP address or CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32)");
  for (const char* bad : {"10.0.0.0/", "10.0.0.0/x", "10.0.0.0/-1", "10.0.0.0/8/8", "/8", ""}) {
    EXPECT_EQ(ParseCidr(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(CidrTest, SetsParseCommaLists) {
  auto set = CidrSet::ParseList(" 10.0.0.0/8, 192.168.1.1 ,,2001:db8::/32");
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(set->ranges().size(), 3u);
  EXPECT_TRUE(set->Contains("10.9.9.9"));
  EXPECT_TRUE(set->Contains("192.168.1.1"));
  EXPECT_FALSE(set->Contains("192.168.1.2"));
  EXPECT_TRUE(set->Contains("2001:db8::5"));
  EXPECT_FALSE(set->Contains("not an address"));
  EXPECT_TRUE(CidrSet::ParseList("")->empty());
  EXPECT_FALSE(CidrSet::ParseList("10.0.0.0/8,bogus").ok());
}

}  // namespace
}  // namespace segma
