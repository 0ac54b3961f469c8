#include "scheduler/reschedule_policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace segma::scheduler {
namespace {

using std::chrono::minutes;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

types::ModelInstance Instance(int64_t id, int64_t worker, types::InstanceState state,
                              int created_s = 0) {
  types::ModelInstance i;
  i.id = id;
  i.worker_id = worker;
  i.state = state;
  i.created_at = Timestamp(seconds(created_s));
  return i;
}

TEST(SelectForScaleDownTest, UnhealthyFirstThenNewest) {
  using S = types::InstanceState;
  std::vector<types::ModelInstance> v = {
      Instance(1, 1, S::kRunning, 10),     Instance(2, 1, S::kRunning, 30),
      Instance(3, 1, S::kError, 5),        Instance(4, 0, S::kPending, 1),
      Instance(5, 1, S::kStopping, 99),    Instance(6, 1, S::kStarting, 20),
      Instance(7, 0, S::kUnschedulable, 2)};
  EXPECT_THAT(SelectForScaleDown(v, 5), ElementsAre(3, 7, 4, 2, 6));
  EXPECT_THAT(SelectForScaleDown(v, 100), ElementsAre(3, 7, 4, 2, 6, 1));
  EXPECT_THAT(SelectForScaleDown(v, 0), IsEmpty());
}

class ReschedulePolicyTest : public ::testing::Test {
 protected:
  Timestamp t0_ = Timestamp(seconds(1'800'000'000));
  std::vector<types::ModelInstance> instances_ = {
      Instance(1, 7, types::InstanceState::kRunning),
      Instance(2, 7, types::InstanceState::kRunning),
      Instance(3, 7, types::InstanceState::kStarting),
      Instance(4, 8, types::InstanceState::kRunning),  // healthy worker
      Instance(5, 7, types::InstanceState::kStopping),
  };
  std::map<int64_t, Timestamp> lost_ = {{7, t0_}};
};

TEST_F(ReschedulePolicyTest, NotBeforeTheGracePeriod) {
  ReschedulePolicy p;
  EXPECT_THAT(p.Select(instances_, lost_, 10, t0_ + seconds(30)), IsEmpty());  // one heartbeat
  EXPECT_THAT(p.Select(instances_, lost_, 10, t0_ + minutes(5) - seconds(1)), IsEmpty());
  EXPECT_THAT(p.Select(instances_, lost_, 10, t0_ + minutes(5)), ElementsAre(1, 2, 3));
  EXPECT_EQ(p.NextDue(instances_, lost_, t0_ + seconds(30)), t0_ + minutes(5));
}

TEST_F(ReschedulePolicyTest, BoundedNumberAtOnce) {
  RescheduleOptions o;
  o.max_at_once = 2;
  ReschedulePolicy p(o);
  EXPECT_THAT(p.Select(instances_, lost_, 10, t0_ + minutes(6)), ElementsAre(1, 2));
  EXPECT_THAT(p.Select(instances_, lost_, 10, t0_ + minutes(6), /*in_flight=*/1), ElementsAre(1));
  EXPECT_THAT(p.Select(instances_, lost_, 10, t0_ + minutes(6), /*in_flight=*/2), IsEmpty());
}

TEST_F(ReschedulePolicyTest, NothingMovesWhenMostWorkersAreLost) {
  ReschedulePolicy p;
  std::map<int64_t, Timestamp> all = {{7, t0_}, {8, t0_}};
  EXPECT_THAT(p.Select(instances_, all, 3, t0_ + minutes(10)), IsEmpty());
  EXPECT_THAT(p.Select(instances_, lost_, 3, t0_ + minutes(10)), ElementsAre(1, 2, 3));
}

TEST_F(ReschedulePolicyTest, SubordinateWorkersCount) {
  types::ModelInstance i = Instance(9, 8, types::InstanceState::kRunning);
  types::DistributedServer d;
  d.worker_id = 7;
  d.worker_name = "w7";
  d.gpu_indexes = {0};
  i.distributed_servers.push_back(d);
  ReschedulePolicy p;
  EXPECT_THAT(p.Select({i}, lost_, 10, t0_ + minutes(5)), ElementsAre(9));
}

}  // namespace
}  // namespace segma::scheduler
