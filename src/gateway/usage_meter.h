#pragma once

// Usage metering off the hot path: Record() puts a store::UsageRecord on a bounded in-memory queue
// (never blocks); a background thread writes batches to a UsageSink. Stop() drains and writes
// everything still queued, so a graceful shutdown loses nothing. With a journal (ADR 0024),
// Record() first appends the record to it (one write(2)), so a crash loses nothing either: the
// records are read back and written by the next Start().

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "common/status.h"
#include "common/thread.h"
#include "gateway/usage_journal.h"
#include "metrics/registry.h"
#include "store/store.h"

namespace segma::gateway {

// Where batches go. Write is called from the meter's thread only, one batch at a time; a failed
// batch is retried (it must therefore be idempotent by request id, as the store's is).
class UsageSink {
 public:
  virtual ~UsageSink() = default;
  virtual Status Write(const std::vector<store::UsageRecord>& batch) = 0;
};

// Sets last_used_at of every API key in `batch` to its latest request time (one TouchApiKey per
// distinct key; the store coalesces to one write per key and minute). This is how keys are
// touched: from the usage batches, off the request path, never per request.
Status TouchKeysOf(store::Store& store, const std::vector<store::UsageRecord>& batch);

// Writes batches with Store::InsertUsageRecords (one transaction per batch), then touches the
// batch's keys (a failed touch is logged, not retried: the records are what matters).
class StoreUsageSink final : public UsageSink {
 public:
  explicit StoreUsageSink(store::Store& store) : store_(store) {}
  // UsageSink
  Status Write(const std::vector<store::UsageRecord>& batch) override;

 private:
  store::Store& store_;
};

// What the gateway does while its usage journal cannot be written (a full disk; ADR 0025).
enum class JournalFailurePolicy {
  kServe,   // answer requests; their records are kept in memory only (counted "unjournaled")
  kRefuse,  // answer new requests 503 until the journal is writable again
};
std::optional<JournalFailurePolicy> ParseJournalFailurePolicy(std::string_view s);  // serve|refuse

struct UsageMeterOptions {
  size_t capacity = 100'000;  // records queued at most; beyond that Record() drops and counts
  size_t batch_size = 500;    // records per sink write (bounded statement/transaction size)
  std::chrono::milliseconds flush_interval{1000};
  // The writer runs in SCHED_IDLE (ADR 0019) while fewer records than this are queued, so that it
  // never delays a request; from this many on, in SCHED_OTHER, so that a saturated core cannot
  // starve it until the queue overflows. The Record() that reaches this many switches it, even in
  // the middle of a batch that the idle policy had stalled.
  size_t catch_up_at = 2'000;
  std::chrono::milliseconds retry_backoff{500};
  // Stop() gives up writing after this long with the sink still failing (the records are then
  // lost and counted in dropped()).
  std::chrono::milliseconds stop_timeout{10'000};
  UsageJournalOptions journal;  // journal.dir empty: no journal
  JournalFailurePolicy on_journal_failure = JournalFailurePolicy::kServe;
};

// Thread-safe. `sink` must outlive the meter.
class UsageMeter {
 public:
  // With `registry`, keeps segma_gateway_usage_records_total{outcome="written"|"dropped"|
  // "unjournaled"} and segma_gateway_usage_queued_records current: a dropped record is a request
  // nobody is billed for; an unjournaled one is billed unless the process crashes first.
  explicit UsageMeter(UsageSink& sink, UsageMeterOptions options = {},
                      metrics::Registry* registry = nullptr);
  ~UsageMeter();  // Stop()
  UsageMeter(const UsageMeter&) = delete;
  UsageMeter& operator=(const UsageMeter&) = delete;

  // Opens the journal (if configured) on the first call, queues the records it holds from an
  // earlier run, and starts the writer thread. kFailedPrecondition / kUnavailable from
  // UsageJournal::Open (nothing started then).
  Status Start();
  // Writes everything queued (retrying a failing sink up to stop_timeout) and stops the thread.
  // Records arriving afterwards are still queued and written by the next Flush()/Start(). With a
  // journal, records the sink did not take by then stay in it for the next start (not dropped).
  void Stop();
  // Writes everything queued now, on the calling thread (blocking; not for I/O threads). Returns
  // the sink's error if the queue could not be emptied (the records stay queued).
  Status Flush();

  // Journals and queues `record`, before its response's last byte goes out. `progress_pin`: the
  // pin of the request's last RecordProgress (released here). False (and counted) when the queue
  // is full; a journaled record then stays in the journal for the next start.
  bool Record(store::UsageRecord record, uint64_t progress_pin = 0);
  // Journals `record` as what a stream in flight has delivered so far (finish must be
  // kGatewayCrashed: how it is billed if the process dies before Record). `pin` starts at 0 and is
  // passed to Record at the end. No-op without a journal.
  void RecordProgress(const store::UsageRecord& record, uint64_t& pin);
  // False while the journal cannot be written and the policy is kRefuse: new requests are then
  // answered 503. Lock-free.
  bool accepting() const;

  uint64_t written() const;
  uint64_t dropped() const;
  uint64_t unjournaled() const;
  size_t queued() const;
  UsageJournal* journal() { return journal_.get(); }  // null without one

 private:
  void Run();
  // Writes queued records until the queue is empty (or, with whole_batches_only, holds less than
  // a batch) or the sink fails. With `sched`, sets it before each batch by the queue's length
  // (the writer thread's). Requires !mu_ on entry.
  Status Drain(bool whole_batches_only = false, BackgroundScheduling* sched = nullptr);

  struct Queued {
    store::UsageRecord record;
    uint64_t segment = 0;  // the journal segment it pins (0: not journaled)
  };
  // Counts (and logs the first of a run of) records that could not be journaled.
  void NoteUnjournaled(const Status& why);

  UsageSink& sink_;
  const UsageMeterOptions options_;
  metrics::Registry* const registry_;
  std::unique_ptr<UsageJournal> journal_;  // set by the first Start(), before the writer runs
  mutable std::mutex mu_;
  std::condition_variable cv_;  // wakes the writer
  std::deque<Queued> queue_;    // guarded by mu_
  bool stopping_ = false;       // guarded by mu_
  uint64_t written_ = 0;        // guarded by mu_
  uint64_t dropped_ = 0;        // guarded by mu_
  std::atomic<uint64_t> unjournaled_{0};
  std::atomic<bool> journal_failing_{false};  // for logging only the first failure of a run
  // The metrics (all or none): updated under mu_ (unjournaled: atomically).
  prometheus::Counter* written_metric_ = nullptr;
  prometheus::Counter* dropped_metric_ = nullptr;
  prometheus::Counter* unjournaled_metric_ = nullptr;
  prometheus::Gauge* queued_metric_ = nullptr;
  // The writer thread's scheduling while it runs (else null), guarded by mu_.
  BackgroundScheduling* writer_sched_ = nullptr;
  std::mutex write_mu_;  // one sink write at a time
  std::thread thread_;
};

}  // namespace segma::gateway
