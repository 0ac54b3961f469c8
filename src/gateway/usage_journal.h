#pragma once

// The usage journal (ADR 0024): every usage record is appended to a local file before the last
// byte of its response goes out, so that a request answered by a gateway that then crashes is
// still billed. The UsageMeter moves records from its memory queue into the store (or, in a
// replica, to the server) as before; the journal only has to hold each record until that batch is
// committed, and is read back at the next start.
//
// Layout: a directory (exclusive to one process: flock on <dir>/LOCK) of segments
// usage-<N>.journal. Records are appended to the newest (the active segment) with one write(2) on
// an O_APPEND descriptor: once it returns, the record survives a crash of the process (it is in
// the kernel's page cache). A thread calls fdatasync on the active segment every fsync_interval,
// so a power loss loses at most that interval. The meter's writer rotates to a new segment when
// the active one is large or old, and deletes a segment once every record it holds is committed
// (segments are pinned by the records in them that are not committed yet).
//
// Each segment starts with an 8-byte magic ("SGMUJ001"), then frames:
//   u32 length of the payload | u32 CRC-32C of the payload | payload
// (little endian). The payload is one entry: a kind byte, then the record's fields. A torn or
// corrupt tail (what a power loss can leave) fails the length or checksum test: the frames before
// it are replayed; the bytes from the first bad frame on are moved to <segment>.corrupt, logged,
// and counted (segma_gateway_usage_journal_corrupt_total).
//
// Streams in flight journal "progress" entries (the tokens delivered so far, finish
// kGatewayCrashed); an entry for a request supersedes the earlier ones, so after a crash the last
// progress entry of a stream is billed as cut short by the crash, and a stream's final entry
// replaces its progress entries. Replay is idempotent: the store ignores a request_id it has.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/status.h"
#include "metrics/registry.h"
#include "store/store.h"

namespace prometheus {
class Counter;
}  // namespace prometheus

namespace segma::gateway {

// What a frame holds.
enum class JournalEntry : uint8_t {
  kNoop = 0,      // a probe written while the journal recovers from a failed write; skipped
  kFinal = 1,     // a finished request's record
  kProgress = 2,  // the record of a stream in flight, as billed if the gateway dies now
};

// Appends one frame (header and payload) for `record` to `out`. A kNoop frame ignores `record`
// and carries `padding` zero bytes.
void AppendJournalFrame(JournalEntry kind, const store::UsageRecord& record, std::string& out,
                        size_t padding = 0);

struct JournalScan {
  std::vector<std::pair<JournalEntry, store::UsageRecord>> entries;  // in file order, no kNoop
  size_t good_bytes = 0;  // length of the prefix of whole, valid frames (after the magic)
  std::string error;      // why the bytes after good_bytes are not frames; empty if none are left
};
// Reads the frames of a segment's contents after its magic. Never fails: a bad tail is reported.
JournalScan ScanJournalFrames(std::string_view frames);

// The 8 bytes every segment starts with.
inline constexpr std::string_view kJournalMagic = "SGMUJ001";

struct UsageJournalOptions {
  std::string dir;  // empty: no journal (records live only in memory until written)
  // fdatasync of the active segment this often (when something was appended). What a power loss
  // can lose; a crash of the process loses nothing that was appended.
  std::chrono::milliseconds fsync_interval{100};
  size_t segment_bytes = 8 << 20;                 // rotate when the active segment is this large
  std::chrono::milliseconds segment_age{10'000};  // or this old (and not empty)
};

// One process's journal. Thread-safe: Append/AppendProgress/Release from any thread (Append is
// one write(2) under a mutex); Maintain from one thread at a time (the meter's writer).
class UsageJournal {
 public:
  // A record read back at Open, and the segment whose frame it came from (pinned until Release).
  struct Recovered {
    store::UsageRecord record;
    uint64_t segment = 0;
  };

  // Creates `options.dir` if needed, takes its lock, reads every segment (setting corrupt tails
  // aside), deletes segments none of whose entries is still needed, opens a new active segment
  // and starts the fsync thread. kFailedPrecondition if another process holds the directory,
  // kUnavailable if it cannot be created or read. With `registry`, keeps
  // segma_gateway_usage_journal_corrupt_total and _replayed_records_total.
  static Result<std::unique_ptr<UsageJournal>> Open(const UsageJournalOptions& options,
                                                    metrics::Registry* registry);
  ~UsageJournal();  // stops the fsync thread, syncs, closes (deletes nothing)
  UsageJournal(const UsageJournal&) = delete;
  UsageJournal& operator=(const UsageJournal&) = delete;

  // The records found at Open (the latest entry of each request), once; then empty.
  std::vector<Recovered> TakeRecovered();

  // Appends `frame` (from AppendJournalFrame) to the active segment and pins that segment.
  // Returns its number. kResourceExhausted (disk full) or kUnavailable on a failed write: nothing
  // was appended (a partial write is cut off again) and nothing pinned.
  Result<uint64_t> Append(std::string_view frame);
  // Appends a progress frame for a stream whose previous progress (if any) pinned `pin`: the new
  // segment is pinned, the old one released, and `pin` updated. On failure `pin` stays.
  Status AppendProgress(std::string_view frame, uint64_t& pin);
  // Releases one pin of `segment` (0: none). A sealed segment without pins is deleted by the next
  // Maintain.
  void Release(uint64_t segment, int64_t n = 1);

  // Rotates the active segment if it is due, and deletes sealed segments without pins.
  void Maintain();
  // fdatasync of the active segment now. For tests and Stop.
  Status Sync();

  // False from a failed append until an append (or the fsync thread's probe) succeeds. Lock-free.
  bool healthy() const { return healthy_.load(std::memory_order_relaxed); }
  size_t segments() const;  // files, for tests

 private:
  struct File;
  explicit UsageJournal(UsageJournalOptions options);
  Status Recover(metrics::Registry* registry);
  Result<std::shared_ptr<File>> CreateSegment(uint64_t seq);
  std::string PathOf(uint64_t seq) const;
  void SyncLoop();

  const UsageJournalOptions options_;
  int lock_fd_ = -1;
  mutable std::mutex mu_;
  std::shared_ptr<File> active_;                         // guarded by mu_
  uint64_t active_seq_ = 0;                              // guarded by mu_
  size_t active_bytes_ = 0;                              // guarded by mu_
  std::chrono::steady_clock::time_point active_opened_;  // guarded by mu_
  uint64_t next_seq_ = 1;                                // guarded by mu_
  std::map<uint64_t, int64_t> pins_;  // every segment on disk → pins; guarded by mu_
  uint64_t unsynced_ = 0;             // appends since the last sync; guarded by mu_
  std::atomic<bool> healthy_{true};   // written under mu_
  std::vector<Recovered> recovered_;  // guarded by mu_
  bool stopping_ = false;             // guarded by mu_
  std::condition_variable cv_;
  std::thread sync_thread_;
};

}  // namespace segma::gateway
