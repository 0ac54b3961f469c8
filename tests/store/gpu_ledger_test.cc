// The GPU-time ledger (Store "GPU-time ledger"), usage buckets and cost, on a SQLite file with an
// injected clock: intervals follow instance states, stop at a lost worker's last heartbeat,
// survive a restart, split exactly at buckets and at the query's window, and the totals of a
// grouped report equal the sums of the per-request records.

#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <map>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "common/clock.h"
#include "common/event_bus.h"
#include "store/sqlite/sqlite_store.h"
#include "store/store.h"

namespace segma::store {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
constexpr int64_t kGiB = int64_t{1} << 30;

Timestamp At(int y, unsigned m, unsigned d, int h = 0, int min = 0) {
  return std::chrono::sys_days{std::chrono::year{y} / m / d} + hours(h) + minutes(min);
}

class GpuLedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "segma-ledger-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    clock_.Set(At(2026, 1, 31, 22));
    Open();
    types::Cluster c;
    c.name = "default";
    c.is_default = true;
    c.registration_token = "reg";
    auto cluster = store_->CreateCluster(c);
    ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
    auto w = store_->UpsertWorkerByName(cluster->id, "gpu-1", "10.0.0.1", 10150, "t1", {});
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    worker_ = w->id;
    Heartbeat();
    types::Project p;
    p.name = "team";
    auto project = store_->CreateProject(p);
    ASSERT_TRUE(project.ok());
    project_ = project->id;
    types::Model m;
    m.name = "chat";
    m.project_id = project_;
    m.source.type = types::SourceType::kSimulated;
    m.source.params_b = 8;
    m.replicas = 1;
    auto model = store_->CreateModel(m);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    model_ = model->id;
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Open() {
    store_.reset();
    auto s = OpenSqliteStore(dir_ + "/segma.db", bus_, clock_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }

  void Heartbeat() {
    types::WorkerStatus status;
    for (int i = 0; i < 4; ++i) {
      types::GpuDevice g;
      g.index = i;
      g.name = "NVIDIA H200";
      g.uuid = "GPU-" + std::to_string(i);
      g.memory_total = 141 * kGiB;
      status.gpus.push_back(g);
    }
    auto r = store_->RecordHeartbeat(worker_, status, clock_.Now());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }

  // A new instance of the model placed on GPUs `gpus` of the worker (20 GiB each), in `state`.
  int64_t Place(std::vector<int> gpus, types::InstanceState state) {
    types::ModelInstance i;
    i.model_id = model_;
    i.name = "chat-" + std::to_string(++instances_);
    auto created = store_->CreateModelInstance(i);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    ModelInstancePatch p;
    p.worker_id = worker_;
    p.worker_name = "gpu-1";
    p.gpu_indexes = gpus;
    types::ResourceClaim claim;
    for (int g : gpus) claim.vram[g] = 20 * kGiB;
    p.claim = claim;
    p.state = state;
    EXPECT_TRUE(store_->UpdateModelInstance(created->id, p).ok());
    return created->id;
  }
  void SetState(int64_t id, types::InstanceState state) {
    ModelInstancePatch p;
    p.state = state;
    auto r = store_->UpdateModelInstance(id, p);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  std::vector<GpuInterval> Intervals() {
    auto r = store_->ListGpuIntervals(Timestamp{}, At(2100, 1, 1), std::nullopt);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::vector<GpuInterval>{};
  }
  std::vector<UsageSummary> Query(UsageGroupBy g, UsageBucket b, Timestamp from, Timestamp to) {
    UsageQuery q;
    q.group_by = g;
    q.bucket = b;
    q.from = from;
    q.to = to;
    auto r = store_->QueryUsage(q);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::vector<UsageSummary>{};
  }

  std::string dir_;
  FakeClock clock_;
  EventBus bus_;
  std::unique_ptr<Store> store_;
  int64_t worker_ = 0, project_ = 0, model_ = 0;
  int instances_ = 0;
};

TEST_F(GpuLedgerTest, IntervalsFollowRunningAndTheClaim) {
  const Timestamp t0 = clock_.Now();
  const int64_t id = Place({0, 1}, types::InstanceState::kStarting);
  EXPECT_TRUE(Intervals().empty());  // STARTING holds GPUs but is not billed
  clock_.Advance(minutes(5));
  SetState(id, types::InstanceState::kRunning);
  clock_.Advance(hours(2));
  SetState(id, types::InstanceState::kRunning);  // a report that changes nothing: same interval
  ASSERT_EQ(Intervals().size(), 1u);
  clock_.Advance(hours(1));
  SetState(id, types::InstanceState::kStopping);
  std::vector<GpuInterval> rows = Intervals();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].instance_id, id);
  EXPECT_EQ(rows[0].deployment_id, model_);
  EXPECT_EQ(rows[0].model, "chat");
  EXPECT_EQ(rows[0].project_id, project_);
  EXPECT_EQ(rows[0].worker_id, worker_);
  EXPECT_EQ(rows[0].gpu_type, "NVIDIA H200");
  EXPECT_EQ(rows[0].gpu_indexes, (std::vector<int>{0, 1}));
  EXPECT_EQ(rows[0].gpu_count, 2);
  EXPECT_EQ(rows[0].vram_bytes, 40 * kGiB);
  EXPECT_EQ(rows[0].started_at, t0 + minutes(5));
  EXPECT_EQ(rows[0].ended_at, t0 + minutes(5) + hours(3));

  // 2 GPUs x 3 h, 40 GiB x 3 h, reported under the GPU type, the project and the deployment.
  for (UsageGroupBy g :
       {UsageGroupBy::kGpuType, UsageGroupBy::kProject, UsageGroupBy::kDeployment}) {
    auto q = Query(g, UsageBucket::kNone, t0, t0 + hours(24));
    ASSERT_EQ(q.size(), 1u) << UsageGroupByName(g);
    EXPECT_EQ(q[0].gpu_ms, 2 * 3 * 3'600'000);
    EXPECT_DOUBLE_EQ(q[0].gpu_hours(), 6.0);
    EXPECT_DOUBLE_EQ(q[0].vram_gib_hours, 120.0);
  }
  EXPECT_EQ(Query(UsageGroupBy::kGpuType, UsageBucket::kNone, t0, t0 + hours(1))[0].key,
            "NVIDIA H200");
  // Not attributable to users: one row with an empty key carries it.
  auto by_user = Query(UsageGroupBy::kUser, UsageBucket::kNone, t0, t0 + hours(24));
  ASSERT_EQ(by_user.size(), 1u);
  EXPECT_EQ(by_user[0].key, "");
  EXPECT_EQ(by_user[0].gpu_ms, 2 * 3 * 3'600'000);

  // Moving to other GPUs while RUNNING closes the interval and opens another.
  SetState(id, types::InstanceState::kRunning);
  clock_.Advance(hours(1));
  ModelInstancePatch move;
  move.gpu_indexes = std::vector<int>{2};
  types::ResourceClaim claim;
  claim.vram[2] = 30 * kGiB;
  move.claim = claim;
  ASSERT_TRUE(store_->UpdateModelInstance(id, move).ok());
  rows = Intervals();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1].ended_at, clock_.Now());
  EXPECT_FALSE(rows[2].ended_at.has_value());
  EXPECT_EQ(rows[2].gpu_count, 1);
  EXPECT_EQ(rows[2].vram_bytes, 30 * kGiB);
  // Deleting it closes the open one.
  clock_.Advance(minutes(30));
  ASSERT_TRUE(store_->DeleteModelInstance(id).ok());
  rows = Intervals();
  EXPECT_EQ(rows[2].ended_at, clock_.Now());
}

TEST_F(GpuLedgerTest, LostWorkerStopsCountingAtItsLastHeartbeatAndResumes) {
  const int64_t id = Place({0}, types::InstanceState::kRunning);
  const Timestamp opened = clock_.Now();
  clock_.Advance(minutes(10));
  Heartbeat();
  const Timestamp last_heartbeat = clock_.Now();
  clock_.Advance(minutes(20));  // the worker is silent
  auto lost = store_->MarkStaleWorkersNotReady(clock_.Now() - minutes(1), "no heartbeat");
  ASSERT_TRUE(lost.ok());
  ASSERT_EQ(lost->size(), 1u);
  std::vector<GpuInterval> rows = Intervals();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].started_at, opened);
  EXPECT_EQ(rows[0].ended_at, last_heartbeat);
  // The instance is still RUNNING in the store, but nothing counts while the worker is lost.
  clock_.Advance(hours(1));
  SetState(id, types::InstanceState::kRunning);
  EXPECT_EQ(Intervals().size(), 1u);
  auto q = Query(UsageGroupBy::kProject, UsageBucket::kNone, opened, clock_.Now());
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].gpu_ms, 10 * 60'000);
  // It comes back: its still RUNNING instance counts again from that heartbeat.
  Heartbeat();
  rows = Intervals();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].started_at, clock_.Now());
  EXPECT_FALSE(rows[1].ended_at.has_value());
  // Deleting the worker closes at its last heartbeat too.
  clock_.Advance(minutes(7));
  Heartbeat();
  clock_.Advance(minutes(3));
  ASSERT_TRUE(store_->DeleteWorker(worker_).ok());
  rows = Intervals();
  ASSERT_TRUE(rows[1].ended_at.has_value());
  EXPECT_EQ(*rows[1].ended_at - rows[1].started_at, minutes(7));
}

TEST_F(GpuLedgerTest, RestartKeepsRunningIntervalsAndClosesTheOthersAtLastSeen) {
  const Timestamp t0 = clock_.Now();
  const int64_t kept = Place({0}, types::InstanceState::kRunning);
  const int64_t stopped = Place({1, 2}, types::InstanceState::kRunning);
  clock_.Advance(minutes(15));
  Heartbeat();
  const Timestamp last_seen = clock_.Now();
  store_.reset();  // the server stops (or dies)
  // While it was down, `stopped` left RUNNING in a way the ledger did not see (an older binary,
  // a hand edit): the state is in the database, the interval still open.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ + "/segma.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           ("UPDATE model_instances SET state = 'ERROR' WHERE id = " +
                            std::to_string(stopped))
                               .c_str(),
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  clock_.Advance(hours(1));
  Open();
  std::vector<GpuInterval> rows = Intervals();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].instance_id, kept);
  EXPECT_EQ(rows[0].started_at, t0);
  EXPECT_FALSE(rows[0].ended_at.has_value());  // still RUNNING: keeps counting
  EXPECT_EQ(rows[1].instance_id, stopped);
  EXPECT_EQ(rows[1].ended_at, last_seen);
  clock_.Advance(hours(1));
  auto q = Query(UsageGroupBy::kProject, UsageBucket::kNone, t0, clock_.Now());
  ASSERT_EQ(q.size(), 1u);
  // kept: 1 GPU x 2 h 15 min (through the restart); stopped: 2 GPUs x 15 min.
  EXPECT_EQ(q[0].gpu_ms, (135 + 2 * 15) * 60'000);

  // A database from before the ledger: a RUNNING instance without an interval counts from the
  // start on.
  store_.reset();
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ + "/segma.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "DELETE FROM gpu_intervals", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  Open();
  rows = Intervals();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].instance_id, kept);
  EXPECT_EQ(rows[0].started_at, clock_.Now());
}

TEST_F(GpuLedgerTest, IntervalsSplitExactlyAtBucketsAndTheWindow) {
  // 2 GPUs from Jan 31 22:30 to Feb 1 01:15 (UTC): across an hour, a day and a month boundary.
  clock_.Set(At(2026, 1, 31, 22, 30));
  const int64_t id = Place({0, 1}, types::InstanceState::kRunning);
  clock_.Set(At(2026, 2, 1, 1, 15));
  SetState(id, types::InstanceState::kStopping);
  const Timestamp from = At(2026, 1, 1), to = At(2026, 3, 1);

  auto months = Query(UsageGroupBy::kGpuType, UsageBucket::kMonth, from, to);
  ASSERT_EQ(months.size(), 2u);
  EXPECT_EQ(months[0].bucket, At(2026, 1, 1));
  EXPECT_EQ(months[0].gpu_ms, 2 * 90 * 60'000);
  EXPECT_EQ(months[1].bucket, At(2026, 2, 1));
  EXPECT_EQ(months[1].gpu_ms, 2 * 75 * 60'000);
  auto days = Query(UsageGroupBy::kGpuType, UsageBucket::kDay, from, to);
  ASSERT_EQ(days.size(), 2u);
  EXPECT_EQ(days[0].bucket, At(2026, 1, 31));
  EXPECT_EQ(days[1].bucket, At(2026, 2, 1));
  EXPECT_EQ(days[0].gpu_ms + days[1].gpu_ms, 2 * 165 * 60'000);
  auto hrs = Query(UsageGroupBy::kGpuType, UsageBucket::kHour, from, to);
  ASSERT_EQ(hrs.size(), 4u);  // 22:30-23, 23-00, 00-01, 01-01:15
  EXPECT_EQ(hrs[0].bucket, At(2026, 1, 31, 22));
  EXPECT_EQ(hrs[0].gpu_ms, 2 * 30 * 60'000);
  EXPECT_EQ(hrs[1].gpu_ms, 2 * 60 * 60'000);
  EXPECT_EQ(hrs[2].gpu_ms, 2 * 60 * 60'000);
  EXPECT_EQ(hrs[3].bucket, At(2026, 2, 1, 1));
  EXPECT_EQ(hrs[3].gpu_ms, 2 * 15 * 60'000);
  // The window cuts it exactly: [23:10, 00:20) holds 70 minutes of it.
  auto window = Query(UsageGroupBy::kGpuType, UsageBucket::kNone, At(2026, 1, 31, 23, 10),
                      At(2026, 2, 1, 0, 20));
  ASSERT_EQ(window.size(), 1u);
  EXPECT_EQ(window[0].gpu_ms, 2 * 70 * 60'000);
  EXPECT_FALSE(window[0].bucket.has_value());
}

TEST_F(GpuLedgerTest, GroupedBucketedTotalsEqualThePerRequestRecords) {
  // 3,000 records over three months: every grouping and bucket sums to the records exactly.
  std::mt19937_64 rng(16);
  std::vector<UsageRecord> batch;
  UsageSummary want;
  const Timestamp from = At(2026, 1, 1);
  const int64_t span_ms = 90LL * 24 * 3'600'000;
  for (int i = 0; i < 3000; ++i) {
    UsageRecord r;
    r.request_id = "req-" + std::to_string(i);
    r.time = from + std::chrono::milliseconds(static_cast<int64_t>(rng() % span_ms));
    r.api_key_id = 1 + static_cast<int64_t>(rng() % 5);
    r.user_id = 1 + static_cast<int64_t>(rng() % 3);
    r.project_id = project_;
    r.model = i % 3 == 0 ? "chat" : (i % 3 == 1 ? "split-route" : "embed");
    r.deployment_id = model_;
    r.prompt_tokens = static_cast<int64_t>(rng() % 5000);
    r.completion_tokens = static_cast<int64_t>(rng() % 2000);
    r.cached_tokens = static_cast<int64_t>(rng() % 100);
    r.status = i % 17 == 0 ? 500 : 200;
    r.finish = i % 29 == 0 ? UsageFinish::kClientDisconnected : UsageFinish::kComplete;
    r.duration_ms = 10;
    ++want.requests;
    want.errors += r.status >= 400;
    want.prompt_tokens += r.prompt_tokens;
    want.completion_tokens += r.completion_tokens;
    want.cached_tokens += r.cached_tokens;
    want.cut_short += r.finish != UsageFinish::kComplete;
    batch.push_back(std::move(r));
  }
  ASSERT_TRUE(store_->InsertUsageRecords(batch).ok());
  for (UsageGroupBy g : {UsageGroupBy::kProject, UsageGroupBy::kUser, UsageGroupBy::kKey,
                         UsageGroupBy::kModel, UsageGroupBy::kRoute, UsageGroupBy::kDeployment,
                         UsageGroupBy::kGpuType, UsageGroupBy::kFinish}) {
    for (UsageBucket b :
         {UsageBucket::kNone, UsageBucket::kHour, UsageBucket::kDay, UsageBucket::kMonth}) {
      UsageSummary got;
      Timestamp previous{};
      for (const UsageSummary& r : Query(g, b, from, from + std::chrono::milliseconds(span_ms))) {
        EXPECT_EQ(r.bucket.has_value(), b != UsageBucket::kNone);
        if (r.bucket) {
          EXPECT_GE(*r.bucket, previous);  // ordered by bucket
          EXPECT_EQ(UsageBucketStart(b, *r.bucket), *r.bucket);
          previous = *r.bucket;
        }
        got.requests += r.requests;
        got.errors += r.errors;
        got.prompt_tokens += r.prompt_tokens;
        got.completion_tokens += r.completion_tokens;
        got.cached_tokens += r.cached_tokens;
        got.cut_short += r.cut_short;
      }
      const std::string what =
          std::string(UsageGroupByName(g)) + "/" + std::string(UsageBucketName(b));
      EXPECT_EQ(got.requests, want.requests) << what;
      EXPECT_EQ(got.errors, want.errors) << what;
      EXPECT_EQ(got.prompt_tokens, want.prompt_tokens) << what;
      EXPECT_EQ(got.completion_tokens, want.completion_tokens) << what;
      EXPECT_EQ(got.cached_tokens, want.cached_tokens) << what;
      EXPECT_EQ(got.cut_short, want.cut_short) << what;
    }
  }
  // The monthly rows hold what each month's records hold.
  auto months = Query(UsageGroupBy::kProject, UsageBucket::kMonth, from,
                      from + std::chrono::milliseconds(span_ms));
  std::map<Timestamp, int64_t> per_month;
  for (const UsageRecord& r : batch) per_month[UsageBucketStart(UsageBucket::kMonth, r.time)]++;
  ASSERT_EQ(months.size(), per_month.size());
  for (const UsageSummary& m : months) EXPECT_EQ(m.requests, per_month[*m.bucket]);
}

TEST_F(GpuLedgerTest, CostIsTokensAndGpuHoursAtTheTablesPrices) {
  PriceTable t;
  t.currency = "EUR";
  t.items = {{PriceUnit::kPrompt1MTokens, "chat", 2.0},
             {PriceUnit::kCompletion1MTokens, "chat", 6.0},
             {PriceUnit::kGpuHour, "NVIDIA H200", 4.0}};
  auto stored = store_->ReplacePrices(t);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_EQ(stored->currency, "EUR");
  EXPECT_EQ(stored->updated_at, clock_.Now());
  const Timestamp t0 = clock_.Now();
  const int64_t id = Place({0, 1}, types::InstanceState::kRunning);
  std::vector<UsageRecord> batch(2);
  batch[0].request_id = "a";
  batch[0].model = "chat";
  batch[0].prompt_tokens = 1'000'000;
  batch[0].completion_tokens = 250'000;
  batch[1].request_id = "b";
  batch[1].model = "chat";
  batch[1].prompt_tokens = 500'000;
  batch[1].completion_tokens = 250'000;
  for (UsageRecord& r : batch) {
    r.time = t0 + minutes(1);
    r.project_id = project_;
    r.instance_id = id;
    r.deployment_id = model_;
  }
  UsageRecord unpriced = batch[0];
  unpriced.request_id = "c";
  unpriced.model = "no-price";
  batch.push_back(unpriced);
  ASSERT_TRUE(store_->InsertUsageRecords(batch).ok());
  clock_.Advance(minutes(90));
  SetState(id, types::InstanceState::kStopping);
  // 1.5M prompt x 2 + 0.5M completion x 6 + 2 GPUs x 1.5 h x 4 = 3 + 3 + 12.
  auto q = Query(UsageGroupBy::kProject, UsageBucket::kNone, t0, t0 + hours(3));
  ASSERT_EQ(q.size(), 1u);
  EXPECT_DOUBLE_EQ(q[0].cost, 18.0);
  // By GPU type the requests land on the type their instance held.
  auto by_type = Query(UsageGroupBy::kGpuType, UsageBucket::kNone, t0, t0 + hours(3));
  ASSERT_EQ(by_type.size(), 1u);
  EXPECT_EQ(by_type[0].key, "NVIDIA H200");
  EXPECT_EQ(by_type[0].requests, 3);
  EXPECT_DOUBLE_EQ(by_type[0].cost, 18.0);
  // By route, GPU time has no route: its cost is on the empty-key row.
  auto by_route = Query(UsageGroupBy::kRoute, UsageBucket::kNone, t0, t0 + hours(3));
  ASSERT_EQ(by_route.size(), 3u);
  EXPECT_EQ(by_route[0].key, "chat");
  EXPECT_DOUBLE_EQ(by_route[0].cost, 6.0);
  EXPECT_EQ(by_route[1].key, "no-price");
  EXPECT_DOUBLE_EQ(by_route[1].cost, 0.0);
  EXPECT_EQ(by_route[2].key, "");  // last, after the routes
  EXPECT_DOUBLE_EQ(by_route[2].cost, 12.0);
  EXPECT_EQ(by_route[2].requests, 0);
}

TEST_F(GpuLedgerTest, BadPriceTablesAreRejectedWhole) {
  PriceTable good;
  good.items = {{PriceUnit::kGpuHour, "NVIDIA H200", 2.5}};
  ASSERT_TRUE(store_->ReplacePrices(good).ok());
  std::vector<PriceTable> bad(4);
  bad[0].items = {{PriceUnit::kGpuHour, "A100", -1}};
  bad[1].items = {{PriceUnit::kGpuHour, "A100", std::nan("")}};
  bad[2].currency = "usd";
  bad[3].items = {{PriceUnit::kGpuHour, "A100", 1}, {PriceUnit::kGpuHour, "A100", 2}};
  for (const PriceTable& t : bad) {
    EXPECT_EQ(store_->ReplacePrices(t).status().code(), StatusCode::kInvalidArgument);
  }
  auto now = store_->GetPrices();
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->currency, "USD");
  EXPECT_EQ(now->items, good.items);
}

}  // namespace
}  // namespace segma::store
