#include "gateway/usage_meter.h"

#include <algorithm>
#include <map>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>

#include "common/logging.h"
#include "common/thread.h"

namespace segma::gateway {

std::optional<JournalFailurePolicy> ParseJournalFailurePolicy(std::string_view s) {
  if (s == "serve") return JournalFailurePolicy::kServe;
  if (s == "refuse") return JournalFailurePolicy::kRefuse;
  return std::nullopt;
}

UsageMeter::UsageMeter(UsageSink& sink, UsageMeterOptions options, metrics::Registry* registry)
    : sink_(sink), options_(std::move(options)), registry_(registry) {
  if (registry == nullptr) return;
  auto& records = prometheus::BuildCounter()
                      .Name("segma_gateway_usage_records_total")
                      .Help(
                          "Usage records written to the store, dropped (lost: a full queue), or "
                          "kept in memory only because the journal could not be written")
                      .Register(registry->prometheus());
  written_metric_ = &records.Add({{"outcome", "written"}});
  dropped_metric_ = &records.Add({{"outcome", "dropped"}});
  unjournaled_metric_ = &records.Add({{"outcome", "unjournaled"}});
  queued_metric_ = &prometheus::BuildGauge()
                        .Name("segma_gateway_usage_queued_records")
                        .Help("Usage records waiting for the writer")
                        .Register(registry->prometheus())
                        .Add({});
}

UsageMeter::~UsageMeter() { Stop(); }

Status UsageMeter::Start() {
  if (!options_.journal.dir.empty() && journal_ == nullptr) {
    ASSIGN_OR_RETURN(journal_, UsageJournal::Open(options_.journal, registry_));
    std::vector<UsageJournal::Recovered> recovered = journal_->TakeRecovered();
    std::lock_guard lock(mu_);
    // Ahead of anything recorded since: they are older.
    for (auto it = recovered.rbegin(); it != recovered.rend(); ++it) {
      queue_.push_front(Queued{std::move(it->record), it->segment});
    }
    if (queued_metric_ != nullptr) queued_metric_->Set(static_cast<double>(queue_.size()));
  }
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return OkStatus();
  stopping_ = false;
  thread_ = std::thread([this] { Run(); });
  return OkStatus();
}

void UsageMeter::NoteUnjournaled(const Status& why) {
  unjournaled_.fetch_add(1, std::memory_order_relaxed);
  if (unjournaled_metric_ != nullptr) unjournaled_metric_->Increment();
  if (!journal_failing_.exchange(true)) {
    Logger("gateway")->error(
        "usage journal {} cannot be written ({}): {}", options_.journal.dir, why.ToString(),
        options_.on_journal_failure == JournalFailurePolicy::kRefuse
            ? "new requests are refused (503) until it can"
            : "records are kept in memory only until it can (lost if the process crashes); see "
              "segma_gateway_usage_records_total{outcome=\"unjournaled\"}");
  }
}

bool UsageMeter::accepting() const {
  return journal_ == nullptr || options_.on_journal_failure == JournalFailurePolicy::kServe ||
         journal_->healthy();
}

void UsageMeter::RecordProgress(const store::UsageRecord& record, uint64_t& pin) {
  if (journal_ == nullptr) return;
  thread_local std::string frame;
  frame.clear();
  AppendJournalFrame(JournalEntry::kProgress, record, frame);
  // A progress entry that cannot be written is not counted: the final record will be (or is).
  (void)journal_->AppendProgress(frame, pin);
}

bool UsageMeter::Record(store::UsageRecord record, uint64_t progress_pin) {
  uint64_t segment = 0;
  if (journal_ != nullptr) {
    thread_local std::string frame;
    frame.clear();
    AppendJournalFrame(JournalEntry::kFinal, record, frame);
    Result<uint64_t> appended = journal_->Append(frame);
    if (appended.ok()) {
      segment = *appended;
      if (journal_failing_.load(std::memory_order_relaxed)) journal_failing_ = false;
    } else {
      NoteUnjournaled(appended.status());
    }
    // Superseded by the final entry (or, if that failed, the progress entry is the better bill).
    if (appended.ok()) journal_->Release(progress_pin);
  }
  std::lock_guard lock(mu_);
  if (queue_.size() >= options_.capacity) {
    // A journaled record stays pinned in the journal: the next start writes it.
    ++dropped_;
    if (dropped_metric_ != nullptr) dropped_metric_->Increment();
    return false;
  }
  queue_.push_back(Queued{std::move(record), segment});
  if (queued_metric_ != nullptr) queued_metric_->Increment();
  // Busy() is a no-op unless the writer is idle: one system call per fall behind.
  if (writer_sched_ != nullptr && queue_.size() >= options_.catch_up_at) writer_sched_->Busy();
  if (queue_.size() >= options_.batch_size) cv_.notify_one();
  return true;
}

Status UsageMeter::Drain(bool whole_batches_only, BackgroundScheduling* sched) {
  std::lock_guard write(write_mu_);
  std::vector<store::UsageRecord> batch;
  std::vector<uint64_t> segments;
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
      batch.clear();
      segments.clear();
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_[i].record));
        segments.push_back(queue_[i].segment);
      }
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    }
    Status s = sink_.Write(batch);
    if (s.ok() && journal_ != nullptr) {
      // Committed: the journal need not hold these any more.
      for (size_t i = 0; i < segments.size();) {
        size_t j = i;
        while (j < segments.size() && segments[j] == segments[i]) ++j;
        journal_->Release(segments[i], static_cast<int64_t>(j - i));
        i = j;
      }
    }
    std::lock_guard lock(mu_);
    if (!s.ok()) {
      // Put the batch back in front, in order, for the next attempt.
      for (size_t i = batch.size(); i-- > 0;) {
        queue_.push_front(Queued{std::move(batch[i]), segments[i]});
      }
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
    if (journal_ != nullptr) journal_->Maintain();
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
      // Journaled records stay in the journal and are written by the next start.
      const auto lost = static_cast<uint64_t>(std::count_if(
          queue_.begin(), queue_.end(), [](const Queued& q) { return q.segment == 0; }));
      Logger("gateway")->error(
          "usage sink still failing at shutdown; {} records kept in the journal for the next "
          "start, {} lost: {}",
          queue_.size() - lost, lost, s.ToString());
      dropped_ += lost;
      if (dropped_metric_ != nullptr) {
        dropped_metric_->Increment(static_cast<double>(lost));
        queued_metric_->Set(0);
      }
      queue_.clear();
      break;
    }
    std::this_thread::sleep_for(options_.retry_backoff);
  }
  if (journal_ != nullptr) {
    journal_->Maintain();
    (void)journal_->Sync();
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
uint64_t UsageMeter::unjournaled() const { return unjournaled_.load(); }
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
