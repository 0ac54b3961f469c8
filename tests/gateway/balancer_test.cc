#include "gateway/balancer.h"

#include <map>
#include <string>

#include <gtest/gtest.h>

#include "gateway/route_table.h"

namespace segma::gateway {
namespace {

std::shared_ptr<const RouteTable> Table(int replicas, const RouteTable* previous = nullptr) {
  DeploymentSpec d;
  d.deployment_id = 1;
  for (int i = 0; i < replicas; ++i) {
    d.replicas.push_back({100 + i, "http://127.0.0.1:" + std::to_string(9000 + i), true});
  }
  RouteTable::Builder b;
  b.Add({"m", {d}});
  auto t = b.Build(previous);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return *t;
}

const Timestamp kNow = Timestamp(std::chrono::seconds(1'800'000'000));

TEST(RouteTableTest, RejectsBadInput) {
  RouteTable::Builder dup;
  dup.Add({"m", {}}).Add({"m", {}});
  EXPECT_EQ(dup.Build().status().code(), StatusCode::kInvalidArgument);
  RouteTable::Builder bad_url;
  bad_url.Add({"m", {{1, 0, 1, "", {{1, "https://x:1", true}}}}});
  EXPECT_EQ(bad_url.Build().status().code(), StatusCode::kInvalidArgument);
  RouteTable::Builder twice;
  twice.Add({"a", {{1, 0, 1, "", {{7, "http://h:1", true}}}}})
      .Add({"b", {{2, 0, 1, "", {{7, "http://h:2", true}}}}});
  EXPECT_EQ(twice.Build().status().code(), StatusCode::kInvalidArgument);
}

TEST(RouteTableTest, OneInstanceUnderTwoNamesSharesItsState) {
  // A model's own name and a model route over it (ADR 0012).
  RouteTable::Builder b;
  b.Add({"a", {{1, 0, 1, "", {{7, "http://h:1", true}}}}})
      .Add({"route", {{1, 0, 3, "a", {{7, "http://h:1", true}}}}});
  auto t = b.Build();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ((*t)->Find("a")->deployments[0].replicas[0].state,
            (*t)->Find("route")->deployments[0].replicas[0].state);
  EXPECT_EQ((*t)->Find("route")->deployments[0].upstream_model, "a");
  EXPECT_EQ((*t)->Find("route")->total_weight, 3u);
}

TEST(RouteTableTest, KeepsReplicaStateAcrossSnapshots) {
  auto t1 = Table(2);
  t1->StateOf(100)->outstanding = 5;
  auto t2 = Table(3, t1.get());
  EXPECT_EQ(t2->StateOf(100)->outstanding.load(), 5);
  EXPECT_EQ(t2->StateOf(102)->outstanding.load(), 0);
  EXPECT_EQ(t2->Find("m")->deployments[0].upstream_model, "m");
  EXPECT_EQ(t2->Find("x"), nullptr);
}

TEST(BalancerTest, LeastOutstandingWins) {
  auto t = Table(3);
  const Deployment& d = t->Find("m")->deployments[0];
  t->StateOf(100)->outstanding = 3;
  t->StateOf(101)->outstanding = 1;
  t->StateOf(102)->outstanding = 2;
  Balancer b;
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(b.Pick(d, {}, kNow, {})->instance_id, 101);
  }
  // Begin/End move the counts; the choice follows.
  Balancer::Begin(d.replicas[1]);
  Balancer::Begin(d.replicas[1]);
  EXPECT_EQ(b.Pick(d, {}, kNow, {})->instance_id, 102);
}

TEST(BalancerTest, TiesAreSpreadRoundRobin) {
  auto t = Table(4);
  const Deployment& d = t->Find("m")->deployments[0];
  Balancer b;
  std::map<int64_t, int> seen;
  for (int i = 0; i < 40; ++i) seen[b.Pick(d, {}, kNow, {})->instance_id]++;
  EXPECT_EQ(seen.size(), 4u);
  for (auto& [id, n] : seen) EXPECT_EQ(n, 10) << id;
}

TEST(BalancerTest, PrefixAffinityIsStableAndOverriddenUnderLoad) {
  auto t = Table(4);
  const Deployment& d = t->Find("m")->deployments[0];
  BalancerOptions o;
  o.prefix_chars = 16;
  o.affinity_load_threshold = 2;
  Balancer b(o);
  const std::string system = "You are a helpful assistant. ";
  const int64_t first = b.Pick(d, {"", system + "question 1"}, kNow, {})->instance_id;
  // Same first 16 characters → same replica, whatever follows.
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(b.Pick(d, {"", system + "question " + std::to_string(i)}, kNow, {})->instance_id,
              first);
  }
  // Different prefixes spread over replicas.
  std::map<int64_t, int> spread;
  for (int i = 0; i < 64; ++i) {
    spread[b.Pick(d, {"", "prefix number " + std::to_string(i) + " ..."}, kNow, {})->instance_id]++;
  }
  EXPECT_GE(spread.size(), 3u);
  // Within the threshold the affine replica keeps the request...
  t->StateOf(first)->outstanding = 2;
  EXPECT_EQ(b.Pick(d, {"", system}, kNow, {})->instance_id, first);
  // ...beyond it, the least loaded one takes over.
  t->StateOf(first)->outstanding = 3;
  EXPECT_NE(b.Pick(d, {"", system}, kNow, {})->instance_id, first);
}

TEST(BalancerTest, SessionAffinityBeatsPrefix) {
  auto t = Table(4);
  const Deployment& d = t->Find("m")->deployments[0];
  Balancer b;
  const int64_t s1 = b.Pick(d, {"session-a", "p1"}, kNow, {})->instance_id;
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(b.Pick(d, {"session-a", "other prompt " + std::to_string(i)}, kNow, {})->instance_id,
              s1);
  }
}

TEST(BalancerTest, PoliciesWithoutAffinity) {
  auto t = Table(3);
  const Deployment& d = t->Find("m")->deployments[0];
  BalancerOptions o;
  o.policy = RoutingPolicy::kRoundRobin;
  Balancer rr(o);
  // Round robin ignores prefixes and load: every replica in turn.
  t->StateOf(100)->outstanding = 50;
  std::map<int64_t, int> seen;
  for (int i = 0; i < 30; ++i) seen[rr.Pick(d, {"", "same prefix"}, kNow, {})->instance_id]++;
  EXPECT_EQ(seen, (std::map<int64_t, int>{{100, 10}, {101, 10}, {102, 10}}));
  // Least outstanding ignores the prefix too.
  o.policy = RoutingPolicy::kLeastOutstanding;
  Balancer lo(o);
  t->StateOf(101)->outstanding = 1;
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(lo.Pick(d, {"", "same prefix"}, kNow, {})->instance_id, 102);
  EXPECT_EQ(ParseRoutingPolicy("round-robin"), RoutingPolicy::kRoundRobin);
  EXPECT_EQ(ParseRoutingPolicy("affinity"), RoutingPolicy::kAffinity);
  EXPECT_EQ(ParseRoutingPolicy("least-outstanding"), RoutingPolicy::kLeastOutstanding);
  EXPECT_FALSE(ParseRoutingPolicy("random").has_value());
}

TEST(BalancerTest, SkipsTriedUnhealthyAndEjected) {
  DeploymentSpec ds;
  ds.replicas = {{1, "http://h:1", true}, {2, "http://h:2", false}, {3, "http://h:3", true}};
  RouteTable::Builder builder;
  builder.Add({"m", {ds}});
  auto t = *builder.Build();
  const Deployment& d = t->Find("m")->deployments[0];
  BalancerOptions o;
  o.eject_after_failures = 2;
  o.eject_for = std::chrono::seconds(5);
  Balancer b(o);
  const int64_t tried[] = {1};
  EXPECT_EQ(b.Pick(d, {}, kNow, tried)->instance_id, 3);
  const int64_t both[] = {1, 3};
  EXPECT_EQ(b.Pick(d, {}, kNow, both), nullptr);  // 2 is unhealthy
  b.ReportFailure(d.replicas[2], kNow);
  EXPECT_FALSE(Balancer::Ejected(d.replicas[2], kNow));
  b.ReportFailure(d.replicas[2], kNow);
  EXPECT_TRUE(Balancer::Ejected(d.replicas[2], kNow));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b.Pick(d, {}, kNow, {})->instance_id, 1);
  // After the cool-down it is back.
  EXPECT_FALSE(Balancer::Ejected(d.replicas[2], kNow + std::chrono::seconds(6)));
  // A success resets the count: one failure more does not eject.
  b.ReportFailure(d.replicas[0], kNow);
  b.ReportSuccess(d.replicas[0]);
  b.ReportFailure(d.replicas[0], kNow);
  EXPECT_FALSE(Balancer::Ejected(d.replicas[0], kNow));
}

TEST(BalancerTest, DeploymentsByWeightWithFallbacks) {
  ModelRouteSpec spec{"m", {}};
  spec.deployments.push_back({10, 0, 3, "", {{1, "http://h:1", true}}});
  spec.deployments.push_back({20, 0, 1, "", {{2, "http://h:2", true}}});
  spec.deployments.push_back({30, 77, 5, "", {{3, "http://h:3", true}}});  // project 77 only
  RouteTable::Builder builder;
  builder.Add(spec);
  auto t = *builder.Build();
  const ModelRoute& r = *t->Find("m");
  Balancer b;
  std::map<int64_t, int> first;
  std::vector<size_t> order;
  for (int i = 0; i < 400; ++i) {
    b.OrderDeployments(r, /*project_id=*/1, order);
    ASSERT_EQ(order.size(), 2u);  // the project-77 deployment is invisible
    EXPECT_NE(order[0], order[1]);
    first[r.deployments[order[0]].deployment_id]++;
  }
  EXPECT_EQ(first[10], 300);
  EXPECT_EQ(first[20], 100);
  b.OrderDeployments(r, 77, order);
  EXPECT_EQ(order.size(), 3u);
}

}  // namespace
}  // namespace segma::gateway
