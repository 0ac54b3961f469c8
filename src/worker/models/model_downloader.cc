#include "worker/models/model_downloader.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "common/crypto.h"
#include "common/json.h"
#include "common/logging.h"
#include "common/thread.h"

namespace segma::worker::models {

namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {

asio::awaitable<void> Sleep(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

std::string Hex(const unsigned char* p, size_t n) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kHex[p[i] >> 4]);
    out.push_back(kHex[p[i] & 15]);
  }
  return out;
}

// A revision may hold '/' ("refs/pr/1"): one directory level per revision.
std::string PathSafe(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '/') {
      out += "%2F";
    } else {
      out.push_back(c);
    }
  }
  if (out == "." || out == "..") out = "%2E" + out.substr(1);
  return out;
}

// A disk error as the user should read it.
Status WriteError(int err, const std::string& path) {
  if (err == ENOSPC || err == EDQUOT || err == EFBIG) {
    return ResourceExhaustedError(fmt::format(
        "no space left for model files: writing {} failed: {}", path, std::strerror(err)));
  }
  return InternalError(fmt::format("writing {} failed: {}", path, std::strerror(err)));
}

// "\"abc\"" / "W/\"abc\"" → "abc", when it is a sha256 (64 hex digits); else "".
std::string Sha256FromEtag(std::string etag) {
  if (etag.starts_with("W/")) etag = etag.substr(2);
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') {
    etag = etag.substr(1, etag.size() - 2);
  }
  if (etag.size() != 64) return "";
  for (char& c : etag) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!std::isxdigit(static_cast<unsigned char>(c))) return "";
  }
  return etag;
}

int64_t ParseInt(const std::string& s) {
  if (s.empty()) return -1;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  return end != nullptr && *end == '\0' && v >= 0 ? v : -1;
}

// Resolves a Location header against the URL it came from.
std::string ResolveLocation(const std::string& base, const std::string& location) {
  if (location.starts_with("http://") || location.starts_with("https://")) return location;
  auto u = boost::urls::parse_uri(base);
  if (!u) return location;
  std::string origin = std::string(u->scheme()) + "://" + std::string(u->encoded_authority());
  if (location.starts_with("/")) return origin + location;
  std::string path(u->encoded_path());
  return origin + path.substr(0, path.rfind('/') + 1) + location;
}

std::string HostOf(const std::string& url) {
  auto u = boost::urls::parse_uri(url);
  return u ? std::string(u->encoded_authority()) : "";
}

// The marker of one file selection of a revision directory.
std::string MarkerName(const std::string& glob, const std::string& backend) {
  return ".segma-" + Sha256Hex(glob + "\n" + backend).substr(0, 16) + ".json";
}

// A held flock on "<file>.lock"; released (closed) by the destructor.
class FileLock {
 public:
  FileLock() = default;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  // true when taken; false when another process or Fetch holds it.
  Result<bool> TryLock(const std::string& path) {
    if (fd_ < 0) {
      fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd_ < 0) return WriteError(errno, path);
    }
    if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return true;
    if (errno == EWOULDBLOCK || errno == EINTR) return false;
    return InternalError(fmt::format("locking {} failed: {}", path, std::strerror(errno)));
  }

 private:
  int fd_ = -1;
};

}  // namespace

struct ModelDownloader::Sha256State {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  int64_t bytes = 0;
  Sha256State() { Reset(); }
  ~Sha256State() { EVP_MD_CTX_free(ctx); }
  void Reset() {
    EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
    bytes = 0;
  }
  void Update(std::string_view d) {
    EVP_DigestUpdate(ctx, d.data(), d.size());
    bytes += static_cast<int64_t>(d.size());
  }
  std::string Final() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx, md, &n);
    return Hex(md, n);
  }
  // Hashes the first `size` bytes of `path` (a partial file left by an earlier attempt).
  Status HashFile(const std::string& path, int64_t size) {
    Reset();
    std::ifstream in(path, std::ios::binary);
    std::vector<char> buf(1 << 20);
    while (bytes < size && in) {
      in.read(buf.data(), std::min<int64_t>(static_cast<int64_t>(buf.size()), size - bytes));
      if (in.gcount() <= 0) break;
      Update(std::string_view(buf.data(), static_cast<size_t>(in.gcount())));
    }
    if (bytes != size) return InternalError("cannot read back " + path);
    return OkStatus();
  }
};

struct ModelDownloader::SlotWaiter {
  asio::steady_timer timer;
  bool granted = false;
  explicit SlotWaiter(asio::any_io_executor ex) : timer(ex) {}
};

struct ModelDownloader::FetchState {
  types::ModelSource source;
  Hub hub = Hub::kHuggingFace;
  HubEndpoint endpoint;
  std::string dir;
  ProgressFn on_progress;
  DownloadProgress progress;
  std::chrono::steady_clock::time_point last_report{};
  bool aborted = false;  // a file failed: the others stop at their next chunk
  Status first_error;
  int remaining = 0;
  std::unique_ptr<asio::steady_timer> done;

  void Report(bool force) {
    if (!on_progress) return;
    auto now = std::chrono::steady_clock::now();
    if (!force && now - last_report < std::chrono::milliseconds(200)) return;
    last_report = now;
    on_progress(progress);
  }
};

ModelDownloader::ModelDownloader(DownloaderConfig config) : config_(std::move(config)) {
  client_ = std::make_unique<http::HttpClient>(ioc_.get_executor(), 16, config_.tls);
  thread_ = std::thread([this] {
    NameThread("segma-download");
    auto guard = asio::make_work_guard(ioc_);
    ioc_.run();
  });
}

ModelDownloader::~ModelDownloader() {
  ioc_.stop();
  if (thread_.joinable()) thread_.join();
}

std::string ModelDownloader::DirFor(const types::ModelSource& s) const {
  const Hub hub = s.type == types::SourceType::kModelScope ? Hub::kModelScope : Hub::kHuggingFace;
  return (fs::path(config_.cache_dir) / std::string(HubName(hub)) / s.repo / PathSafe(s.revision))
      .string();
}

asio::awaitable<Result<LocalModel>> ModelDownloader::Fetch(types::ModelSource source,
                                                           std::string backend,
                                                           ProgressFn on_progress) {
  co_return co_await asio::co_spawn(
      ioc_, DoFetch(std::move(source), std::move(backend), std::move(on_progress)),
      asio::use_awaitable);
}

asio::awaitable<void> ModelDownloader::AcquireSlot() {
  if (active_slots_ < config_.max_parallel_files) {
    ++active_slots_;
    co_return;
  }
  auto w = std::make_shared<SlotWaiter>(co_await asio::this_coro::executor);
  slot_waiters_.push_back(w);
  while (!w->granted) {
    w->timer.expires_after(std::chrono::hours(24));
    co_await w->timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

void ModelDownloader::ReleaseSlot() {
  if (slot_waiters_.empty()) {
    --active_slots_;
    return;
  }
  // The slot passes straight to the longest waiter (the count stays the same).
  std::shared_ptr<SlotWaiter> w = slot_waiters_.front();
  slot_waiters_.erase(slot_waiters_.begin());
  w->granted = true;
  w->timer.cancel();
}

asio::awaitable<Result<LocalModel>> ModelDownloader::DoFetch(types::ModelSource source,
                                                             std::string backend,
                                                             ProgressFn on_progress) {
  if (source.type == types::SourceType::kLocalPath) {
    std::error_code ec;
    if (!fs::exists(source.path, ec)) {
      co_return NotFoundError("model path not found on this worker: " + source.path);
    }
    LocalModel m;
    m.model_path = source.path;
    m.dir = fs::is_directory(source.path, ec) ? source.path
                                              : fs::path(source.path).parent_path().string();
    if (fs::is_regular_file(source.path, ec)) m.size_bytes = fs::file_size(source.path, ec);
    co_return m;
  }
  if (source.type != types::SourceType::kHuggingFace &&
      source.type != types::SourceType::kModelScope) {
    co_return InvalidArgumentError("this source has no files to fetch");
  }
  auto state = std::make_shared<FetchState>();
  state->source = source;
  state->hub = source.type == types::SourceType::kModelScope ? Hub::kModelScope : Hub::kHuggingFace;
  state->endpoint = state->hub == Hub::kModelScope ? config_.modelscope : config_.huggingface;
  state->dir = DirFor(source);
  state->on_progress = std::move(on_progress);
  const std::string marker = (fs::path(state->dir) / MarkerName(source.file, backend)).string();

  // A complete earlier download: no hub needed.
  if (Result<json::value> m = ParseJson([&] {
        std::ifstream in(marker);
        return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      }());
      m.ok() && m->is_object()) {
    const json::object& o = m->as_object();
    bool complete = o.contains("files") && o.at("files").is_array();
    int64_t size = 0;
    if (complete) {
      for (const json::value& f : o.at("files").as_array()) {
        std::error_code ec;
        const std::string p = (fs::path(state->dir) / std::string(f.as_string())).string();
        if (!fs::is_regular_file(p, ec)) complete = false;
        if (complete) size += static_cast<int64_t>(fs::file_size(p, ec));
      }
    }
    if (complete) {
      LocalModel lm;
      lm.dir = state->dir;
      lm.format = std::string(o.at("format").as_string());
      const std::string model_file(o.at("model_file").as_string());
      lm.model_path = model_file.empty() ? state->dir : state->dir + "/" + model_file;
      lm.size_bytes = size;
      state->progress.total_bytes = size;
      state->progress.done_bytes = size;
      state->progress.files_total = state->progress.files_done =
          static_cast<int>(o.at("files").as_array().size());
      state->Report(true);
      co_return lm;
    }
  }

  {
    std::lock_guard lock(mu_);
    fetching_.insert(state->dir);
  }
  struct Unmark {
    ModelDownloader* self;
    std::string dir;
    ~Unmark() {
      std::lock_guard lock(self->mu_);
      self->fetching_.erase(dir);
    }
  } unmark{this, state->dir};

  // The listing, retried like a file (a flaky mirror should not fail a deployment).
  http::ClientResponse listing;
  const std::string listing_url =
      ListingUrl(state->hub, state->endpoint.endpoint, source.repo, source.revision);
  for (int attempt = 1;; ++attempt) {
    http::ClientRequest req;
    req.url = listing_url;
    req.timeout = config_.read_timeout;
    req.Bearer(state->endpoint.token);
    Result<http::ClientResponse> r = co_await client_->Fetch(std::move(req));
    if (r.ok() && r->status < 500) {
      listing = std::move(r).value();
      break;
    }
    if (attempt >= config_.max_attempts) {
      co_return UnavailableError(
          fmt::format("{} hub {} unreachable: {}", HubName(state->hub), state->endpoint.endpoint,
                      r.ok() ? fmt::format("HTTP {}", r->status) : r.status().message()));
    }
    co_await Sleep(config_.retry_delay * (1 << std::min(attempt - 1, 6)));
  }
  if (listing.status == 401 || listing.status == 403 || listing.status == 404) {
    co_return NotFoundError(
        fmt::format("repository {} (revision {}) not found on {} (HTTP {}{})", source.repo,
                    source.revision, state->endpoint.endpoint, listing.status,
                    listing.status == 404 ? "" : "; a private or gated repository needs a token"));
  }
  if (listing.status != 200) {
    co_return UnavailableError(fmt::format("listing {} on {} failed: HTTP {}", source.repo,
                                           state->endpoint.endpoint, listing.status));
  }
  CO_ASSIGN_OR_RETURN(std::vector<RemoteFile> files, ParseListing(state->hub, listing.body));
  CO_ASSIGN_OR_RETURN(FileSelection sel, SelectFiles(files, source.file, backend));

  std::error_code ec;
  fs::create_directories(state->dir, ec);
  if (ec) co_return WriteError(ec.value(), state->dir);
  state->progress.files_total = static_cast<int>(sel.files.size());
  state->progress.total_bytes = 0;
  for (const RemoteFile& f : sel.files) {
    if (f.size < 0) {
      state->progress.total_bytes = -1;
      break;
    }
    state->progress.total_bytes += f.size;
  }
  state->Report(true);

  state->remaining = static_cast<int>(sel.files.size());
  state->done = std::make_unique<asio::steady_timer>(ioc_, std::chrono::hours(24 * 365));
  for (const RemoteFile& f : sel.files) {
    asio::co_spawn(ioc_, FetchFile(state, f), [state](std::exception_ptr e, Status s) {
      if (e) s = InternalError("download ended by an exception");
      if (!s.ok() && state->first_error.ok()) {
        state->first_error = s;
        state->aborted = true;
      }
      if (--state->remaining == 0) state->done->cancel();
    });
  }
  while (state->remaining > 0) {
    co_await state->done->async_wait(asio::as_tuple(asio::use_awaitable));
  }
  if (!state->first_error.ok()) co_return state->first_error;

  LocalModel lm;
  lm.dir = state->dir;
  lm.format = sel.format;
  lm.model_path = sel.model_file.empty() ? state->dir : state->dir + "/" + sel.model_file;
  json::array names;
  for (const RemoteFile& f : sel.files) {
    names.emplace_back(f.path);
    lm.size_bytes += static_cast<int64_t>(fs::file_size(fs::path(state->dir) / f.path, ec));
  }
  json::object mo;
  mo["files"] = std::move(names);
  mo["format"] = sel.format;
  mo["model_file"] = sel.model_file;
  mo["repo"] = source.repo;
  mo["revision"] = source.revision;
  const std::string tmp = marker + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << json::serialize(mo);
    if (!out.flush()) co_return WriteError(errno ? errno : EIO, tmp);
  }
  fs::rename(tmp, marker, ec);
  if (ec) co_return WriteError(ec.value(), marker);
  state->progress.done_bytes = lm.size_bytes;
  state->progress.files_done = state->progress.files_total;
  state->Report(true);
  co_return lm;
}

asio::awaitable<Status> ModelDownloader::FetchFile(std::shared_ptr<FetchState> state,
                                                   RemoteFile file) {
  const std::string final_path = (fs::path(state->dir) / file.path).string();
  const std::string part = final_path + ".part";
  std::error_code ec;
  auto present = [&] {
    std::error_code e;
    return fs::is_regular_file(final_path, e) &&
           (file.size < 0 || static_cast<int64_t>(fs::file_size(final_path, e)) == file.size);
  };
  auto finished = [&]() -> Status {
    state->progress.files_done++;
    state->Report(true);
    return OkStatus();
  };
  if (present()) {
    state->progress.done_bytes += static_cast<int64_t>(fs::file_size(final_path, ec));
    co_return finished();
  }
  fs::create_directories(fs::path(final_path).parent_path(), ec);
  if (ec) co_return WriteError(ec.value(), final_path);

  // Another worker on the shared cache (or another Fetch here) may be writing this file: wait for
  // it, then use its result.
  FileLock lock;
  for (;;) {
    CO_ASSIGN_OR_RETURN(bool taken, lock.TryLock(final_path + ".lock"));
    if (taken) break;
    if (state->aborted) co_return CancelledError("download of " + file.path + " abandoned");
    co_await Sleep(std::chrono::milliseconds(200));
  }
  if (present()) {
    state->progress.done_bytes += static_cast<int64_t>(fs::file_size(final_path, ec));
    co_return finished();
  }

  co_await AcquireSlot();
  struct Release {
    ModelDownloader* self;
    ~Release() { self->ReleaseSlot(); }
  } release{this};

  Sha256State hash;
  int64_t part_size = fs::exists(part, ec) ? static_cast<int64_t>(fs::file_size(part, ec)) : 0;
  if (part_size > 0) {
    Status s = hash.HashFile(part, part_size);
    if (!s.ok()) {
      fs::remove(part, ec);
      part_size = 0;
      hash.Reset();
    }
  }
  state->progress.done_bytes += part_size;
  Status last;
  for (int attempt = 1; attempt <= config_.max_attempts; ++attempt) {
    if (state->aborted) co_return CancelledError("download of " + file.path + " abandoned");
    const int64_t before = part_size;
    last = co_await DownloadOnce(*state, file, part, hash, part_size);
    if (last.ok()) break;
    const bool retry =
        last.code() == StatusCode::kUnavailable || last.code() == StatusCode::kDeadlineExceeded;
    if (!retry) {
      if (last.code() == StatusCode::kResourceExhausted ||
          last.code() == StatusCode::kFailedPrecondition) {
        state->progress.done_bytes -= part_size;
        fs::remove(part, ec);  // never keep what cannot be used; free the space
      }
      co_return last;
    }
    Logger("worker")->warn("downloading {} of {}: {} (attempt {} of {}, {} bytes kept)", file.path,
                           state->source.repo, last.message(), attempt, config_.max_attempts,
                           part_size);
    if (part_size > before) attempt = std::min(attempt, 1);  // progress: keep trying
    co_await Sleep(config_.retry_delay * (1 << std::min(attempt - 1, 6)));
  }
  if (!last.ok()) co_return last;
  fs::rename(part, final_path, ec);
  if (ec) co_return WriteError(ec.value(), final_path);
  co_return finished();
}

// One GET of `file` (following redirects), appended to `part` from `part_size`. On success the
// part file is complete and verified. kUnavailable / kDeadlineExceeded are worth another attempt
// (the bytes received are kept).
asio::awaitable<Status> ModelDownloader::DownloadOnce(FetchState& state, const RemoteFile& file,
                                                      const std::string& part, Sha256State& hash,
                                                      int64_t& part_size) {
  std::string url = FileUrl(state.hub, state.endpoint.endpoint, state.source.repo,
                            state.source.revision, file.path);
  const std::string first_host = HostOf(url);
  std::string expected_sha = file.sha256;
  int64_t expected_size = file.size;
  std::unique_ptr<http::ClientStream> stream;
  for (int hop = 0;; ++hop) {
    http::ClientRequest req;
    req.url = url;
    req.timeout = config_.read_timeout;
    // The token goes to the hub only, never to the CDN a redirect points at.
    if (HostOf(url) == first_host) req.Bearer(state.endpoint.token);
    if (part_size > 0) req.headers.emplace_back("Range", fmt::format("bytes={}-", part_size));
    CO_ASSIGN_OR_RETURN(stream, co_await client_->OpenStream(std::move(req)));
    const http::ClientResponse& head = stream->response();
    // Hugging Face names an LFS file's sha256 and size on the resolve response (also when it is a
    // redirect to the CDN).
    if (expected_sha.empty()) expected_sha = Sha256FromEtag(head.Header("x-linked-etag"));
    if (expected_size < 0) expected_size = ParseInt(head.Header("x-linked-size"));
    if (head.status >= 300 && head.status < 400 && !head.Header("location").empty()) {
      if (hop >= 5) co_return UnavailableError("too many redirects for " + file.path);
      url = ResolveLocation(url, head.Header("location"));
      continue;
    }
    break;
  }
  const http::ClientResponse& head = stream->response();
  if (head.status == 416 && part_size > 0 && part_size == expected_size) {
    // Everything had arrived before: only the check is left.
  } else if (head.status == 404) {
    co_return NotFoundError(fmt::format("file {} not found in {} at {} (HTTP 404)", file.path,
                                        state.source.repo, state.endpoint.endpoint));
  } else if (head.status == 401 || head.status == 403) {
    co_return PermissionDeniedError(
        fmt::format("the hub refused {} (HTTP {}): a private or gated repository needs a token",
                    file.path, head.status));
  } else if (head.status >= 500 || head.status == 429 || head.status == 408) {
    co_return UnavailableError(fmt::format("HTTP {} for {}", head.status, file.path));
  } else if (head.status == 416 || head.status == 200 || head.status == 206) {
    int64_t offset = 0;
    if (head.status == 206) {
      // "bytes START-END/TOTAL"
      const std::string range = head.Header("content-range");
      if (range.starts_with("bytes ")) offset = ParseInt(range.substr(6, range.find('-') - 6));
      const size_t slash = range.find('/');
      if (expected_size < 0 && slash != std::string::npos) {
        expected_size = ParseInt(range.substr(slash + 1));
      }
    } else if (head.status == 200 && expected_size < 0) {
      expected_size = ParseInt(head.Header("content-length"));
    }
    if (head.status != 206 || offset != part_size) {
      // The server sent the whole file (or an unusable range): start the part over.
      state.progress.done_bytes -= part_size;
      part_size = 0;
      hash.Reset();
      if (::truncate(part.c_str(), 0) != 0 && errno != ENOENT) co_return WriteError(errno, part);
      if (head.status == 416) co_return UnavailableError("range refused for " + file.path);
    }
    const int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) co_return WriteError(errno, part);
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    for (;;) {
      if (state.aborted) co_return CancelledError("download of " + file.path + " abandoned");
      Result<std::string_view> piece = co_await stream->Next();
      if (!piece.ok()) co_return piece.status();
      if (piece->empty()) break;
      std::string_view d = *piece;
      while (!d.empty()) {
        ssize_t n = ::write(fd, d.data(), d.size());
        if (n < 0) {
          if (errno == EINTR) continue;
          co_return WriteError(errno, part);
        }
        hash.Update(d.substr(0, static_cast<size_t>(n)));
        d.remove_prefix(static_cast<size_t>(n));
        part_size += n;
        state.progress.done_bytes += n;
      }
      if (expected_size >= 0 && part_size > expected_size) break;  // checked below
      state.Report(false);
    }
    if (::fsync(fd) != 0) co_return WriteError(errno, part);
  } else {
    co_return UnavailableError(fmt::format("unexpected HTTP {} for {}", head.status, file.path));
  }

  if (expected_size >= 0 && part_size != expected_size) {
    if (part_size < expected_size) {
      co_return UnavailableError(
          fmt::format("{} ended after {} of {} bytes", file.path, part_size, expected_size));
    }
    co_return FailedPreconditionError(
        fmt::format("size mismatch for {}: the hub says {} bytes, received {} (file discarded)",
                    file.path, expected_size, part_size));
  }
  if (!expected_sha.empty()) {
    const std::string got = hash.Final();
    if (got != expected_sha) {
      co_return FailedPreconditionError(
          fmt::format("sha256 mismatch for {}: the hub says {}, received {} (file discarded)",
                      file.path, expected_sha, got));
    }
  }
  co_return OkStatus();
}

Status ModelDownloader::Remove(const types::ModelSource& source, const std::string& backend) {
  if (source.type != types::SourceType::kHuggingFace &&
      source.type != types::SourceType::kModelScope) {
    return InvalidArgumentError("only hub sources have cached files");
  }
  const std::string dir = DirFor(source);
  {
    std::lock_guard lock(mu_);
    if (fetching_.count(dir)) {
      return FailedPreconditionError("the files of " + source.repo + " are being downloaded");
    }
  }
  std::error_code ec;
  const fs::path marker = fs::path(dir) / MarkerName(source.file, backend);
  bool others = false;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(".segma-") && name.ends_with(".json") && e.path() != marker) others = true;
  }
  if (!others) {
    fs::remove_all(dir, ec);
    if (ec && fs::exists(dir)) return InternalError("removing " + dir + ": " + ec.message());
    return OkStatus();
  }
  // Other selections of the revision stay: remove only what this one alone uses.
  std::set<std::string> keep;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with(".segma-") || !name.ends_with(".json") || e.path() == marker) continue;
    std::ifstream in(e.path());
    Result<json::value> v = ParseJson(
        std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()));
    if (v.ok() && v->is_object() && v->as_object().contains("files")) {
      for (const json::value& f : v->at("files").as_array())
        keep.insert(std::string(f.as_string()));
    }
  }
  std::ifstream in(marker);
  Result<json::value> mine = ParseJson(
      std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()));
  if (mine.ok() && mine->is_object() && mine->as_object().contains("files")) {
    for (const json::value& f : mine->at("files").as_array()) {
      const std::string name(f.as_string());
      if (!keep.count(name)) fs::remove(fs::path(dir) / name, ec);
    }
  }
  fs::remove(marker, ec);
  return OkStatus();
}

}  // namespace segma::worker::models
