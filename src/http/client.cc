#include "http/client.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>

namespace segma::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

struct Target {
  bool tls = false;
  std::string host;
  std::string port;
  std::string path_and_query;
  std::string key() const { return host + ":" + port; }
  std::string pool_key() const { return (tls ? "https://" : "http://") + key(); }
};

Result<Target> ParseTarget(const std::string& url) {
  auto u = boost::urls::parse_uri(url);
  if (!u) return InvalidArgumentError("invalid URL '" + url + "'");
  Target t;
  if (u->scheme() == "https") {
    t.tls = true;
  } else if (u->scheme() != "http") {
    return InvalidArgumentError("unsupported URL scheme in '" + url + "' (want http or https)");
  }
  t.host = std::string(u->encoded_host());
  if (t.host.empty()) return InvalidArgumentError("URL without host: '" + url + "'");
  // IPv6 literals come bracketed ("[::1]"); the resolver and certificate checks want them bare.
  if (t.host.size() > 2 && t.host.front() == '[' && t.host.back() == ']') {
    t.host = t.host.substr(1, t.host.size() - 2);
  }
  t.port = u->has_port() ? std::string(u->port()) : (t.tls ? "443" : "80");
  t.path_and_query = std::string(u->encoded_path());
  if (t.path_and_query.empty()) t.path_and_query = "/";
  if (u->has_query()) t.path_and_query += "?" + std::string(u->encoded_query());
  return t;
}

Status TransportError(const Target& t, std::string_view what, const boost::system::error_code& ec) {
  if (ec == beast::error::timeout) {
    return DeadlineExceededError("timed out " + std::string(what) + " " + t.key());
  }
  std::string detail = ec.message();
  if (ec.category() == asio::error::get_ssl_category()) {
    // OpenSSL's reason ("certificate verify failed") is what an operator needs to act on.
    const char* reason = ERR_reason_error_string(static_cast<unsigned long>(ec.value()));
    if (reason != nullptr) detail = reason;
  }
  return UnavailableError(std::string(what) + " " + t.key() + ": " + detail);
}

// The body ended: a clean end of stream, or a TLS peer that closed without close_notify after a
// body delimited by the connection's end (which HTTP/1.1 allows).
bool EndOfBody(const boost::system::error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
         ec == ssl::error::stream_truncated;
}

// One connection, plain or TLS. Every I/O helper below takes the stream through Io(), so the
// HTTP logic is written once for both.
struct Conn {
  std::unique_ptr<beast::tcp_stream> tcp;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls;

  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : *tcp; }
  void expires_after(std::chrono::milliseconds d) { lowest().expires_after(d); }
  void expires_never() { lowest().expires_never(); }
  void Close() {
    boost::system::error_code ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().socket().close(ignored);
  }
};

template <typename F>
auto Io(Conn& c, F f) -> decltype(f(*c.tcp)) {
  if (c.tls) return f(*c.tls);
  return f(*c.tcp);
}

bhttp::request<bhttp::string_body> BuildRequest(const ClientRequest& req, const Target& t) {
  bhttp::request<bhttp::string_body> r{req.method, t.path_and_query, 11};
  r.set(bhttp::field::host, t.host + ":" + t.port);
  r.set(bhttp::field::user_agent, "segma");
  for (const auto& [k, v] : req.headers) r.set(k, v);
  if (!req.body.empty() || req.method == bhttp::verb::post || req.method == bhttp::verb::put ||
      req.method == bhttp::verb::patch) {
    r.body() = req.body;
    r.prepare_payload();
  }
  r.keep_alive(true);
  return r;
}

template <typename Message>
void CopyHeaders(const Message& m, ClientResponse& out) {
  out.status = m.result_int();
  for (const auto& f : m) {
    std::string name(f.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.headers[name] = std::string(f.value());
  }
}

}  // namespace

ClientRequest& ClientRequest::JsonBody(const json::value& v) {
  body = json::serialize(v);
  headers.emplace_back("Content-Type", "application/json");
  return *this;
}

std::string ClientResponse::Header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

struct HttpClient::Pool {
  std::mutex mu;
  std::map<std::string, std::vector<std::unique_ptr<Conn>>> idle;
  size_t max_idle;
  TlsOptions tls_options;
  std::shared_ptr<ssl::context> tls_context;  // made on the first https:// request

  std::unique_ptr<Conn> Take(const std::string& key) {
    std::lock_guard lock(mu);
    auto it = idle.find(key);
    if (it == idle.end() || it->second.empty()) return nullptr;
    auto s = std::move(it->second.back());
    it->second.pop_back();
    return s;
  }
  void Give(const std::string& key, std::unique_ptr<Conn> s) {
    std::lock_guard lock(mu);
    auto& v = idle[key];
    if (v.size() < max_idle) v.push_back(std::move(s));
  }
  Result<std::shared_ptr<ssl::context>> TlsContext() {
    std::lock_guard lock(mu);
    if (tls_context) return tls_context;
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
    boost::system::error_code ec;
    ctx->set_default_verify_paths(ec);  // the system CA store; SSL_CERT_FILE overrides
    if (!tls_options.ca_file.empty()) {
      ctx->load_verify_file(tls_options.ca_file, ec);
      if (ec) {
        return FailedPreconditionError("cannot load CA file " + tls_options.ca_file + ": " +
                                       ec.message());
      }
    }
    ctx->set_verify_mode(tls_options.verify_peer ? ssl::verify_peer : ssl::verify_none);
    tls_context = std::move(ctx);
    return tls_context;
  }
};

HttpClient::HttpClient(asio::any_io_executor executor, size_t max_idle_per_host, TlsOptions tls)
    : pool_(std::make_shared<Pool>()), executor_(std::move(executor)) {
  pool_->max_idle = max_idle_per_host;
  pool_->tls_options = std::move(tls);
}

HttpClient::~HttpClient() = default;

namespace {

// A new connection to `t`; for https, the TLS handshake has been done and the server's
// certificate checked against `tls` (chain and host name).
asio::awaitable<Result<std::unique_ptr<Conn>>> Connect(asio::any_io_executor ex, Target t,
                                                       std::chrono::milliseconds timeout,
                                                       std::shared_ptr<ssl::context> tls) {
  tcp::resolver resolver(ex);
  auto [rec, results] = co_await resolver.async_resolve(t.host, t.port, kUseTuple);
  if (rec) co_return TransportError(t, "resolving", rec);
  auto stream = std::make_unique<beast::tcp_stream>(ex);
  stream->expires_after(timeout);
  auto [cec, ep] = co_await stream->async_connect(results, kUseTuple);
  if (cec) co_return TransportError(t, "connecting to", cec);
  boost::system::error_code ignored;
  stream->socket().set_option(tcp::no_delay(true), ignored);
  auto conn = std::make_unique<Conn>();
  if (!t.tls) {
    conn->tcp = std::move(stream);
    co_return std::move(conn);
  }
  conn->tls = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(std::move(*stream), *tls);
  boost::system::error_code not_ip;
  asio::ip::make_address(t.host, not_ip);
  // SNI: virtual-hosted mirrors and CDNs pick their certificate by it (never sent for an IP).
  if (not_ip && !SSL_set_tlsext_host_name(conn->tls->native_handle(), t.host.c_str())) {
    co_return UnavailableError("TLS: cannot set the server name " + t.host);
  }
  conn->tls->set_verify_callback(ssl::host_name_verification(t.host));
  conn->expires_after(timeout);
  auto [hec] = co_await conn->tls->async_handshake(ssl::stream_base::client, kUseTuple);
  if (hec) co_return TransportError(t, "TLS handshake with", hec);
  co_return std::move(conn);
}

}  // namespace

asio::awaitable<Result<ClientResponse>> HttpClient::Fetch(ClientRequest req) {
  CO_ASSIGN_OR_RETURN(Target t, ParseTarget(req.url));
  std::shared_ptr<ssl::context> tls;
  if (t.tls) {
    CO_ASSIGN_OR_RETURN(tls, pool_->TlsContext());
  }
  auto msg = BuildRequest(req, t);
  // A pooled connection may have been closed by the server while idle: retry once on a fresh one.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::unique_ptr<Conn> conn = attempt == 0 ? pool_->Take(t.pool_key()) : nullptr;
    const bool reused = conn != nullptr;
    if (!conn) {
      auto connected = co_await Connect(executor_, t, req.timeout, tls);
      if (!connected.ok()) co_return connected.status();
      conn = std::move(connected).value();
    }
    conn->expires_after(req.timeout);
    auto [wec, wn] =
        co_await Io(*conn, [&](auto& s) { return bhttp::async_write(s, msg, kUseTuple); });
    if (wec && reused) continue;
    // A server may answer early and close (413 for a body over its limit): read what it said
    // before reporting the failed write.
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(256 * 1024 * 1024);
    auto [rec, rn] = co_await Io(
        *conn, [&](auto& s) { return bhttp::async_read(s, buffer, parser, kUseTuple); });
    if (rec) {
      if (wec) co_return TransportError(t, "sending to", wec);
      if (reused && rn == 0) continue;
      co_return TransportError(t, "reading from", rec);
    }
    ClientResponse out;
    auto res = parser.release();
    CopyHeaders(res, out);
    out.body = std::move(res.body());
    if (!wec && res.keep_alive() && buffer.size() == 0) {
      conn->expires_never();
      pool_->Give(t.pool_key(), std::move(conn));
    }
    co_return out;
  }
  co_return UnavailableError("connection to " + t.key() + " failed twice");
}

asio::awaitable<Result<ClientResponse>> HttpClient::Stream(
    ClientRequest req, std::function<bool(std::string_view)> on_data) {
  CO_ASSIGN_OR_RETURN(Target t, ParseTarget(req.url));
  std::shared_ptr<ssl::context> tls;
  if (t.tls) {
    CO_ASSIGN_OR_RETURN(tls, pool_->TlsContext());
  }
  auto msg = BuildRequest(req, t);
  auto connected = co_await Connect(executor_, t, req.timeout, tls);
  if (!connected.ok()) co_return connected.status();
  std::unique_ptr<Conn> conn = std::move(connected).value();
  conn->expires_after(req.timeout);
  auto [wec, wn] =
      co_await Io(*conn, [&](auto& s) { return bhttp::async_write(s, msg, kUseTuple); });
  if (wec) co_return TransportError(t, "sending to", wec);

  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::buffer_body> parser;
  parser.body_limit(boost::none);
  conn->expires_after(req.timeout);
  auto [hec, hn] = co_await Io(
      *conn, [&](auto& s) { return bhttp::async_read_header(s, buffer, parser, kUseTuple); });
  if (hec) co_return TransportError(t, "reading from", hec);
  ClientResponse out;
  CopyHeaders(parser.get(), out);
  const bool ok_status = out.status >= 200 && out.status < 300;

  char chunk[16 * 1024];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof(chunk);
    conn->expires_after(req.timeout);
    auto [ec, n] = co_await Io(
        *conn, [&](auto& s) { return bhttp::async_read_some(s, buffer, parser, kUseTuple); });
    if (ec == bhttp::error::need_buffer) ec = {};
    const size_t got = sizeof(chunk) - parser.get().body().size;
    if (got > 0) {
      std::string_view data(chunk, got);
      if (!ok_status) {
        if (out.body.size() < 1024 * 1024) out.body.append(data);
      } else if (!on_data(data)) {
        co_return out;  // the caller has had enough; the connection is dropped
      }
    }
    if (ec) {
      if (EndOfBody(ec)) break;
      co_return TransportError(t, "streaming from", ec);
    }
  }
  co_return out;
}

struct ClientStream::Impl {
  Target target;
  std::chrono::milliseconds timeout{30'000};
  std::unique_ptr<Conn> stream;
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::buffer_body> parser;
  ClientResponse out;
  std::weak_ptr<HttpClient::Pool> pool;
  bool ended = false;
  bool cancelled = false;
  char chunk[16 * 1024];

  void Close() {
    if (stream == nullptr) return;
    stream->Close();
    stream.reset();
  }
  // The body ended cleanly: a keep-alive connection with nothing left over can serve another
  // request.
  void Finish() {
    ended = true;
    if (stream == nullptr) return;
    auto p = pool.lock();
    if (p && parser.is_done() && parser.keep_alive() && buffer.size() == 0) {
      stream->expires_never();
      p->Give(target.pool_key(), std::move(stream));
    }
    Close();
  }
};

ClientStream::ClientStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ClientStream::~ClientStream() {
  if (impl_) impl_->Close();
}

const ClientResponse& ClientStream::response() const { return impl_->out; }

void ClientStream::Cancel() {
  impl_->cancelled = true;
  impl_->Close();
}

asio::awaitable<Result<std::string_view>> ClientStream::Next() {
  Impl& i = *impl_;
  if (i.cancelled) co_return CancelledError("stream from " + i.target.key() + " cancelled");
  if (i.ended || i.stream == nullptr) co_return std::string_view();
  while (!i.parser.is_done()) {
    i.parser.get().body().data = i.chunk;
    i.parser.get().body().size = sizeof(i.chunk);
    i.stream->expires_after(i.timeout);
    auto [ec, n] = co_await Io(*i.stream, [&](auto& s) {
      return bhttp::async_read_some(s, i.buffer, i.parser, kUseTuple);
    });
    if (i.cancelled) co_return CancelledError("stream from " + i.target.key() + " cancelled");
    if (ec == bhttp::error::need_buffer) ec = {};
    const size_t got = sizeof(i.chunk) - i.parser.get().body().size;
    if (got > 0) co_return std::string_view(i.chunk, got);
    if (ec) {
      if (EndOfBody(ec)) break;
      Status s = TransportError(i.target, "streaming from", ec);
      i.Close();
      i.ended = true;
      co_return s;
    }
  }
  i.Finish();
  co_return std::string_view();
}

asio::awaitable<Result<std::unique_ptr<ClientStream>>> HttpClient::OpenStream(ClientRequest req) {
  CO_ASSIGN_OR_RETURN(Target t, ParseTarget(req.url));
  std::shared_ptr<ssl::context> tls;
  if (t.tls) {
    CO_ASSIGN_OR_RETURN(tls, pool_->TlsContext());
  }
  auto msg = BuildRequest(req, t);
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto impl = std::make_unique<ClientStream::Impl>();
    impl->target = t;
    impl->timeout = req.timeout;
    impl->pool = pool_;
    impl->stream = attempt == 0 ? pool_->Take(t.pool_key()) : nullptr;
    const bool reused = impl->stream != nullptr;
    if (!reused) {
      auto connected = co_await Connect(executor_, t, req.timeout, tls);
      if (!connected.ok()) co_return connected.status();
      impl->stream = std::move(connected).value();
    }
    impl->stream->expires_after(req.timeout);
    auto [wec, wn] =
        co_await Io(*impl->stream, [&](auto& s) { return bhttp::async_write(s, msg, kUseTuple); });
    if (wec) {
      if (reused) continue;  // the idle connection had been closed by the server
      co_return TransportError(t, "sending to", wec);
    }
    impl->parser.body_limit(boost::none);
    impl->stream->expires_after(req.timeout);
    auto [hec, hn] = co_await Io(*impl->stream, [&](auto& s) {
      return bhttp::async_read_header(s, impl->buffer, impl->parser, kUseTuple);
    });
    if (hec) {
      if (reused && impl->buffer.size() == 0 && hn == 0) continue;
      co_return TransportError(t, "reading from", hec);
    }
    CopyHeaders(impl->parser.get(), impl->out);
    if (impl->out.status < 200 || impl->out.status >= 300) {
      // Error bodies are small and wanted whole (to pass on or to log).
      ClientStream::Impl* raw = impl.get();
      auto s = std::make_unique<ClientStream>(std::move(impl));
      std::string body;
      for (;;) {
        auto piece = co_await s->Next();
        if (!piece.ok() || piece->empty()) break;
        if (body.size() < 1024 * 1024) body.append(*piece);
      }
      raw->out.body = std::move(body);
      co_return std::move(s);
    }
    co_return std::make_unique<ClientStream>(std::move(impl));
  }
  co_return UnavailableError("connection to " + t.key() + " failed twice");
}

namespace {

template <typename F>
Result<ClientResponse> RunSync(F make, TlsOptions tls = {}) {
  asio::io_context ioc;
  HttpClient client(ioc.get_executor(), 32, std::move(tls));
  Result<ClientResponse> result;
  asio::co_spawn(ioc, make(client), [&](std::exception_ptr e, Result<ClientResponse> r) {
    result = e ? Result<ClientResponse>(InternalError("HTTP client threw")) : std::move(r);
  });
  ioc.run();
  return result;
}

}  // namespace

Result<ClientResponse> FetchSync(ClientRequest req, TlsOptions tls) {
  return RunSync([&](HttpClient& c) { return c.Fetch(std::move(req)); }, std::move(tls));
}

Result<ClientResponse> StreamSync(ClientRequest req,
                                  std::function<bool(std::string_view)> on_data) {
  return RunSync([&](HttpClient& c) { return c.Stream(std::move(req), std::move(on_data)); });
}

}  // namespace segma::http
