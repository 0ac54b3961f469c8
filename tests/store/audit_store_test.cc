// The audit trail of the SQLite store: append, list with filters, the hash chain's verification
// (altered, deleted and re-linked rows) and pruning with its anchor.

#include <sqlite3.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "common/event_bus.h"
#include "store/sqlite/sqlite_store.h"

namespace segma::store {
namespace {

class AuditStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "segma-audit-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto s = OpenSqliteStore(dir_ + "/segma.db", bus_, clock_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Appends one event of `actor` on `resource` in `project` answered with `status`.
  AuditEvent Append(const std::string& actor, const std::string& resource,
                    std::optional<int64_t> project, int status = 200) {
    AuditEvent e;
    e.actor_kind = "user";
    e.actor_id = actor == "alice" ? 2 : 3;
    e.actor_name = actor;
    e.method = "POST";
    e.route = "/v2/" + resource;
    e.resource = resource;
    e.project_id = project;
    e.status = status;
    e.client_address = "127.0.0.1";
    e.request_id = "req-" + std::to_string(++n_);
    Result<AuditEvent> r = store_->AppendAuditEvent(e);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    clock_.Advance(std::chrono::seconds(1));
    return r.ok() ? *r : AuditEvent{};
  }

  // Runs SQL on the file through a second, raw connection (what a tamperer would do).
  void RawExec(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ + "/segma.db").c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(db);
  }

  AuditVerification Verify() {
    Result<AuditVerification> v = store_->VerifyAuditChain();
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? *v : AuditVerification{};
  }

  std::string dir_;
  FakeClock clock_;
  EventBus bus_;
  std::unique_ptr<Store> store_;
  int n_ = 0;
};

TEST_F(AuditStoreTest, AppendsAChainInOrder) {
  AuditEvent a = Append("alice", "models", 1);
  AuditEvent b = Append("bob", "projects", std::nullopt, 403);
  EXPECT_EQ(a.id, 1);
  EXPECT_EQ(b.id, 2);
  EXPECT_EQ(a.prev_hash, "");
  EXPECT_EQ(b.prev_hash, a.hash);
  EXPECT_EQ(a.hash, AuditEventHash("", a));
  EXPECT_EQ(a.hash.size(), 64u);
  EXPECT_EQ(b.at - a.at, std::chrono::seconds(1));

  auto list = store_->ListAuditEvents(ListOptions{}, AuditFilter{});
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->total, 2);
  EXPECT_EQ(list->items[0].request_id, "req-1");
  EXPECT_EQ(list->items[1].status, 403);
  EXPECT_FALSE(list->items[1].project_id.has_value());
  EXPECT_EQ(list->items[1].hash, b.hash);

  AuditVerification v = Verify();
  EXPECT_TRUE(v.ok) << v.reason;
  EXPECT_EQ(v.checked, 2);
  EXPECT_EQ(v.head_hash, b.hash);
}

TEST_F(AuditStoreTest, FiltersAndPages) {
  const Timestamp start = clock_.Now();
  for (int i = 0; i < 10; ++i)
    Append(i % 2 ? "bob" : "alice", i < 5 ? "models" : "api-keys", i % 3);
  auto list = [&](AuditFilter f, ListOptions o = {}) {
    auto r = store_->ListAuditEvents(o, f);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : ListResult<AuditEvent>{};
  };
  AuditFilter by_name;
  by_name.actor = "alice";
  EXPECT_EQ(list(by_name).total, 5);
  AuditFilter by_id;
  by_id.actor = "user:3";
  EXPECT_EQ(list(by_id).total, 5);
  EXPECT_EQ(list(by_id).items[0].actor_name, "bob");
  AuditFilter unknown_kind;
  unknown_kind.actor = "robot:3";  // not a kind: an actor name, which nobody has
  EXPECT_EQ(list(unknown_kind).total, 0);
  AuditFilter by_resource;
  by_resource.resource = "api-keys";
  EXPECT_EQ(list(by_resource).total, 5);
  AuditFilter by_project;
  by_project.project_id = 0;
  EXPECT_EQ(list(by_project).total, 4);  // i = 0, 3, 6, 9
  AuditFilter by_time;
  by_time.from = start + std::chrono::seconds(2);
  by_time.to = start + std::chrono::seconds(5);
  auto window = list(by_time);
  ASSERT_EQ(window.total, 3);
  EXPECT_EQ(window.items[0].id, 3);

  ListOptions page;
  page.page = 2;
  page.per_page = 4;
  auto second = list(AuditFilter{}, page);
  EXPECT_EQ(second.total, 10);
  ASSERT_EQ(second.items.size(), 4u);
  EXPECT_EQ(second.items[0].id, 5);
  page.sort = "-id";
  EXPECT_EQ(list(AuditFilter{}, page).items[0].id, 6);
  page.sort = "actor_name";
  EXPECT_EQ(store_->ListAuditEvents(page, AuditFilter{}).status().code(),
            StatusCode::kInvalidArgument);
  page.sort = "";
  page.page = 0;
  EXPECT_EQ(store_->ListAuditEvents(page, AuditFilter{}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(AuditStoreTest, VerifyNamesAnAlteredRow) {
  for (int i = 0; i < 5; ++i) Append("alice", "models", 1);
  RawExec("UPDATE audit_events SET status = 200, actor_name = 'mallory' WHERE id = 3");
  AuditVerification v = Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_id, 3);
  EXPECT_EQ(v.checked, 3);
  EXPECT_NE(v.reason.find("row 3 was altered"), std::string::npos) << v.reason;
}

TEST_F(AuditStoreTest, VerifyCatchesARehashedRowAtTheNextLink) {
  for (int i = 0; i < 5; ++i) Append("alice", "models", 1);
  // A tamperer who also recomputes the altered row's hash still breaks the next row's link.
  auto rows = store_->ListAuditEvents(ListOptions{}, AuditFilter{});
  ASSERT_TRUE(rows.ok());
  AuditEvent forged = rows->items[2];
  forged.actor_name = "mallory";
  const std::string hash = AuditEventHash(forged.prev_hash, forged);
  RawExec("UPDATE audit_events SET actor_name = 'mallory', hash = '" + hash + "' WHERE id = 3");
  AuditVerification v = Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_id, 4);
  EXPECT_NE(v.reason.find("does not link to row 3"), std::string::npos) << v.reason;
}

TEST_F(AuditStoreTest, VerifyCatchesDeletedRows) {
  for (int i = 0; i < 6; ++i) Append("alice", "models", 1);
  RawExec("DELETE FROM audit_events WHERE id IN (3, 4)");
  AuditVerification v = Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_id, 5);
  EXPECT_NE(v.reason.find("rows 3..4 were deleted"), std::string::npos) << v.reason;
}

TEST_F(AuditStoreTest, VerifyCatchesTheFirstRowDeleted) {
  for (int i = 0; i < 3; ++i) Append("alice", "models", 1);
  RawExec("DELETE FROM audit_events WHERE id = 1");
  AuditVerification v = Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_id, 2);
  EXPECT_NE(v.reason.find("anchor"), std::string::npos) << v.reason;
}

TEST_F(AuditStoreTest, PruneMovesTheAnchorAndTheChainStillVerifies) {
  for (int i = 0; i < 6; ++i) Append("alice", "models", 1);              // at start+0s .. start+5s
  const Timestamp cut = clock_.Now() - std::chrono::milliseconds(3500);  // start+2.5s
  Result<int64_t> pruned = store_->PruneAuditEvents(cut);
  ASSERT_TRUE(pruned.ok()) << pruned.status().ToString();
  EXPECT_EQ(*pruned, 3);
  AuditVerification v = Verify();
  EXPECT_TRUE(v.ok) << v.reason;
  EXPECT_EQ(v.checked, 3);
  EXPECT_EQ(*store_->PruneAuditEvents(cut), 0);  // nothing older left

  // New rows continue the chain, ids keep ascending.
  AuditEvent next = Append("bob", "models", 1);
  EXPECT_EQ(next.id, 7);
  EXPECT_TRUE(Verify().ok);

  // Deleting the oldest remaining row is still caught: it no longer links to the anchor.
  RawExec("DELETE FROM audit_events WHERE id = 4");
  v = Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_id, 5);
}

TEST_F(AuditStoreTest, PruningEverythingThenAppendingLinksToTheAnchor) {
  AuditEvent a = Append("alice", "models", 1);
  Append("alice", "models", 1);
  ASSERT_EQ(*store_->PruneAuditEvents(clock_.Now()), 2);
  EXPECT_TRUE(Verify().ok);
  EXPECT_EQ(Verify().checked, 0);
  AuditEvent c = Append("bob", "models", 1);
  EXPECT_EQ(c.id, 3);
  EXPECT_NE(c.prev_hash, "");
  EXPECT_NE(c.prev_hash, a.hash);
  EXPECT_TRUE(Verify().ok);
}

// The append is on every state-changing request's path: it must stay small.
TEST_F(AuditStoreTest, AppendIsCheap) {
  constexpr int kN = 500;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kN; ++i) Append("alice", "models", 1);
  const auto per_append = (std::chrono::steady_clock::now() - start) / kN;
  RecordProperty(
      "append_us",
      std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(per_append).count()));
  // Generous (sanitized debug builds on shared CI cores); typically tens of microseconds.
  EXPECT_LT(per_append, std::chrono::milliseconds(5));
  EXPECT_TRUE(Verify().ok);
}

}  // namespace
}  // namespace segma::store
