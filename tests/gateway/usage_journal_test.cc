// The usage journal (ADR 0024) and its full-disk policy (ADR 0025), through the UsageMeter: what
// a crash leaves is replayed at the next start, a request is never counted twice, a torn or
// corrupt tail is set aside, and a full disk is counted, logged, and served or refused.

#include "gateway/usage_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sys/mount.h>

#include "common/event_bus.h"
#include "gateway/usage_meter.h"
#include "store/sqlite/sqlite_store.h"

namespace segma::gateway {
namespace {

namespace fs = std::filesystem;

store::UsageRecord Rec(const std::string& id, int64_t prompt, int64_t completion) {
  store::UsageRecord r;
  r.request_id = id;
  r.time = Timestamp(std::chrono::milliseconds(1'800'000'000'123));
  r.api_key_id = 7;
  r.user_id = 8;
  r.project_id = 9;
  r.model = "chat";
  r.deployment_id = 3;
  r.instance_id = 4;
  r.prompt_tokens = prompt;
  r.completion_tokens = completion;
  r.cached_tokens = 1;
  r.ttft_ms = 12.5;
  r.duration_ms = 40.25;
  r.status = 200;
  return r;
}

// A sink that fails until told otherwise (a server that is down, or a crash before the commit).
class Sink : public UsageSink {
 public:
  Status Write(const std::vector<store::UsageRecord>& batch) override {
    std::lock_guard lock(mu);
    if (down) return UnavailableError("sink down");
    records.insert(records.end(), batch.begin(), batch.end());
    return OkStatus();
  }
  std::vector<store::UsageRecord> Records() {
    std::lock_guard lock(mu);
    return records;
  }
  std::mutex mu;
  bool down = false;
  std::vector<store::UsageRecord> records;
};

class UsageJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "usage-journal-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  UsageMeterOptions Options() const {
    UsageMeterOptions o;
    o.journal.dir = dir_ + "/journal";
    o.flush_interval = std::chrono::hours(1);  // nothing is written unless a test flushes
    o.stop_timeout = std::chrono::milliseconds(0);
    o.retry_backoff = std::chrono::milliseconds(1);
    return o;
  }

  // Records `n` requests with a meter whose sink never takes them, and stops it: what a gateway
  // killed before its writer committed anything leaves in the journal.
  void LeaveInJournal(int n, int progress_only = 0) {
    Sink down;
    down.down = true;
    UsageMeter meter(down, Options());
    ASSERT_TRUE(meter.Start().ok());
    for (int i = 0; i < n; ++i) {
      // A stream: progress first, then its final record supersedes it.
      uint64_t pin = 0;
      store::UsageRecord p = Rec("r" + std::to_string(i), 0, 1);
      p.finish = store::UsageFinish::kGatewayCrashed;
      meter.RecordProgress(p, pin);
      EXPECT_NE(pin, 0u);
      ASSERT_TRUE(meter.Record(Rec("r" + std::to_string(i), 10, i), pin));
    }
    for (int i = 0; i < progress_only; ++i) {
      uint64_t pin = 0;
      store::UsageRecord p = Rec("s" + std::to_string(i), 0, 3);
      p.finish = store::UsageFinish::kGatewayCrashed;
      meter.RecordProgress(p, pin);
    }
    meter.Stop();
    EXPECT_EQ(meter.dropped(), 0u) << "kept in the journal, not dropped";
  }

  std::vector<fs::path> Files(const std::string& suffix) const {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir_ + "/journal")) {
      if (e.path().string().ends_with(suffix)) out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string dir_;
};

TEST(JournalFramesTest, RoundTripAndEveryTornTailIsDetected) {
  std::string frames;
  store::UsageRecord a = Rec("a", 1, 2);
  store::UsageRecord b = Rec("b", 3, 4);
  b.ttft_ms.reset();
  b.finish = store::UsageFinish::kClientDisconnected;
  b.model = std::string(70'000, 'm');  // longer than any 16-bit length
  AppendJournalFrame(JournalEntry::kFinal, a, frames);
  const size_t first = frames.size();
  AppendJournalFrame(JournalEntry::kNoop, {}, frames);
  AppendJournalFrame(JournalEntry::kProgress, b, frames);

  JournalScan all = ScanJournalFrames(frames);
  EXPECT_EQ(all.error, "");
  EXPECT_EQ(all.good_bytes, frames.size());
  ASSERT_EQ(all.entries.size(), 2u);  // the no-op is skipped
  EXPECT_EQ(all.entries[0].first, JournalEntry::kFinal);
  const store::UsageRecord& ra = all.entries[0].second;
  EXPECT_EQ(ra.request_id, "a");
  EXPECT_EQ(ToUnixMillis(ra.time), 1'800'000'000'123);
  EXPECT_EQ(ra.api_key_id, 7);
  EXPECT_EQ(ra.user_id, 8);
  EXPECT_EQ(ra.project_id, 9);
  EXPECT_EQ(ra.model, "chat");
  EXPECT_EQ(ra.deployment_id, 3);
  EXPECT_EQ(ra.instance_id, 4);
  EXPECT_EQ(ra.prompt_tokens, 1);
  EXPECT_EQ(ra.completion_tokens, 2);
  EXPECT_EQ(ra.cached_tokens, 1);
  EXPECT_EQ(ra.ttft_ms, 12.5);
  EXPECT_EQ(ra.duration_ms, 40.25);
  EXPECT_EQ(ra.status, 200);
  EXPECT_EQ(ra.finish, store::UsageFinish::kComplete);
  EXPECT_EQ(all.entries[1].first, JournalEntry::kProgress);
  EXPECT_FALSE(all.entries[1].second.ttft_ms.has_value());
  EXPECT_EQ(all.entries[1].second.model.size(), 70'000u);
  EXPECT_EQ(all.entries[1].second.finish, store::UsageFinish::kClientDisconnected);

  // A power loss can cut the file anywhere: the whole frames before the cut are kept, and what
  // follows them is reported.
  for (size_t cut = 1; cut < frames.size(); cut += cut < first + 200 ? 1 : 997) {
    JournalScan scan = ScanJournalFrames(std::string_view(frames).substr(0, cut));
    EXPECT_LE(scan.good_bytes, cut);
    EXPECT_EQ(scan.entries.size(), cut < first ? 0u : 1u) << cut;
    EXPECT_EQ(scan.error.empty(), scan.good_bytes == cut) << cut;
  }
  // A flipped bit in the second record's payload: the first survives, the checksum catches it.
  std::string flipped = frames;
  flipped[frames.size() - 20] ^= 0x10;
  JournalScan bad = ScanJournalFrames(flipped);
  ASSERT_EQ(bad.entries.size(), 1u);
  EXPECT_EQ(bad.entries[0].second.request_id, "a");
  EXPECT_NE(bad.error.find("checksum"), std::string::npos) << bad.error;
  // Garbage where a length should be.
  JournalScan garbage = ScanJournalFrames(frames.substr(0, first) + std::string(8, '\xff'));
  EXPECT_EQ(garbage.entries.size(), 1u);
  EXPECT_EQ(garbage.good_bytes, first);
}

TEST_F(UsageJournalTest, RecordsACrashLeftAreWrittenByTheNextStartOnce) {
  LeaveInJournal(5, /*progress_only=*/2);
  Sink sink;
  auto meter = std::make_unique<UsageMeter>(sink, Options());
  ASSERT_TRUE(meter->Start().ok());
  ASSERT_TRUE(meter->Flush().ok());
  std::vector<store::UsageRecord> got = sink.Records();
  // Each request once: the final record where there was one, else the stream's last progress,
  // billed as cut short by the crash.
  ASSERT_EQ(got.size(), 7u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(got[i].request_id, "r" + std::to_string(i));
    EXPECT_EQ(got[i].prompt_tokens, 10);
    EXPECT_EQ(got[i].completion_tokens, static_cast<int64_t>(i));
    EXPECT_EQ(got[i].finish, store::UsageFinish::kComplete);
  }
  EXPECT_EQ(got[5].request_id, "s0");
  EXPECT_EQ(got[5].completion_tokens, 3);
  EXPECT_EQ(got[5].finish, store::UsageFinish::kGatewayCrashed);
  // Committed: the old segments go, only the active one stays.
  meter->journal()->Maintain();
  EXPECT_EQ(meter->journal()->segments(), 1u);
  meter.reset();
  Sink again;
  UsageMeter next(again, Options());
  ASSERT_TRUE(next.Start().ok());
  ASSERT_TRUE(next.Flush().ok());
  EXPECT_TRUE(again.Records().empty()) << "replayed twice";
}

TEST_F(UsageJournalTest, ReplayIntoTheStoreIsIdempotentByRequestId) {
  LeaveInJournal(3);
  FakeClock clock;
  EventBus bus;
  auto store = store::OpenSqliteStore(dir_ + "/segma.db", bus, clock);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  // As if the writer had committed r0 and r1 and the process died before their segment went.
  ASSERT_TRUE((*store)->InsertUsageRecords({Rec("r0", 10, 0), Rec("r1", 10, 1)}).ok());
  StoreUsageSink sink(**store);
  UsageMeter meter(sink, Options());
  ASSERT_TRUE(meter.Start().ok());
  ASSERT_TRUE(meter.Flush().ok());
  store::UsageQuery q;
  q.group_by = store::UsageGroupBy::kFinish;
  q.from = Timestamp();
  q.to = Timestamp(std::chrono::seconds(2'000'000'000));
  auto rows = (*store)->QueryUsage(q);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].key, "complete");
  EXPECT_EQ((*rows)[0].requests, 3);
  EXPECT_EQ((*rows)[0].prompt_tokens, 30);
  EXPECT_EQ((*rows)[0].completion_tokens, 3);
  EXPECT_EQ((*rows)[0].cut_short, 0);
}

TEST_F(UsageJournalTest, ACorruptTailIsSetAsideAndTheGoodRecordsReplayed) {
  LeaveInJournal(4);
  std::vector<fs::path> segments = Files(".journal");
  ASSERT_EQ(segments.size(), 1u);
  const auto size = fs::file_size(segments[0]);
  // A power loss: the last record half written, then garbage from a block that never made it.
  fs::resize_file(segments[0], size - 30);
  {
    std::ofstream out(segments[0], std::ios::app | std::ios::binary);
    out << std::string(100, '\x5a');
  }
  Sink sink;
  metrics::Registry registry;
  UsageMeter meter(sink, Options(), &registry);
  ASSERT_TRUE(meter.Start().ok()) << "the gateway starts";
  ASSERT_TRUE(meter.Flush().ok());
  std::vector<store::UsageRecord> got = sink.Records();
  // r0..r2 whole; r3's final record is torn, so its progress entry (written before) is billed.
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[2].request_id, "r2");
  EXPECT_EQ(got[2].finish, store::UsageFinish::kComplete);
  EXPECT_EQ(got[3].request_id, "r3");
  EXPECT_EQ(got[3].finish, store::UsageFinish::kGatewayCrashed);
  std::vector<fs::path> aside = Files(".corrupt");
  ASSERT_EQ(aside.size(), 1u);
  EXPECT_EQ(aside[0].string(), segments[0].string() + ".corrupt");
  EXPECT_GE(fs::file_size(aside[0]), 100u);
  const std::string text = registry.Serialize();
  EXPECT_NE(text.find("segma_gateway_usage_journal_corrupt_total 1"), std::string::npos) << text;
  EXPECT_NE(text.find("segma_gateway_usage_journal_replayed_records_total 4"), std::string::npos)
      << text;
}

TEST_F(UsageJournalTest, OneProcessPerJournal) {
  Sink sink;
  UsageMeter first(sink, Options());
  ASSERT_TRUE(first.Start().ok());
  UsageMeter second(sink, Options());
  Status s = second.Start();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("in use by another process"), std::string::npos);
}

TEST_F(UsageJournalTest, SegmentsRotateAndGoOnceCommitted) {
  Sink sink;
  UsageMeterOptions o = Options();
  o.journal.segment_bytes = 1000;  // about six records
  UsageMeter meter(sink, o);
  ASSERT_TRUE(meter.Start().ok());
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(meter.Record(Rec("r" + std::to_string(i), 1, 1)));
    meter.journal()->Maintain();
  }
  EXPECT_GE(meter.journal()->segments(), 3u) << "nothing committed yet: every segment stays";
  ASSERT_TRUE(meter.Flush().ok());
  meter.journal()->Maintain();
  EXPECT_EQ(meter.journal()->segments(), 1u);
  EXPECT_EQ(Files(".journal").size(), 1u);
}

// A tmpfs of 64 KiB mounted for the test (root only): a real full disk.
class FullDiskTest : public UsageJournalTest {
 protected:
  void SetUp() override {
    UsageJournalTest::SetUp();
    fs::create_directories(dir_);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=64k") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs here (needs root): " << std::strerror(errno);
    }
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    UsageJournalTest::TearDown();
  }
  // Fills the file system until a write fails.
  void Fill() {
    const int fd = ::open((dir_ + "/filler").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    ASSERT_GE(fd, 0);
    const std::string block(512, 'x');
    while (::write(fd, block.data(), block.size()) > 0) {
    }
    const std::string one(1, 'x');
    while (::write(fd, one.data(), 1) > 0) {
    }
    ::close(fd);
  }
  void Unfill() { fs::remove(dir_ + "/filler"); }
  bool mounted_ = false;
};

// Records until one cannot be journaled (the segment's last page fills up first); returns how
// many were recorded, the last of them not journaled.
int RecordUntilUnjournaled(UsageMeter& meter, const std::string& prefix) {
  const uint64_t before = meter.unjournaled();
  int n = 0;
  while (meter.unjournaled() == before && n < 1000) {
    EXPECT_TRUE(meter.Record(Rec(prefix + std::to_string(n), 1, 1)));
    ++n;
  }
  return n;
}

TEST_F(FullDiskTest, ServePolicyKeepsServingAndCountsWhatWasNotJournaled) {
  Sink sink;
  metrics::Registry registry;
  UsageMeterOptions o = Options();
  o.journal.fsync_interval = std::chrono::milliseconds(10);
  UsageMeter meter(sink, o, &registry);
  ASSERT_TRUE(meter.Start().ok());
  ASSERT_TRUE(meter.Record(Rec("before", 1, 1)));
  Fill();
  const int recorded = RecordUntilUnjournaled(meter, "full-");
  ASSERT_LT(recorded, 1000) << "the disk never filled";
  ASSERT_TRUE(meter.Record(Rec("full-again", 1, 1)));
  EXPECT_EQ(meter.unjournaled(), 2u);
  EXPECT_TRUE(meter.accepting());
  const std::string text = registry.Serialize();
  EXPECT_NE(text.find("segma_gateway_usage_records_total{outcome=\"unjournaled\"} 2"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("segma_gateway_usage_records_total{outcome=\"dropped\"} 0"),
            std::string::npos)
      << text;
  // Kept in memory: still written.
  ASSERT_TRUE(meter.Flush().ok());
  EXPECT_EQ(sink.Records().size(), static_cast<size_t>(recorded + 2));
  Unfill();
  ASSERT_TRUE(meter.Record(Rec("after", 1, 1)));
  EXPECT_EQ(meter.unjournaled(), 2u);
  EXPECT_TRUE(meter.journal()->healthy());
}

TEST_F(FullDiskTest, RefusePolicyRefusesUntilTheDiskHasRoomAgain) {
  Sink sink;
  UsageMeterOptions o = Options();
  o.on_journal_failure = JournalFailurePolicy::kRefuse;
  o.journal.fsync_interval = std::chrono::milliseconds(10);
  UsageMeter meter(sink, o);
  ASSERT_TRUE(meter.Start().ok());
  EXPECT_TRUE(meter.accepting());
  Fill();
  // The requests in flight are still billed (from memory).
  const int recorded = RecordUntilUnjournaled(meter, "full-");
  ASSERT_LT(recorded, 1000) << "the disk never filled";
  EXPECT_EQ(meter.unjournaled(), 1u);
  EXPECT_FALSE(meter.accepting());
  // Nobody records while refusing: the journal's own probe notices the room.
  Unfill();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!meter.accepting() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(meter.accepting());
  ASSERT_TRUE(meter.Flush().ok());
  EXPECT_EQ(sink.Records().size(), static_cast<size_t>(recorded));
}

}  // namespace
}  // namespace segma::gateway
