#include "gateway/usage_meter.h"

#include <map>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>

#include "common/logging.h"
#include "common/thread.h"

namespace segma::gateway {

UsageMeter::UsageMeter(UsageSink& sink, UsageMeterOptions options, metrics::Registry* registry)
    : sink_(sink), options_(options) {
  if (registry == nullptr) return;
  auto& records = prometheus::BuildCounter()
                      .Name("segma_gateway_usage_records_total")
                      .Help("Usage records written to the store, or dropped on a full queue")
                      .Register(registry->prometheus());
  written_metric_ = &records.Add({{"outcome", "written"}});
  dropped_metric_ = &records.Add({{"outcome", "dropped"}});
  queued_metric_ = &prometheus::BuildGauge()
                        .Name("segma_gateway_usage_queued_records")
                        .Help("Usage records waiting for the writer")
                        .Register(registry->prometheus())
                        .Add({});
}

UsageMeter::~UsageMeter() { Stop(); }

void UsageMeter::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { Run(); });
}

bool UsageMeter::Record(store::UsageRecord record) {
  std::lock_guard lock(mu_);
  if (queue_.size() >= options_.capacity) {
    ++dropped_;
    if (dropped_metric_ != nullptr) dropped_metric_->Increment();
    return false;
  }
  queue_.push_back(std::move(record));
  if (queued_metric_ != nullptr) queued_metric_->Increment();
  // Busy() is a no-op unless the writer is idle: one system call per fall behind.
  if (writer_sched_ != nullptr && queue_.size() >= options_.catch_up_at) writer_sched_->Busy();
  if (queue_.size() >= options_.batch_size) cv_.notify_one();
  return true;
}

Status UsageMeter::Drain(bool whole_batches_only, BackgroundScheduling* sched) {
  std::lock_guard write(write_mu_);
  std::vector<store::UsageRecord> batch;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (queue_.empty()) return OkStatus();
      if (whole_batches_only && queue_.size() < options_.batch_size) return OkStatus();
      if (sched != nullptr) {
        if (queue_.size() >= options_.catch_up_at) {
          sched->Busy();
        } else {
          sched->Idle();
        }
      }
      const size_t n = std::min(queue_.size(), options_.batch_size);
      batch.assign(std::make_move_iterator(queue_.begin()),
                   std::make_move_iterator(queue_.begin() + static_cast<std::ptrdiff_t>(n)));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    }
    Status s = sink_.Write(batch);
    std::lock_guard lock(mu_);
    if (!s.ok()) {
      // Put the batch back in front, in order, for the next attempt.
      queue_.insert(queue_.begin(), std::make_move_iterator(batch.begin()),
                    std::make_move_iterator(batch.end()));
      return s;
    }
    written_ += batch.size();
    if (written_metric_ != nullptr) {
      written_metric_->Increment(static_cast<double>(batch.size()));
      queued_metric_->Set(static_cast<double>(queue_.size()));
    }
  }
}

void UsageMeter::Run() {
  NameThread("segma-usage");
  BackgroundScheduling sched;
  {
    std::lock_guard lock(mu_);
    writer_sched_ = &sched;
  }
  auto log = Logger("gateway");
  bool failing = false;
  for (;;) {
    bool full = false;
    {
      std::unique_lock lock(mu_);
      full = cv_.wait_for(lock, failing ? options_.retry_backoff : options_.flush_interval,
                          [this] { return stopping_ || queue_.size() >= options_.batch_size; });
      if (stopping_) {
        writer_sched_ = nullptr;
        return;  // Stop() drains on its own thread
      }
    }
    // Woken by a full batch: write whole batches only, and leave the rest for the next one (or
    // the interval). Draining every remainder as it trickles in made many small transactions,
    // each rewriting the same last pages of the table and its indexes: about one page written
    // per record instead of one per ~20.
    Status s = Drain(/*whole_batches_only=*/full && !failing, &sched);
    if (!s.ok() && !failing) log->warn("usage sink failed, will retry: {}", s.ToString());
    failing = !s.ok();
  }
}

Status UsageMeter::Flush() {
  // Drain() holds write_mu_ for its whole run, so a batch the writer thread had taken is written
  // (or put back) before this drain starts: nothing queued before the call is missed.
  return Drain();
}

void UsageMeter::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
  const auto deadline = std::chrono::steady_clock::now() + options_.stop_timeout;
  for (;;) {
    Status s = Drain();
    if (s.ok()) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      std::lock_guard lock(mu_);
      Logger("gateway")->error("usage sink still failing at shutdown; {} records lost: {}",
                               queue_.size(), s.ToString());
      dropped_ += queue_.size();
      if (dropped_metric_ != nullptr) {
        dropped_metric_->Increment(static_cast<double>(queue_.size()));
        queued_metric_->Set(0);
      }
      queue_.clear();
      break;
    }
    std::this_thread::sleep_for(options_.retry_backoff);
  }
}

uint64_t UsageMeter::written() const {
  std::lock_guard lock(mu_);
  return written_;
}
uint64_t UsageMeter::dropped() const {
  std::lock_guard lock(mu_);
  return dropped_;
}
size_t UsageMeter::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

Status TouchKeysOf(store::Store& store, const std::vector<store::UsageRecord>& batch) {
  std::map<int64_t, Timestamp> latest;
  for (const store::UsageRecord& r : batch) {
    if (r.api_key_id <= 0) continue;
    auto [it, inserted] = latest.emplace(r.api_key_id, r.time);
    if (!inserted && r.time > it->second) it->second = r.time;
  }
  for (const auto& [id, at] : latest) RETURN_IF_ERROR(store.TouchApiKey(id, at));
  return OkStatus();
}

Status StoreUsageSink::Write(const std::vector<store::UsageRecord>& batch) {
  RETURN_IF_ERROR(store_.InsertUsageRecords(batch));
  if (Status s = TouchKeysOf(store_, batch); !s.ok()) {
    Logger("gateway")->warn("API key last_used_at not updated: {}", s.ToString());
  }
  return OkStatus();
}

}  // namespace segma::gateway
