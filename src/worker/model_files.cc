#include "worker/model_files.h"

#include <filesystem>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include "common/logging.h"

namespace segma::worker {

namespace asio = boost::asio;
using boost::beast::http::verb;

namespace {

std::string CacheKey(const types::ModelSource& s, const std::string& backend) {
  return types::SourceKey(s) + "|" + backend;
}

bool IsHub(const types::ModelSource& s) {
  return s.type == types::SourceType::kHuggingFace || s.type == types::SourceType::kModelScope;
}

json::object ReportBody(const types::Model& model, const std::string& state,
                        const std::string& message, const std::string& local_path, int64_t size,
                        int64_t done) {
  json::object body;
  body["source"] = types::ToJson(model.source);
  body["backend"] = model.backend;
  body["state"] = state;
  body["state_message"] = message;
  body["local_path"] = local_path;
  body["size_bytes"] = std::max<int64_t>(size, 0);
  body["downloaded_bytes"] = std::max<int64_t>(done, 0);
  return body;
}

}  // namespace

std::string HumanBytes(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

ModelFiles::ModelFiles(asio::io_context& ioc, models::DownloaderConfig config,
                       std::string server_url)
    : ioc_(ioc),
      downloader_(std::move(config)),
      server_url_(std::move(server_url)),
      client_(ioc.get_executor()) {}

ModelFiles::~ModelFiles() = default;

void ModelFiles::SetCredentials(int64_t worker_id, std::string token) {
  worker_id_ = worker_id;
  token_ = std::move(token);
}

asio::awaitable<void> ModelFiles::Report(const types::Model& model, const std::string& state,
                                         const std::string& message,
                                         const models::LocalModel* local, int64_t size,
                                         int64_t done) {
  if (!IsHub(model.source) || token_.empty()) co_return;
  http::ClientRequest req;
  req.method = verb::put;
  req.url = server_url_ + "/v2/worker/model-files";
  req.Bearer(token_).JsonBody(
      ReportBody(model, state, message, local ? local->model_path : "", size, done));
  Result<http::ClientResponse> r = co_await client_.Fetch(std::move(req));
  if (!r.ok() || r->status >= 400) {
    Logger("worker")->warn("reporting the files of {} failed: {}", model.source.repo,
                           r.ok() ? r->body.substr(0, 200) : r.status().ToString());
  }
}

asio::awaitable<Result<models::LocalModel>> ModelFiles::Ensure(
    types::Model model, std::function<void(const std::string&)> on_progress) {
  const std::string key = CacheKey(model.source, model.backend);
  if (auto it = local_.find(key); it != local_.end()) {
    std::error_code ec;
    if (std::filesystem::exists(it->second.model_path, ec)) co_return it->second;
    local_.erase(it);
  }
  // Progress arrives on the downloader's thread; reports are sent from here, one at a time.
  struct Shared {
    models::DownloadProgress last;
    std::chrono::steady_clock::time_point last_sent{};
    bool sending = false;
  };
  auto shared = std::make_shared<Shared>();
  const std::string repo = model.source.repo;
  auto line = [repo](const models::DownloadProgress& p) {
    if (p.total_bytes <= 0) {
      return fmt::format("downloading {}: {} ({} of {} files)", repo, HumanBytes(p.done_bytes),
                         p.files_done, p.files_total);
    }
    return fmt::format(
        "downloading {}: {:.1f}% ({} of {}, {} of {} files)", repo,
        100.0 * static_cast<double>(p.done_bytes) / static_cast<double>(p.total_bytes),
        HumanBytes(p.done_bytes), HumanBytes(p.total_bytes), p.files_done, p.files_total);
  };
  models::ProgressFn progress = [this, shared, model, line,
                                 on_progress](const models::DownloadProgress& p) {
    asio::post(ioc_, [this, shared, model, line, on_progress, p] {
      shared->last = p;
      const auto now = std::chrono::steady_clock::now();
      if (shared->sending || now - shared->last_sent < std::chrono::seconds(1)) return;
      shared->last_sent = now;
      shared->sending = true;
      const std::string msg = line(p);
      if (on_progress) on_progress(msg);
      asio::co_spawn(
          ioc_,
          [this, shared, model, msg, p]() -> asio::awaitable<void> {
            co_await Report(model, "downloading", msg, nullptr, p.total_bytes, p.done_bytes);
            shared->sending = false;
          },
          asio::detached);
    });
  };
  if (IsHub(model.source)) {
    co_await Report(model, "downloading", "listing the files of " + repo, nullptr, 0, 0);
  }
  Result<models::LocalModel> local =
      co_await downloader_.Fetch(model.source, model.backend, std::move(progress));
  if (!local.ok()) {
    co_await Report(model, "error", local.status().message(), nullptr, shared->last.total_bytes,
                    shared->last.done_bytes);
    co_return local;
  }
  co_await Report(model, "ready", "", &*local, local->size_bytes, local->size_bytes);
  local_[key] = *local;
  co_return local;
}

asio::awaitable<void> ModelFiles::Sweep() {
  if (token_.empty()) co_return;
  http::ClientRequest req;
  req.url = server_url_ + "/v2/worker/model-files?per_page=500";
  req.Bearer(token_);
  Result<http::ClientResponse> r = co_await client_.Fetch(std::move(req));
  if (!r.ok() || r->status != 200) co_return;
  Result<json::value> v = r->Json();
  if (!v.ok() || !v->is_object() || !v->as_object().contains("items")) co_return;
  for (const json::value& item : v->at("items").as_array()) {
    const json::object& o = item.as_object();
    if (o.at("state").as_string() != "deleting") continue;
    const int64_t id = o.at("id").as_int64();
    Result<types::ModelSource> source = types::ModelSourceFromJson(o.at("source").as_object());
    if (!source.ok()) continue;
    const std::string backend(o.at("backend").as_string());
    Status removed = downloader_.Remove(*source, backend);
    if (!removed.ok()) {
      Logger("worker")->warn("removing the files of {} (model file {}): {}", source->repo, id,
                             removed.ToString());
      continue;
    }
    local_.erase(CacheKey(*source, backend));
    Logger("worker")->info("removed the files of {} (model file {})", source->repo, id);
    http::ClientRequest del;
    del.method = verb::delete_;
    del.url = fmt::format("{}/v2/worker/model-files/{}", server_url_, id);
    del.Bearer(token_);
    (void)co_await client_.Fetch(std::move(del));
  }
}

}  // namespace segma::worker
