#include "fakes/fake_model_server.h"

#include <stdexcept>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include "common/json.h"
#include "http/router.h"
#include "http/server.h"
#include "http/sse.h"
#include "metrics/registry.h"

namespace segma::testing {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;

namespace {

std::string ChunkJson(int i, int total) {
  const bool last = i + 1 == total;
  return fmt::format(
      R"({{"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{{"index":0,"delta":{{"content":"tok{} "}},"finish_reason":{}}}]}})",
      i, last ? "\"stop\"" : "null");
}

std::string UsageJson(const FakeModelOptions& o) {
  return fmt::format(
      R"({{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":{}}}}})",
      o.prompt_tokens, o.completion_tokens, o.prompt_tokens + o.completion_tokens, o.cached_tokens);
}

}  // namespace

struct FakeModelServer::Impl {
  asio::io_context ioc;
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  http::Router router;
  metrics::Registry registry;
  std::unique_ptr<http::HttpServer> server;
  std::thread thread;
};

std::string FakeModelServer::base_url() const { return fmt::format("http://127.0.0.1:{}", port_); }

std::string FakeModelServer::last_body() const {
  std::lock_guard lock(mu_);
  return last_body_;
}

std::string FakeModelServer::last_content_type() const {
  std::lock_guard lock(mu_);
  return last_content_type_;
}

std::string FakeModelServer::last_authorization() const {
  std::lock_guard lock(mu_);
  return last_authorization_;
}

std::string FakeModelServer::ExpectedStream(bool include_usage) const {
  std::string out;
  for (int i = 0; i < options_.chunks; ++i) out += http::FormatSse(ChunkJson(i, options_.chunks));
  if (include_usage) {
    out += http::FormatSse(fmt::format(
        R"({{"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[],"usage":{}}})",
        UsageJson(options_)));
  }
  out += http::FormatSse("[DONE]");
  return out;
}

FakeModelServer::FakeModelServer(FakeModelOptions options)
    : impl_(std::make_unique<Impl>()), options_(std::move(options)) {
  auto record = [this](http::RequestContext& ctx) {
    requests_++;
    std::lock_guard lock(mu_);
    last_body_ = ctx.req.body();
    last_content_type_ = std::string(ctx.req[bhttp::field::content_type]);
    last_authorization_ = std::string(ctx.req[bhttp::field::authorization]);
  };
  auto failure = [this]() -> std::optional<http::Response> {
    const int status = fail_status_.load();
    if (status == 0) return std::nullopt;
    http::Response r =
        http::Response::Json(static_cast<bhttp::status>(status),
                             json::object{{"error", json::object{{"message", "injected failure"},
                                                                 {"type", "server_error"},
                                                                 {"code", status}}}});
    r.msg.set("x-served-by", options_.name);
    return r;
  };
  auto completion = [this, record,
                     failure](http::RequestContext& ctx) -> asio::awaitable<http::Response> {
    record(ctx);
    if (auto f = failure()) co_return std::move(*f);
    auto parsed = ParseJson(ctx.req.body());
    if (!parsed.ok() || !parsed->is_object()) {
      co_return http::Response::Error(InvalidArgumentError("bad JSON"), http::ErrorStyle::kOpenAi);
    }
    const json::object& o = parsed->get_object();
    bool stream = false, include_usage = false;
    if (const auto* s = o.if_contains("stream"); s && s->is_bool()) stream = s->get_bool();
    if (const auto* so = o.if_contains("stream_options"); so && so->is_object()) {
      if (const auto* iu = so->get_object().if_contains("include_usage"); iu && iu->is_bool()) {
        include_usage = iu->get_bool();
      }
    }
    if (!stream) {
      std::string content;
      for (int i = 0; i < options_.chunks; ++i) content += fmt::format("tok{} ", i);
      http::Response r = http::Response::Text(
          bhttp::status::ok,
          fmt::format(
              R"({{"id":"chatcmpl-fake","object":"chat.completion","created":1700000000,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}],"usage":{}}})",
              content, UsageJson(options_)),
          "application/json");
      r.msg.set("x-served-by", options_.name);
      co_return r;
    }
    http::Response r = http::Response::Stream(
        "text/event-stream",
        [this, include_usage](http::ResponseStream& out) -> asio::awaitable<void> {
          // Copies: the lambda object may not outlive the first suspension in every caller.
          FakeModelServer* self = this;
          const bool usage = include_usage;
          auto ex = co_await asio::this_coro::executor;
          asio::steady_timer timer(ex);
          for (int i = 0; i < self->options_.chunks; ++i) {
            if (i == self->options_.die_after_chunks) {
              // The server logs the producer's failure and cuts the body short.
              throw std::runtime_error("fake engine died mid-stream");
            }
            const auto delay =
                i == 0 ? self->options_.first_chunk_delay : self->options_.chunk_delay;
            if (delay.count() > 0) {
              timer.expires_after(delay);
              co_await timer.async_wait(asio::use_awaitable);
            }
            if (!co_await out.Write(http::FormatSse(ChunkJson(i, self->options_.chunks)))) {
              self->cancelled_++;
              co_return;
            }
          }
          if (usage) {
            const std::string u = http::FormatSse(fmt::format(
                R"({{"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[],"usage":{}}})",
                UsageJson(self->options_)));
            if (!co_await out.Write(u)) {
              self->cancelled_++;
              co_return;
            }
          }
          if (!co_await out.Write(http::FormatSse("[DONE]"))) {
            self->cancelled_++;
            co_return;
          }
          self->completed_++;
        });
    r.msg.set("x-served-by", options_.name);
    co_return r;
  };
  impl_->router.Add(bhttp::verb::post, "/v1/chat/completions", completion);
  impl_->router.Add(bhttp::verb::post, "/v1/completions", completion);
  impl_->router.Add(
      bhttp::verb::post, "/v1/embeddings",
      [this, record, failure](http::RequestContext& ctx) -> asio::awaitable<http::Response> {
        record(ctx);
        if (auto f = failure()) co_return std::move(*f);
        http::Response r = http::Response::Text(
            bhttp::status::ok,
            fmt::format(
                R"({{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[0.5,0.25]}}],"model":"m","usage":{{"prompt_tokens":{},"total_tokens":{}}}}})",
                options_.prompt_tokens, options_.prompt_tokens),
            "application/json");
        r.msg.set("x-served-by", options_.name);
        co_return r;
      });
  auto echo = [this, record,
               failure](http::RequestContext& ctx) -> asio::awaitable<http::Response> {
    record(ctx);
    if (auto f = failure()) co_return std::move(*f);
    http::Response r = http::Response::Json(bhttp::status::ok, json::object{{"text", "hello"}});
    r.msg.set("x-served-by", options_.name);
    co_return r;
  };
  impl_->router.Add(bhttp::verb::post, "/v1/audio/transcriptions", echo);
  impl_->router.Add(bhttp::verb::post, "/v1/rerank", echo);

  http::ServerOptions so;
  so.name = "fake-model";
  so.access_log = false;
  impl_->server =
      std::make_unique<http::HttpServer>(impl_->ioc, impl_->router, impl_->registry, so);
  auto port = impl_->server->Listen("127.0.0.1", 0);
  SEGMA_CHECK(port.ok());
  port_ = *port;
  impl_->thread = std::thread([this] { impl_->ioc.run(); });
}

FakeModelServer::~FakeModelServer() {
  impl_->server->Stop();
  impl_->server->CloseAll();
  impl_->work.reset();
  impl_->ioc.stop();
  impl_->thread.join();
  impl_->server.reset();
}

}  // namespace segma::testing
