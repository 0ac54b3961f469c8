#include <sched.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sys/syscall.h>

#include "common/event_bus.h"
#include "common/thread.h"
#include "gateway/openai_proxy.h"
#include "gateway/usage_meter.h"
#include "store/sqlite/sqlite_store.h"

namespace segma::gateway {
namespace {

class MemorySink : public UsageSink {
 public:
  Status Write(const std::vector<store::UsageRecord>& batch) override {
    std::lock_guard lock(mu);
    ++writes;
    if (fail_next > 0) {
      --fail_next;
      return UnavailableError("sink down");
    }
    max_batch = std::max(max_batch, batch.size());
    records.insert(records.end(), batch.begin(), batch.end());
    return OkStatus();
  }
  std::mutex mu;
  std::vector<store::UsageRecord> records;
  size_t max_batch = 0;
  int writes = 0;
  int fail_next = 0;
};

store::UsageRecord Rec(std::string id, int64_t project, std::string model, int64_t p, int64_t c,
                       Timestamp t = Timestamp(std::chrono::seconds(1'800'000'000))) {
  store::UsageRecord r;
  r.request_id = std::move(id);
  r.time = t;
  r.api_key_id = project * 10;
  r.user_id = project * 100;
  r.project_id = project;
  r.model = std::move(model);
  r.prompt_tokens = p;
  r.completion_tokens = c;
  r.cached_tokens = 1;
  r.duration_ms = 5;
  r.status = 200;
  return r;
}

TEST(UsageMeterTest, StopFlushesEverythingInBatches) {
  MemorySink sink;
  UsageMeterOptions o;
  o.batch_size = 64;
  o.flush_interval = std::chrono::hours(1);  // only Stop() can write the tail
  UsageMeter meter(sink, o);
  ASSERT_TRUE(meter.Start().ok());
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(meter.Record(Rec("r" + std::to_string(i), 1, "m", 1, 1)));
  }
  meter.Stop();
  EXPECT_EQ(sink.records.size(), 1000u);
  EXPECT_LE(sink.max_batch, 64u);
  EXPECT_EQ(meter.written(), 1000u);
  EXPECT_EQ(meter.queued(), 0u);
  EXPECT_EQ(sink.records.front().request_id, "r0");
  EXPECT_EQ(sink.records.back().request_id, "r999");
}

// Waits for `done` with a deadline far beyond any healthy run (a condition, not a timing).
template <typename Pred>
bool WaitFor(Pred done, std::chrono::seconds deadline = std::chrono::seconds(30)) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

TEST(UsageMeterTest, WritesWholeBatchesUnderLoadAndTheRestOnTheInterval) {
  UsageMeterOptions o;
  o.batch_size = 100;
  o.catch_up_at = 1;  // the writer's scheduling is another test's subject
  {
    // Under load only whole batches go out: with an interval that never comes, 250 records make
    // two writes of 100 and the 50 after them wait (here until Stop() writes them).
    MemorySink sink;
    o.flush_interval = std::chrono::hours(1);
    UsageMeter meter(sink, o);
    ASSERT_TRUE(meter.Start().ok());
    for (int i = 0; i < 250; ++i)
      ASSERT_TRUE(meter.Record(Rec("r" + std::to_string(i), 1, "m", 1, 1)));
    ASSERT_TRUE(WaitFor([&] { return meter.written() == 200; })) << meter.written();
    EXPECT_EQ(meter.queued(), 50u);
    {
      std::lock_guard lock(sink.mu);
      EXPECT_EQ(sink.writes, 2);
    }
    meter.Stop();
    EXPECT_EQ(meter.written(), 250u);
    std::lock_guard lock(sink.mu);
    EXPECT_EQ(sink.writes, 3);
    EXPECT_EQ(sink.records.back().request_id, "r249");
  }
  {
    // Less than a batch goes out on the interval, in one write.
    MemorySink sink;
    o.flush_interval = std::chrono::milliseconds(50);
    UsageMeter meter(sink, o);
    for (int i = 0; i < 50; ++i)  // queued before the writer starts: one interval holds them all
      ASSERT_TRUE(meter.Record(Rec("s" + std::to_string(i), 1, "m", 1, 1)));
    ASSERT_TRUE(meter.Start().ok());
    ASSERT_TRUE(WaitFor([&] { return meter.written() == 50; })) << meter.written();
    std::lock_guard lock(sink.mu);
    EXPECT_EQ(sink.writes, 1);
    EXPECT_EQ(sink.records.back().request_id, "s49");
  }
}

// Records the scheduling policy of the thread that writes each batch.
class PolicySink : public MemorySink {
 public:
  Status Write(const std::vector<store::UsageRecord>& batch) override {
    {
      std::lock_guard lock(mu);
      policies.push_back(::sched_getscheduler(0));
    }
    return MemorySink::Write(batch);
  }
  std::vector<int> policies;
};

TEST(UsageMeterTest, WriterYieldsTheCoreUntilItFallsBehind) {
  PolicySink sink;
  UsageMeterOptions o;
  o.batch_size = 10;
  o.catch_up_at = 30;
  UsageMeter meter(sink, o);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(meter.Record(Rec(std::to_string(i), 1, "m", 1, 1)));
  ASSERT_TRUE(meter.Start().ok());
  for (int i = 0; i < 500 && meter.written() < 40; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_EQ(meter.written(), 40u);
  // 40 and 30 queued: behind, so a fair share; 20 and 10: only what no one else wants (where the
  // process may leave SCHED_IDLE again, ADR 0019).
  const int idle = CanLeaveSchedIdle() ? SCHED_IDLE : SCHED_OTHER;
  {
    std::lock_guard lock(sink.mu);
    EXPECT_EQ(sink.policies, (std::vector<int>{SCHED_OTHER, SCHED_OTHER, idle, idle}));
  }
  meter.Stop();
}

// Holds the first write until released, as a writer starved in SCHED_IDLE would stall.
class StallingSink : public MemorySink {
 public:
  Status Write(const std::vector<store::UsageRecord>& batch) override {
    std::unique_lock lock(stall_mu);
    if (!writer_tid) {
      writer_tid = static_cast<pid_t>(::syscall(SYS_gettid));
      stall_cv.notify_all();
      stall_cv.wait(lock, [this] { return released; });
    }
    lock.unlock();
    return MemorySink::Write(batch);
  }
  pid_t WaitForWriter() {
    std::unique_lock lock(stall_mu);
    stall_cv.wait(lock, [this] { return writer_tid.has_value(); });
    return *writer_tid;
  }
  void Release() {
    std::lock_guard lock(stall_mu);
    released = true;
    stall_cv.notify_all();
  }
  std::mutex stall_mu;
  std::condition_variable stall_cv;
  std::optional<pid_t> writer_tid;
  bool released = false;
};

TEST(UsageMeterTest, FallingBehindRaisesAStalledWriterAtOnce) {
  if (!CanLeaveSchedIdle()) GTEST_SKIP() << "this process may not leave SCHED_IDLE";
  StallingSink sink;
  UsageMeterOptions o;
  o.batch_size = 10;
  o.catch_up_at = 30;
  UsageMeter meter(sink, o);
  ASSERT_TRUE(meter.Start().ok());
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(meter.Record(Rec("a" + std::to_string(i), 1, "m", 1, 1)));
  const pid_t writer = sink.WaitForWriter();
  // Keeping up: the first batch is written in SCHED_IDLE, here stalled.
  EXPECT_EQ(::sched_getscheduler(writer), SCHED_IDLE);
  for (int i = 0; i < 29; ++i)
    ASSERT_TRUE(meter.Record(Rec("b" + std::to_string(i), 1, "m", 1, 1)));
  EXPECT_EQ(::sched_getscheduler(writer), SCHED_IDLE);
  // The 30th record queued behind the stalled batch raises the writer in the middle of it.
  ASSERT_TRUE(meter.Record(Rec("b29", 1, "m", 1, 1)));
  EXPECT_EQ(::sched_getscheduler(writer), SCHED_OTHER);
  sink.Release();
  meter.Stop();
  EXPECT_EQ(sink.records.size(), 40u);
  EXPECT_EQ(meter.dropped(), 0u);
}

TEST(UsageMeterTest, BoundedQueueDropsInsteadOfBlocking) {
  MemorySink sink;
  UsageMeterOptions o;
  o.capacity = 10;
  metrics::Registry registry;
  UsageMeter meter(sink, o, &registry);  // not started: nothing drains
  for (int i = 0; i < 15; ++i) (void)meter.Record(Rec(std::to_string(i), 1, "m", 1, 1));
  EXPECT_EQ(meter.queued(), 10u);
  EXPECT_EQ(meter.dropped(), 5u);
  std::string text = registry.Serialize();
  EXPECT_NE(text.find("segma_gateway_usage_records_total{outcome=\"dropped\"} 5"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("segma_gateway_usage_queued_records 10"), std::string::npos) << text;
  EXPECT_TRUE(meter.Flush().ok());
  EXPECT_EQ(sink.records.size(), 10u);
  text = registry.Serialize();
  EXPECT_NE(text.find("segma_gateway_usage_records_total{outcome=\"written\"} 10"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("segma_gateway_usage_queued_records 0"), std::string::npos) << text;
}

TEST(UsageMeterTest, FailingSinkIsRetriedWithoutLoss) {
  MemorySink sink;
  sink.fail_next = 2;
  UsageMeterOptions o;
  o.retry_backoff = std::chrono::milliseconds(1);
  UsageMeter meter(sink, o);
  for (int i = 0; i < 5; ++i) (void)meter.Record(Rec(std::to_string(i), 1, "m", 1, 1));
  EXPECT_FALSE(meter.Flush().ok());
  EXPECT_EQ(meter.queued(), 5u);
  ASSERT_TRUE(meter.Start().ok());
  meter.Stop();  // retries until the sink recovers
  EXPECT_EQ(sink.records.size(), 5u);
  EXPECT_EQ(meter.dropped(), 0u);
}

TEST(UsageStoreTest, InsertIsIdempotentAndQueriesGroup) {
  FakeClock clock;
  EventBus bus;
  auto store = store::OpenSqliteStore(":memory:", bus, clock);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  const Timestamp t0 = Timestamp(std::chrono::seconds(1'800'000'000));
  std::vector<store::UsageRecord> batch = {Rec("a", 1, "llama", 10, 5, t0),
                                           Rec("b", 1, "qwen", 20, 6, t0),
                                           Rec("c", 2, "llama", 30, 7, t0 + std::chrono::hours(1))};
  batch[2].status = 500;
  ASSERT_TRUE((*store)->InsertUsageRecords(batch).ok());
  ASSERT_TRUE((*store)->InsertUsageRecords(batch).ok());  // a retried batch changes nothing

  store::UsageQuery q;
  q.from = t0;
  q.to = t0 + std::chrono::hours(2);
  q.group_by = store::UsageGroupBy::kProject;
  auto by_project = (*store)->QueryUsage(q);
  ASSERT_TRUE(by_project.ok()) << by_project.status().ToString();
  ASSERT_EQ(by_project->size(), 2u);
  EXPECT_EQ((*by_project)[0].key, "1");
  EXPECT_EQ((*by_project)[0].requests, 2);
  EXPECT_EQ((*by_project)[0].prompt_tokens, 30);
  EXPECT_EQ((*by_project)[0].completion_tokens, 11);
  EXPECT_EQ((*by_project)[0].cached_tokens, 2);
  EXPECT_EQ((*by_project)[1].errors, 1);

  q.group_by = store::UsageGroupBy::kModel;
  q.project_ids = std::vector<int64_t>{1};
  auto by_model = (*store)->QueryUsage(q);
  ASSERT_TRUE(by_model.ok());
  ASSERT_EQ(by_model->size(), 2u);
  EXPECT_EQ((*by_model)[0].key, "llama");
  EXPECT_EQ((*by_model)[0].prompt_tokens, 10);

  q.project_ids.reset();
  q.to = t0 + std::chrono::minutes(30);  // excludes record c
  q.group_by = store::UsageGroupBy::kKey;
  auto by_key = (*store)->QueryUsage(q);
  ASSERT_TRUE(by_key.ok());
  ASSERT_EQ(by_key->size(), 1u);
  EXPECT_EQ((*by_key)[0].key, "10");

  q.from = q.to + std::chrono::seconds(1);
  EXPECT_EQ((*store)->QueryUsage(q).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store::ParseUsageGroupBy("user"), store::UsageGroupBy::kUser);
  EXPECT_FALSE(store::ParseUsageGroupBy("team").has_value());
}

// The daily roll-up (usage_daily, for reports over long periods) read straight from the file.
TEST(UsageStoreTest, DailyRollUpCountsEachRecordOnce) {
  const std::string path =
      ::testing::TempDir() + "usage-rollup-" + std::to_string(::getpid()) + ".db";
  std::remove(path.c_str());
  FakeClock clock;
  EventBus bus;
  {
    auto store = store::OpenSqliteStore(path, bus, clock);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    const Timestamp t0 = Timestamp(std::chrono::seconds(1'800'000'000));  // 2027-01-15 08:00 UTC
    std::vector<store::UsageRecord> batch = {
        Rec("a", 1, "llama", 10, 5, t0), Rec("b", 1, "llama", 20, 6, t0),
        Rec("c", 1, "llama", 30, 7, t0 + std::chrono::hours(1)), Rec("d", 1, "qwen", 1, 1, t0),
        Rec("e", 1, "llama", 4, 4, t0 + std::chrono::hours(24))};  // the next day
    batch[2].status = 503;
    ASSERT_TRUE((*store)->InsertUsageRecords(batch).ok());
    ASSERT_TRUE((*store)->InsertUsageRecords(batch).ok());  // retried: no double counting
    ASSERT_TRUE((*store)->InsertUsageRecords({Rec("f", 1, "llama", 100, 50, t0)}).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db,
                               "SELECT day, model, requests, errors, prompt_tokens, "
                               "completion_tokens, cached_tokens FROM usage_daily "
                               "ORDER BY day, model",
                               -1, &st, nullptr),
            SQLITE_OK);
  std::vector<std::string> rows;
  while (sqlite3_step(st) == SQLITE_ROW) {
    std::string row = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    row += std::string(" ") + reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
    for (int i = 2; i < 7; ++i) row += " " + std::to_string(sqlite3_column_int64(st, i));
    rows.push_back(row);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  std::remove(path.c_str());
  // requests errors prompt completion cached
  EXPECT_EQ(rows,
            (std::vector<std::string>{"2027-01-15 llama 4 1 160 68 4", "2027-01-15 qwen 1 0 1 1 1",
                                      "2027-01-16 llama 1 0 4 4 1"}));
}

TEST(UsageStoreTest, SinkTouchesLastUsedOfTheBatchKeys) {
  FakeClock clock;
  EventBus bus;
  auto store = store::OpenSqliteStore(":memory:", bus, clock);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  types::User u;
  u.username = "owner";
  u.password_hash = "x";
  auto user = (*store)->CreateUser(u);
  ASSERT_TRUE(user.ok()) << user.status().ToString();
  types::Project p;
  p.name = "p";
  auto project = (*store)->CreateProject(p);
  ASSERT_TRUE(project.ok());
  types::ApiKey k;
  k.name = "k";
  k.project_id = project->id;
  k.user_id = user->id;
  k.prefix = "sk-segma-abc";
  k.secret_hash = std::string(64, 'a');
  auto key = (*store)->CreateApiKey(k);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_FALSE(key->last_used_at.has_value());

  const Timestamp t0 = Timestamp(std::chrono::seconds(1'800'000'000));
  std::vector<store::UsageRecord> batch = {
      Rec("a", project->id, "m", 1, 1, t0),
      Rec("b", project->id, "m", 1, 1, t0 + std::chrono::seconds(5))};
  for (auto& r : batch) r.api_key_id = key->id;
  StoreUsageSink sink(**store);
  ASSERT_TRUE(sink.Write(batch).ok());
  auto touched = (*store)->GetApiKey(key->id);
  ASSERT_TRUE(touched.ok());
  ASSERT_TRUE(touched->last_used_at.has_value());
  EXPECT_EQ(*touched->last_used_at,
            t0 + std::chrono::seconds(5));  // the latest request of the batch
}

// ---- SSE usage tap ------------------------------------------------------------------------------

const char kUsageEvent[] =
    "data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,"
    "\"total_tokens\":13,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\n";
const char kChunk[] = "data: {\"id\":\"x\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
const char kDone[] = "data: [DONE]\n\n";

TEST(SseUsageTapTest, PassThroughKeepsBytesAndReadsUsage) {
  const std::string all = std::string(kChunk) + kChunk + kUsageEvent + kDone;
  for (size_t split = 1; split < all.size(); split += 7) {
    SseUsageTap tap(false);
    std::string out;
    out += tap.Process(std::string_view(all).substr(0, split));
    out += tap.Process(std::string_view(all).substr(split));
    out += tap.Rest();
    EXPECT_EQ(out, all);
    ASSERT_TRUE(tap.has_usage());
    EXPECT_EQ(tap.prompt_tokens(), 9);
    EXPECT_EQ(tap.completion_tokens(), 4);
    EXPECT_EQ(tap.cached_tokens(), 2);
  }
}

TEST(SseUsageTapTest, DropsOnlyTheUsageChunkAtAnySplit) {
  const std::string all = std::string(kChunk) + kChunk + kUsageEvent + kDone;
  const std::string want = std::string(kChunk) + kChunk + kDone;
  for (size_t split = 1; split < all.size(); ++split) {
    SseUsageTap tap(true);
    std::string out;
    out += tap.Process(std::string_view(all).substr(0, split));
    out += tap.Process(std::string_view(all).substr(split));
    out += tap.Rest();
    ASSERT_EQ(out, want) << "split at " << split;
    EXPECT_TRUE(tap.has_usage());
    EXPECT_EQ(tap.completion_tokens(), 4);
  }
  // Whole events arriving as pieces go on unchanged, piece by piece.
  SseUsageTap tap(true);
  EXPECT_EQ(tap.Process(kChunk), kChunk);
  EXPECT_EQ(tap.Process(kUsageEvent), "");
  EXPECT_EQ(tap.Process(kDone), kDone);
}

TEST(SseUsageTapTest, KeepsChunksThatCarryContentAndUsage) {
  const std::string both =
      "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":1,"
      "\"completion_tokens\":1}}\n\n";
  SseUsageTap tap(true);
  EXPECT_EQ(tap.Process(both), both);
  EXPECT_TRUE(tap.has_usage());
}

// Engines asked for include_usage put "usage":null on every chunk; a client that did not ask gets
// the chunks without it, as the engine would have sent them (found with engine-sim and the npm
// openai client, tests/integration/openai_sdk_test.cc).
TEST(SseUsageTapTest, RemovesNullUsageWhenTheClientDidNotAskForUsage) {
  const std::string with_null =
      "data: {\"id\":\"x\",\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":null\"}}],"
      "\"usage\":null}\n\n";
  const std::string without =
      "data: {\"id\":\"x\",\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":null\"}}]}\n\n";
  const std::string all = with_null + with_null + kUsageEvent + kDone;
  const std::string want = without + without + kDone;
  for (size_t split = 1; split < all.size(); ++split) {
    SseUsageTap tap(true);
    std::string out;
    out += tap.Process(std::string_view(all).substr(0, split));
    out += tap.Process(std::string_view(all).substr(split));
    out += tap.Rest();
    ASSERT_EQ(out, want) << "split at " << split;
  }
  SseUsageTap first(true);
  EXPECT_EQ(first.Process("data: {\"usage\": null, \"id\":\"y\"}\n\n"), "data: {\"id\":\"y\"}\n\n");
  // Asked for: untouched.
  SseUsageTap keep(false);
  EXPECT_EQ(keep.Process(with_null), with_null);
}

TEST(SseUsageTapTest, ReadsUsageAfterNullUsagesWhateverTheSpacing) {
  SseUsageTap tap(false);
  tap.Process("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\": null}\n\n");
  tap.Process(
      "data: {\"choices\":[{\"usage\":null,\"delta\":{}}],\"usage\" :\n"
      "{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n");
  ASSERT_TRUE(tap.has_usage());
  EXPECT_EQ(tap.prompt_tokens(), 4);
  EXPECT_EQ(tap.completion_tokens(), 2);
  SseUsageTap none(false);
  none.Process("data: {\"usage\":null}\n\ndata: {\"x\":\"\\\"usage\\\":{\"}\n\n");
  EXPECT_FALSE(none.has_usage());
}

TEST(ParseUsageTest, ReadsNonStreamingBodies) {
  int64_t p = 0, c = 0, k = 0;
  EXPECT_TRUE(ParseUsage(R"({"usage":{"prompt_tokens":3,"completion_tokens":2}})", p, c, k));
  EXPECT_EQ(p, 3);
  EXPECT_EQ(c, 2);
  EXPECT_EQ(k, 0);
  EXPECT_FALSE(ParseUsage(R"({"data":[]})", p, c, k));
  EXPECT_FALSE(ParseUsage("not json \"usage\"", p, c, k));
}

TEST(ParseUsageTest, ReadsOnlyTheTopLevelUsageObject) {
  int64_t p = 0, c = 0, k = 0;
  // A "usage" inside a choice, or inside a string, is not the response's usage.
  EXPECT_FALSE(
      ParseUsage(R"({"choices":[{"usage":{"prompt_tokens":9}}],"x":"\"usage\""})", p, c, k));
  EXPECT_FALSE(ParseUsage(R"({"usage":null})", p, c, k));
  EXPECT_FALSE(ParseUsage(R"({"usage":{"prompt_tokens":3})", p, c, k));  // truncated
  ASSERT_TRUE(ParseUsage(R"({"id":"x","choices":[{"message":{"content":"usage"}}],)"
                         R"("usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,)"
                         R"("prompt_tokens_details":{"cached_tokens":8}},"system":{"x":[1,2]}})",
                         p, c, k));
  EXPECT_EQ(p, 12);
  EXPECT_EQ(c, 7);
  EXPECT_EQ(k, 8);
}

}  // namespace
}  // namespace segma::gateway
