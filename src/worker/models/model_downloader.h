#pragma once

// Model files on a worker: a cache directory (possibly shared by several workers over NFS) that
// holds hub repositories downloaded over HTTP(S), with resume, size and sha256 checks, bounded
// parallelism and progress. See docs/model-files.md.

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "common/status.h"
#include "http/client.h"
#include "types/model.h"
#include "worker/models/model_hub.h"

namespace segma::worker::models {

struct DownloaderConfig {
  std::string cache_dir;  // created when missing
  HubEndpoint huggingface{"https://huggingface.co", ""};
  HubEndpoint modelscope{"https://www.modelscope.cn", ""};
  http::TlsOptions tls;
  int max_parallel_files = 4;  // file downloads at once on this worker, over all models
  int max_attempts = 5;        // per file, for transport failures and HTTP 5xx
  std::chrono::milliseconds retry_delay{1000};  // doubles after each failed attempt
  std::chrono::milliseconds read_timeout{60'000};
  std::chrono::milliseconds progress_interval{500};
};

struct DownloadProgress {
  int64_t total_bytes = -1;  // -1 while unknown
  int64_t done_bytes = 0;
  int files_total = 0;
  int files_done = 0;
};

// What an engine is given.
struct LocalModel {
  std::string dir;         // the repository snapshot in the cache (or the local path's directory)
  std::string model_path;  // what the engine loads: a .gguf file, or `dir` for directory engines
  std::string format;      // "gguf" | "safetensors" | "" (local path: whatever it is)
  int64_t size_bytes = 0;
};

using ProgressFn = std::function<void(const DownloadProgress&)>;

// Downloads hub repositories into the cache and finds local paths. All network and disk work runs
// on the downloader's own thread, so a slow disk or a large hash never stalls the caller.
//
// Cache layout: <cache_dir>/<hub>/<org>/<name>/<revision>/<files>. A file is written to
// "<file>.part", checked (size, and sha256 where the hub gives one), then renamed: a file without
// the suffix is always complete. "<file>.lock" (flock, which Linux maps to NFS byte-range locks)
// keeps two workers sharing the cache from downloading the same file at once. Once every file of a
// selection is present, a marker ".segma-<key>.json" lists them, so a later Fetch (another
// instance, a restarted worker, an air-gapped site) needs no hub at all.
//
// Thread-safe.
class ModelDownloader {
 public:
  explicit ModelDownloader(DownloaderConfig config);
  ~ModelDownloader();  // stops the thread; unfinished downloads keep their .part for a resume

  // The files of `source` that `backend` needs ("" = decide from the files), downloaded when
  // missing. `on_progress` (may be empty) is called from the downloader's thread, at most every
  // progress_interval and at the end. Errors: kNotFound (repository, revision or file missing;
  // local path missing), kPermissionDenied (the hub wants a token), kUnavailable (hub
  // unreachable after retries), kFailedPrecondition (size or sha256 mismatch; the bad file is
  // deleted), kResourceExhausted (disk full or file size limit; the partial file is deleted),
  // kInvalidArgument (ambiguous file choice, bad listing). Resumes the caller on its executor.
  boost::asio::awaitable<Result<LocalModel>> Fetch(types::ModelSource source, std::string backend,
                                                   ProgressFn on_progress);

  // The cache directory of a hub source (whether or not it exists).
  std::string DirFor(const types::ModelSource& source) const;

  // Deletes the cached files of `source` (the whole revision directory once no other selection
  // of it remains). kFailedPrecondition while this worker downloads it; kInvalidArgument for a
  // source that has no cache (local path, simulated).
  Status Remove(const types::ModelSource& source, const std::string& backend);

  const DownloaderConfig& config() const { return config_; }

 private:
  struct FetchState;
  struct Sha256State;
  struct SlotWaiter;
  boost::asio::awaitable<Result<LocalModel>> DoFetch(types::ModelSource source, std::string backend,
                                                     ProgressFn on_progress);
  boost::asio::awaitable<Status> FetchFile(std::shared_ptr<FetchState> state, RemoteFile file);
  boost::asio::awaitable<Status> DownloadOnce(FetchState& state, const RemoteFile& file,
                                              const std::string& part, Sha256State& hash,
                                              int64_t& part_size);
  boost::asio::awaitable<void> AcquireSlot();
  void ReleaseSlot();

  const DownloaderConfig config_;
  boost::asio::io_context ioc_;
  std::unique_ptr<http::HttpClient> client_;
  std::thread thread_;
  // Only touched on the downloader's thread.
  int active_slots_ = 0;
  std::vector<std::shared_ptr<SlotWaiter>> slot_waiters_;
  std::mutex mu_;
  std::set<std::string> fetching_;  // cache directories with a Fetch in progress (GUARDED_BY mu_)
};

}  // namespace segma::worker::models
