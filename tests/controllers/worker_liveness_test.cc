#include "controllers/worker_liveness.h"

#include <gtest/gtest.h>

#include "store/sqlite/sqlite_store.h"

namespace segma::controllers {
namespace {

class WorkerLivenessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = store::OpenSqliteStore(":memory:", bus_, clock_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
    types::Cluster c;
    c.name = "default";
    c.is_default = true;
    c.registration_token = "t";
    auto cluster = store_->CreateCluster(c);
    ASSERT_TRUE(cluster.ok());
    for (const char* name : {"a", "b"}) {
      auto w = store_->UpsertWorkerByName(cluster->id, name, "127.0.0.1", 10150, name, {});
      ASSERT_TRUE(w.ok());
      ids_.push_back(w->id);
      ASSERT_TRUE(store_->RecordHeartbeat(w->id, types::WorkerStatus{}, clock_.Now()).ok());
    }
  }

  types::WorkerState State(int64_t id) { return store_->GetWorker(id)->state; }

  FakeClock clock_;
  EventBus bus_;
  std::unique_ptr<store::Store> store_;
  std::vector<int64_t> ids_;
};

TEST_F(WorkerLivenessTest, NotReadyOnlyAfterTheGracePeriod) {
  WorkerLivenessController liveness(*store_, clock_, std::chrono::seconds(60));
  clock_.Advance(std::chrono::seconds(59));
  ASSERT_TRUE(store_->RecordHeartbeat(ids_[1], types::WorkerStatus{}, clock_.Now()).ok());
  EXPECT_TRUE(liveness.Reconcile()->empty());
  EXPECT_EQ(State(ids_[0]), types::WorkerState::kReady);

  clock_.Advance(std::chrono::seconds(2));  // a: 61 s silent; b: 2 s
  auto demoted = liveness.Reconcile();
  ASSERT_TRUE(demoted.ok());
  ASSERT_EQ(demoted->size(), 1u);
  EXPECT_EQ(demoted->at(0).id, ids_[0]);
  EXPECT_EQ(State(ids_[0]), types::WorkerState::kNotReady);
  EXPECT_NE(store_->GetWorker(ids_[0])->state_message.find("60 s"), std::string::npos);
  EXPECT_EQ(State(ids_[1]), types::WorkerState::kReady);

  // A heartbeat brings it back.
  ASSERT_TRUE(store_->RecordHeartbeat(ids_[0], types::WorkerStatus{}, clock_.Now()).ok());
  EXPECT_EQ(State(ids_[0]), types::WorkerState::kReady);
}

TEST_F(WorkerLivenessTest, MaintenanceIsLeftAlone) {
  store::WorkerPatch patch;
  patch.maintenance = true;
  ASSERT_TRUE(store_->UpdateWorker(ids_[0], patch).ok());
  WorkerLivenessController liveness(*store_, clock_, std::chrono::seconds(10));
  clock_.Advance(std::chrono::minutes(5));
  ASSERT_TRUE(liveness.Reconcile().ok());
  EXPECT_EQ(State(ids_[0]), types::WorkerState::kMaintenance);
  EXPECT_EQ(State(ids_[1]), types::WorkerState::kNotReady);
}

}  // namespace
}  // namespace segma::controllers
