#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "common/status.h"
#include "http/client.h"
#include "types/model.h"
#include "worker/models/model_downloader.h"

namespace segma::worker {

// The model files of this worker as the server sees them: makes a model's files available through
// the ModelDownloader, reports each file selection to the server (PUT /v2/worker/model-files:
// downloading with progress, ready, error), and deletes the files an admin asked to remove
// (Sweep). Runs on the given io_context (the downloader's work runs on its own thread); not
// thread-safe: use it from that io_context only.
class ModelFiles {
 public:
  ModelFiles(boost::asio::io_context& ioc, models::DownloaderConfig config, std::string server_url);
  ~ModelFiles();

  void SetCredentials(int64_t worker_id, std::string token);

  // The local files of `model` for `backend` ("" = automatic), downloaded when missing.
  // `on_progress` gets a human-readable progress line ("downloading org/x: 42.0% (...)"), at
  // most every second. Errors as ModelDownloader::Fetch.
  boost::asio::awaitable<Result<models::LocalModel>> Ensure(
      types::Model model, std::function<void(const std::string&)> on_progress);

  // Removes the files of this worker's rows the server marked "deleting", then the rows.
  // Rows whose files are being downloaded wait for the next sweep.
  boost::asio::awaitable<void> Sweep();

  const models::DownloaderConfig& config() const { return downloader_.config(); }

 private:
  boost::asio::awaitable<void> Report(const types::Model& model, const std::string& state,
                                      const std::string& message, const models::LocalModel* local,
                                      int64_t size, int64_t done);

  boost::asio::io_context& ioc_;
  models::ModelDownloader downloader_;
  const std::string server_url_;
  http::HttpClient client_;
  int64_t worker_id_ = 0;
  std::string token_;
  // SourceKey + "|" + backend → the files found or downloaded in this process.
  std::map<std::string, models::LocalModel> local_;
};

// "1.5 GiB"
std::string HumanBytes(int64_t bytes);

}  // namespace segma::worker
