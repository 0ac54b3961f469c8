#pragma once

// Usage metering off the hot path: Record() puts a store::UsageRecord on a bounded in-memory queue
// (never blocks, never does I/O); a background thread writes batches to a UsageSink. Stop()
// drains and writes everything still queued, so a graceful shutdown loses nothing.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "common/status.h"
#include "common/thread.h"
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
};

// Thread-safe. `sink` must outlive the meter.
class UsageMeter {
 public:
  // With `registry`, keeps segma_gateway_usage_records_total{outcome="written"|"dropped"} and
  // segma_gateway_usage_queued_records current: a dropped record is a request nobody is billed for.
  explicit UsageMeter(UsageSink& sink, UsageMeterOptions options = {},
                      metrics::Registry* registry = nullptr);
  ~UsageMeter();  // Stop()
  UsageMeter(const UsageMeter&) = delete;
  UsageMeter& operator=(const UsageMeter&) = delete;

  void Start();
  // Writes everything queued (retrying a failing sink up to stop_timeout) and stops the thread.
  // Records arriving afterwards are still queued and written by the next Flush()/Start().
  void Stop();
  // Writes everything queued now, on the calling thread (blocking; not for I/O threads). Returns
  // the sink's error if the queue could not be emptied (the records stay queued).
  Status Flush();

  // Queues `record`. False (and counted) when the queue is full.
  bool Record(store::UsageRecord record);

  uint64_t written() const;
  uint64_t dropped() const;
  size_t queued() const;

 private:
  void Run();
  // Writes queued records until the queue is empty (or, with whole_batches_only, holds less than
  // a batch) or the sink fails. With `sched`, sets it before each batch by the queue's length
  // (the writer thread's). Requires !mu_ on entry.
  Status Drain(bool whole_batches_only = false, BackgroundScheduling* sched = nullptr);

  UsageSink& sink_;
  const UsageMeterOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;            // wakes the writer
  std::deque<store::UsageRecord> queue_;  // guarded by mu_
  bool stopping_ = false;                 // guarded by mu_
  uint64_t written_ = 0;                  // guarded by mu_
  uint64_t dropped_ = 0;                  // guarded by mu_
  // The metrics (all or none): updated under mu_.
  prometheus::Counter* written_metric_ = nullptr;
  prometheus::Counter* dropped_metric_ = nullptr;
  prometheus::Gauge* queued_metric_ = nullptr;
  // The writer thread's scheduling while it runs (else null), guarded by mu_.
  BackgroundScheduling* writer_sched_ = nullptr;
  std::mutex write_mu_;  // one sink write at a time
  std::thread thread_;
};

}  // namespace segma::gateway
