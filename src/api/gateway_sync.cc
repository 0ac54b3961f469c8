#include "api/gateway_sync.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <sys/stat.h>

#include "common/crypto.h"
#include "common/logging.h"
#include "gateway/replica.h"
#include "http/server.h"

namespace segma::api {

namespace asio = boost::asio;
using http::bhttp::status;

namespace {

constexpr size_t kMaxUsageRecordsPerPost = 10'000;

bool Authorized(const http::RequestContext& ctx, const std::string& token) {
  std::optional<std::string> bearer = ctx.BearerToken();
  return bearer && ConstantTimeEquals(*bearer, token);
}

http::Response Unauthorized() {
  return http::Response::Error(UnauthenticatedError("a valid gateway token is required"));
}

}  // namespace

Result<std::string> LoadOrCreateGatewayToken(const std::string& data_dir) {
  return LoadOrCreateTokenFile(data_dir + "/gateway_token", "segma_gw_");
}

Result<std::string> LoadOrCreateTokenFile(const std::string& path, std::string_view prefix) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
      struct stat st {};
      char buf[256];
      const ssize_t n = ::fstat(fd, &st) == 0 ? ::read(fd, buf, sizeof(buf)) : -1;
      ::close(fd);
      if ((st.st_mode & 0077) != 0) {
        return FailedPreconditionError(path + " is accessible by group or others; chmod 600 it");
      }
      std::string token(buf, n > 0 ? static_cast<size_t>(n) : 0);
      while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
      if (token.size() < 16) return FailedPreconditionError(path + " holds no usable token");
      return token;
    }
    if (errno != ENOENT) {
      return UnavailableError(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
    }
    const std::string token = std::string(prefix) + RandomToken(24);
    const int out = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
      if (errno == EEXIST) continue;  // another process made it first: read theirs
      return UnavailableError(fmt::format("cannot create {}: {}", path, std::strerror(errno)));
    }
    const std::string data = token + "\n";
    const bool ok = ::write(out, data.data(), data.size()) == static_cast<ssize_t>(data.size());
    ::close(out);
    if (!ok) {
      ::unlink(path.c_str());
      return UnavailableError("cannot write " + path);
    }
    return token;
  }
  return UnavailableError("cannot create " + path);
}

void InstallGatewaySync(http::Router& router, gateway::Gateway& gateway, store::Store& store,
                        asio::thread_pool& blocking, std::string token) {
  router.Add(http::bhttp::verb::get, "/internal/gateway/state",
             [&gateway, token](http::RequestContext& ctx) -> asio::awaitable<http::Response> {
               if (!Authorized(ctx, token)) co_return Unauthorized();
               int64_t timeout_s = 20;
               if (auto t = ctx.Query("timeout_s")) {
                 char* end = nullptr;
                 timeout_s = std::strtoll(t->c_str(), &end, 10);
                 if (t->empty() || *end != '\0' || timeout_s < 0 || timeout_s > 30) {
                   co_return http::Response::Error(
                       InvalidArgumentError("timeout_s must be an integer from 0 to 30"));
                 }
               }
               if (std::optional<std::string> known = ctx.Query("version")) {
                 // Long poll: the key table and route table change off this thread; checking every
                 // 50 ms keeps a change's delay to the replica well under a second.
                 asio::steady_timer timer(co_await asio::this_coro::executor);
                 const auto deadline =
                     std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
                 while (gateway::StateVersion(gateway) == *known) {
                   if (std::chrono::steady_clock::now() >= deadline) {
                     http::Response unchanged = http::Response::NoContent();
                     unchanged.msg.result(status::not_modified);
                     co_return unchanged;
                   }
                   timer.expires_after(std::chrono::milliseconds(50));
                   auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
                   if (ec) co_return http::Response::Error(UnavailableError("shutting down"));
                 }
               }
               co_return http::Response::Json(status::ok, gateway::StateToJson(gateway));
             });

  router.Add(
      http::bhttp::verb::post, "/internal/gateway/usage",
      [&store, &blocking, token](http::RequestContext& ctx) -> asio::awaitable<http::Response> {
        if (!Authorized(ctx, token)) co_return Unauthorized();
        Result<json::value> body = ParseJson(ctx.req.body());
        if (!body.ok() || !body->is_object() || !body->as_object().contains("records") ||
            !body->at("records").is_array()) {
          co_return http::Response::Error(
              InvalidArgumentError("body must be {\"records\": [usage records]}"));
        }
        const json::array& in = body->at("records").as_array();
        if (in.size() > kMaxUsageRecordsPerPost) {
          co_return http::Response::Error(InvalidArgumentError(
              fmt::format("at most {} records per request", kMaxUsageRecordsPerPost)));
        }
        // All or nothing: one bad record refuses the batch before anything is written.
        std::vector<store::UsageRecord> records;
        records.reserve(in.size());
        for (size_t i = 0; i < in.size(); ++i) {
          Result<store::UsageRecord> r = gateway::UsageRecordFromJson(in[i]);
          if (!r.ok()) {
            co_return http::Response::Error(
                InvalidArgumentError(fmt::format("records[{}]: {}", i, r.status().message())));
          }
          records.push_back(std::move(*r));
        }
        Status s = co_await http::RunBlocking(blocking, [&store, &records] {
          RETURN_IF_ERROR(store.InsertUsageRecords(records));
          if (Status t = gateway::TouchKeysOf(store, records); !t.ok()) {
            Logger("gateway")->warn("API key last_used_at not updated: {}", t.ToString());
          }
          return OkStatus();
        });
        if (!s.ok()) co_return http::Response::Error(s);
        co_return http::Response::Json(
            status::ok, json::object{{"accepted", static_cast<int64_t>(records.size())}});
      });
}

}  // namespace segma::api
