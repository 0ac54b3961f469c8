#include "gateway/usage_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include <fmt/format.h>
#include <prometheus/counter.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "common/logging.h"
#include "common/thread.h"

namespace segma::gateway {

namespace {

// Frames larger than this are taken for garbage (a request's body is at most 16 MiB).
constexpr uint32_t kMaxPayload = 32u << 20;
constexpr size_t kHeader = 8;  // length + checksum

constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // Castagnoli
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = MakeCrcTable();

uint32_t Crc32c(std::string_view data) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : data) c = kCrcTable[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

template <typename T>
void Put(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));  // little endian hosts only (x86-64, aarch64)
  out.append(bytes, sizeof(T));
}

void PutString(std::string& out, std::string_view s) {
  Put<uint32_t>(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

// Reads the payload's fields in order; any read past the end makes ok() false.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  template <typename T>
  T Get() {
    T v{};
    if (data_.size() - pos_ < sizeof(T)) {
      ok_ = false;
      return v;
    }
    std::memcpy(&v, data_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string GetString() {
    const uint32_t n = Get<uint32_t>();
    if (!ok_ || data_.size() - pos_ < n) {
      ok_ = false;
      return {};
    }
    std::string s(data_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  bool ok() const { return ok_ && pos_ == data_.size(); }

 private:
  std::string_view data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

bool Decode(std::string_view payload, JournalEntry& kind, store::UsageRecord& r) {
  Reader in(payload);
  const auto k = in.Get<uint8_t>();
  if (k > static_cast<uint8_t>(JournalEntry::kProgress)) return false;
  kind = static_cast<JournalEntry>(k);
  if (kind == JournalEntry::kNoop) return true;
  r.request_id = in.GetString();
  r.time = FromUnixMillis(in.Get<int64_t>());
  r.api_key_id = in.Get<int64_t>();
  r.user_id = in.Get<int64_t>();
  r.project_id = in.Get<int64_t>();
  r.model = in.GetString();
  r.deployment_id = in.Get<int64_t>();
  r.instance_id = in.Get<int64_t>();
  r.prompt_tokens = in.Get<int64_t>();
  r.completion_tokens = in.Get<int64_t>();
  r.cached_tokens = in.Get<int64_t>();
  const auto has_ttft = in.Get<uint8_t>();
  const auto ttft = in.Get<double>();
  if (has_ttft != 0) r.ttft_ms = ttft;
  r.duration_ms = in.Get<double>();
  r.status = in.Get<int32_t>();
  const auto finish = in.Get<uint8_t>();
  if (finish > static_cast<uint8_t>(store::UsageFinish::kGatewayCrashed)) return false;
  r.finish = static_cast<store::UsageFinish>(finish);
  return in.ok() && !r.request_id.empty();
}

Status ErrnoStatus(int err, std::string_view what) {
  std::string msg = fmt::format("{}: {}", what, std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return ResourceExhaustedError(std::move(msg));
  return UnavailableError(std::move(msg));
}

// Makes a new directory entry durable.
void SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

}  // namespace

void AppendJournalFrame(JournalEntry kind, const store::UsageRecord& r, std::string& out,
                        size_t padding) {
  const size_t start = out.size();
  out.append(kHeader, '\0');
  Put<uint8_t>(out, static_cast<uint8_t>(kind));
  if (kind == JournalEntry::kNoop) out.append(padding, '\0');
  if (kind != JournalEntry::kNoop) {
    PutString(out, r.request_id);
    Put<int64_t>(out, ToUnixMillis(r.time));
    Put<int64_t>(out, r.api_key_id);
    Put<int64_t>(out, r.user_id);
    Put<int64_t>(out, r.project_id);
    PutString(out, r.model);
    Put<int64_t>(out, r.deployment_id);
    Put<int64_t>(out, r.instance_id);
    Put<int64_t>(out, r.prompt_tokens);
    Put<int64_t>(out, r.completion_tokens);
    Put<int64_t>(out, r.cached_tokens);
    Put<uint8_t>(out, r.ttft_ms ? 1 : 0);
    Put<double>(out, r.ttft_ms.value_or(0));
    Put<double>(out, r.duration_ms);
    Put<int32_t>(out, r.status);
    Put<uint8_t>(out, static_cast<uint8_t>(r.finish));
  }
  const std::string_view payload = std::string_view(out).substr(start + kHeader);
  const auto length = static_cast<uint32_t>(payload.size());
  const uint32_t crc = Crc32c(payload);
  std::memcpy(out.data() + start, &length, 4);
  std::memcpy(out.data() + start + 4, &crc, 4);
}

JournalScan ScanJournalFrames(std::string_view frames) {
  JournalScan scan;
  size_t pos = 0;
  while (pos < frames.size()) {
    if (frames.size() - pos < kHeader) {
      scan.error = fmt::format("torn frame header at byte {}", pos);
      break;
    }
    uint32_t length = 0, crc = 0;
    std::memcpy(&length, frames.data() + pos, 4);
    std::memcpy(&crc, frames.data() + pos + 4, 4);
    if (length == 0 || length > kMaxPayload) {
      scan.error = fmt::format("bad frame length {} at byte {}", length, pos);
      break;
    }
    if (frames.size() - pos - kHeader < length) {
      scan.error = fmt::format("torn frame at byte {} ({} of {} bytes)", pos,
                               frames.size() - pos - kHeader, length);
      break;
    }
    const std::string_view payload = frames.substr(pos + kHeader, length);
    if (Crc32c(payload) != crc) {
      scan.error = fmt::format("checksum mismatch at byte {}", pos);
      break;
    }
    JournalEntry kind{};
    store::UsageRecord r;
    if (!Decode(payload, kind, r)) {
      scan.error = fmt::format("undecodable entry at byte {}", pos);
      break;
    }
    if (kind != JournalEntry::kNoop) scan.entries.emplace_back(kind, std::move(r));
    pos += kHeader + length;
  }
  scan.good_bytes = pos;
  return scan;
}

// One open segment. Shared with the fsync thread, so that a rotation never closes a descriptor
// that is being synced.
struct UsageJournal::File {
  int fd = -1;
  ~File() {
    if (fd >= 0) ::close(fd);
  }
};

UsageJournal::UsageJournal(UsageJournalOptions options) : options_(std::move(options)) {}

UsageJournal::~UsageJournal() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (sync_thread_.joinable()) sync_thread_.join();
  (void)Sync();
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

std::string UsageJournal::PathOf(uint64_t seq) const {
  return fmt::format("{}/usage-{:010}.journal", options_.dir, seq);
}

Result<std::unique_ptr<UsageJournal>> UsageJournal::Open(const UsageJournalOptions& options,
                                                         metrics::Registry* registry) {
  std::unique_ptr<UsageJournal> j(new UsageJournal(options));
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec)
    return UnavailableError("cannot create usage journal " + options.dir + ": " + ec.message());
  const std::string lock_path = options.dir + "/LOCK";
  j->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (j->lock_fd_ < 0) return ErrnoStatus(errno, "cannot open " + lock_path);
  if (::flock(j->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return FailedPreconditionError("usage journal " + options.dir +
                                   " is in use by another process");
  }
  RETURN_IF_ERROR(j->Recover(registry));
  j->sync_thread_ = std::thread([p = j.get()] { p->SyncLoop(); });
  return j;
}

Status UsageJournal::Recover(metrics::Registry* registry) {
  auto log = Logger("gateway");
  prometheus::Counter* corrupt = nullptr;
  prometheus::Counter* replayed = nullptr;
  if (registry != nullptr) {
    corrupt = &prometheus::BuildCounter()
                   .Name("segma_gateway_usage_journal_corrupt_total")
                   .Help("Corrupt or torn usage journal tails set aside (<segment>.corrupt)")
                   .Register(registry->prometheus())
                   .Add({});
    replayed = &prometheus::BuildCounter()
                    .Name("segma_gateway_usage_journal_replayed_records_total")
                    .Help("Usage records read back from the journal at start")
                    .Register(registry->prometheus())
                    .Add({});
  }
  std::vector<uint64_t> seqs;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(options_.dir, ec)) {
    const std::string name = entry.path().filename().string();
    uint64_t seq = 0;
    if (name.size() == 24 && name.starts_with("usage-") && name.ends_with(".journal") &&
        std::all_of(name.begin() + 6, name.begin() + 16, ::isdigit)) {
      seq = std::stoull(name.substr(6, 10));
      if (seq > 0) seqs.push_back(seq);
    }
  }
  if (ec)
    return UnavailableError("cannot list usage journal " + options_.dir + ": " + ec.message());
  std::sort(seqs.begin(), seqs.end());

  // The latest entry of each request wins (a final record supersedes progress).
  std::unordered_map<std::string, size_t> index;
  for (uint64_t seq : seqs) {
    const std::string path = PathOf(seq);
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(errno, "cannot open " + path);
    std::string data;
    char buf[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        ::close(fd);
        return ErrnoStatus(err, "cannot read " + path);
      }
      if (n == 0) break;
      data.append(buf, static_cast<size_t>(n));
    }
    JournalScan scan;
    size_t good = 0;
    if (data.size() < kJournalMagic.size() ||
        std::string_view(data).substr(0, kJournalMagic.size()) != kJournalMagic) {
      // A segment created just before a crash may have no complete magic yet.
      scan.error = data.empty() ? "" : "no segment magic";
    } else {
      scan = ScanJournalFrames(std::string_view(data).substr(kJournalMagic.size()));
      good = kJournalMagic.size() + scan.good_bytes;
    }
    if (!scan.error.empty()) {
      const std::string aside = path + ".corrupt";
      const int cfd = ::open(aside.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      bool kept = cfd >= 0;
      if (kept) {
        const std::string_view tail = std::string_view(data).substr(good);
        kept = ::write(cfd, tail.data(), tail.size()) == static_cast<ssize_t>(tail.size()) &&
               ::fsync(cfd) == 0;
        ::close(cfd);
      }
      log->error("usage journal {}: {}; {} records replayed from it, {} bytes from there on {}",
                 path, scan.error, scan.entries.size(), data.size() - good,
                 kept ? "moved to " + aside : "dropped (could not write " + aside + ")");
      if (corrupt != nullptr) corrupt->Increment();
      if (::ftruncate(fd, static_cast<off_t>(good)) != 0) {
        const int err = errno;
        ::close(fd);
        return ErrnoStatus(err, "cannot cut the corrupt tail of " + path);
      }
    }
    ::close(fd);
    pins_[seq] = 0;
    for (auto& [kind, record] : scan.entries) {
      auto [it, inserted] = index.emplace(record.request_id, recovered_.size());
      if (inserted) {
        recovered_.push_back(Recovered{std::move(record), seq});
      } else {
        recovered_[it->second] = Recovered{std::move(record), seq};
      }
    }
    next_seq_ = seq + 1;
  }
  for (const Recovered& r : recovered_) ++pins_[r.segment];
  for (auto it = pins_.begin(); it != pins_.end();) {
    if (it->second == 0) {
      ::unlink(PathOf(it->first).c_str());
      it = pins_.erase(it);
    } else {
      ++it;
    }
  }
  if (!recovered_.empty()) {
    log->warn("usage journal {}: {} records of an earlier run replayed", options_.dir,
              recovered_.size());
  }
  if (replayed != nullptr) replayed->Increment(static_cast<double>(recovered_.size()));
  const uint64_t seq = next_seq_++;
  ASSIGN_OR_RETURN(active_, CreateSegment(seq));
  active_seq_ = seq;
  active_bytes_ = kJournalMagic.size();
  active_opened_ = std::chrono::steady_clock::now();
  pins_[seq] = 0;
  return OkStatus();
}

Result<std::shared_ptr<UsageJournal::File>> UsageJournal::CreateSegment(uint64_t seq) {
  const std::string path = PathOf(seq);
  auto file = std::make_shared<File>();
  file->fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (file->fd < 0) return ErrnoStatus(errno, "cannot create " + path);
  if (::write(file->fd, kJournalMagic.data(), kJournalMagic.size()) !=
      static_cast<ssize_t>(kJournalMagic.size())) {
    const int err = errno;
    ::unlink(path.c_str());
    return ErrnoStatus(err == 0 ? ENOSPC : err, "cannot write " + path);
  }
  SyncDir(options_.dir);
  return file;
}

std::vector<UsageJournal::Recovered> UsageJournal::TakeRecovered() {
  std::lock_guard lock(mu_);
  return std::move(recovered_);
}

Result<uint64_t> UsageJournal::Append(std::string_view frame) {
  std::lock_guard lock(mu_);
  const ssize_t n = ::write(active_->fd, frame.data(), frame.size());
  if (n == static_cast<ssize_t>(frame.size())) {
    active_bytes_ += frame.size();
    ++pins_[active_seq_];
    ++unsynced_;
    if (!healthy_) {
      healthy_ = true;
      Logger("gateway")->warn("usage journal {} is writable again", options_.dir);
    }
    return active_seq_;
  }
  const int err = n < 0 ? errno : ENOSPC;
  // A partial frame would hide every later one from the replay: cut it off again.
  if (n > 0) (void)::ftruncate(active_->fd, static_cast<off_t>(active_bytes_));
  healthy_ = false;
  return ErrnoStatus(err, "usage journal append");
}

Status UsageJournal::AppendProgress(std::string_view frame, uint64_t& pin) {
  ASSIGN_OR_RETURN(uint64_t seq, Append(frame));
  Release(pin);
  pin = seq;
  return OkStatus();
}

void UsageJournal::Release(uint64_t segment, int64_t n) {
  if (segment == 0) return;
  std::lock_guard lock(mu_);
  auto it = pins_.find(segment);
  if (it != pins_.end()) it->second -= n;
}

void UsageJournal::Maintain() {
  std::shared_ptr<File> sealed;
  {
    std::unique_lock lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    const bool due =
        active_bytes_ > kJournalMagic.size() &&
        (active_bytes_ >= options_.segment_bytes || now - active_opened_ >= options_.segment_age);
    if (due) {
      const uint64_t seq = next_seq_++;
      lock.unlock();
      Result<std::shared_ptr<File>> file = CreateSegment(seq);
      lock.lock();
      if (file.ok()) {
        sealed = std::move(active_);
        active_ = std::move(*file);
        active_seq_ = seq;
        active_bytes_ = kJournalMagic.size();
        active_opened_ = now;
        pins_[seq] = 0;
      } else {
        Logger("gateway")->warn("usage journal rotation failed: {}", file.status().ToString());
      }
    }
  }
  // What was appended to the sealed segment is made durable before it is left alone.
  if (sealed) (void)::fdatasync(sealed->fd);
  std::vector<uint64_t> unused;
  {
    std::lock_guard lock(mu_);
    for (auto it = pins_.begin(); it != pins_.end();) {
      if (it->first != active_seq_ && it->second <= 0) {
        unused.push_back(it->first);
        it = pins_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (uint64_t seq : unused) ::unlink(PathOf(seq).c_str());
}

Status UsageJournal::Sync() {
  std::shared_ptr<File> file;
  {
    std::lock_guard lock(mu_);
    file = active_;
    unsynced_ = 0;
  }
  if (file == nullptr) return OkStatus();
  if (::fdatasync(file->fd) != 0) return ErrnoStatus(errno, "usage journal fdatasync");
  return OkStatus();
}

void UsageJournal::SyncLoop() {
  NameThread("segma-journal");
  // As large as a record, so that a disk with room for the probe has room for records too.
  std::string probe;
  AppendJournalFrame(JournalEntry::kNoop, store::UsageRecord{}, probe, /*padding=*/256);
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, options_.fsync_interval, [this] { return stopping_; });
    if (stopping_) break;
    const bool probe_needed = !healthy_;
    const bool sync_needed = unsynced_ > 0;
    lock.unlock();
    if (probe_needed) {
      // Nothing else may be appended meanwhile (a gateway that refuses requests on a failed
      // journal): find out whether the disk has room again.
      Result<uint64_t> seq = Append(probe);
      if (seq.ok()) Release(*seq);
    }
    if (sync_needed) {
      if (Status s = Sync(); !s.ok()) Logger("gateway")->error("{}", s.ToString());
    }
    lock.lock();
  }
}

size_t UsageJournal::segments() const {
  std::lock_guard lock(mu_);
  return pins_.size();
}

}  // namespace segma::gateway
