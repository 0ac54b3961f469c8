#include "http/client.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <charconv>
#include <limits>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <sys/socket.h>

#include "http/write_all.h"

namespace segma::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
using SteadyClock = std::chrono::steady_clock;
using Ticks = SteadyClock::rep;
// How often the sweep looks for connections past their deadline.
constexpr auto kSweepEvery = std::chrono::milliseconds(250);
constexpr Ticks kNoDeadline = std::numeric_limits<Ticks>::max();
constexpr Ticks kFired = std::numeric_limits<Ticks>::min();  // the sweep shut the socket down
// First read buffer: a typical response head and a small body arrive in one read.
constexpr size_t kReadBufferBytes = 4096;

Ticks Now() { return SteadyClock::now().time_since_epoch().count(); }
Ticks DeadlineIn(std::chrono::milliseconds timeout) {
  // Saturated: a timeout of years is as good as none, and must not overflow.
  constexpr std::chrono::milliseconds kLongest = std::chrono::hours(24 * 365 * 10);
  return Now() + std::chrono::duration_cast<SteadyClock::duration>(
                     std::clamp(timeout, std::chrono::milliseconds(0), kLongest))
                     .count();
}

char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; }

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) return false;
  }
  return true;
}

// The parts of a request URL, as views into it.
struct Target {
  bool tls = false;
  std::string_view origin;  // scheme://authority as written: the key of the connection pool
  std::string_view host;    // without the brackets of an IPv6 literal
  bool ipv6 = false;
  uint16_t port = 0;
  std::string_view path;   // "" or starting with '/'
  std::string_view query;  // without the '?'; has_query tells "?" from none
  bool has_query = false;
  std::string key() const { return std::string(host) + ":" + std::to_string(port); }
};

// RFC 3986 pchar without pct-encoded: unreserved, sub-delims, ':' and '@'.
constexpr std::array<bool, 256> kPchar = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[c] =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        std::string_view("-._~!$&'()*+,;=:@").find(static_cast<char>(c)) != std::string_view::npos;
  }
  return t;
}();

bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// RFC 3986 characters of a path, query or fragment (pct-encodings checked); `extra` are allowed
// on top of pchar.
bool ValidUriPart(std::string_view s, std::string_view extra) {
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size() || !IsHex(s[i + 1]) || !IsHex(s[i + 2])) return false;
      i += 2;
      continue;
    }
    if (kPchar[static_cast<unsigned char>(c)]) continue;
    if (extra.find(c) != std::string_view::npos) continue;
    return false;
  }
  return true;
}

// http(s)://[userinfo@]host[:port][/path][?query][#fragment], checked as strictly as RFC 3986
// (a request target with a space or CR/LF in it could not be sent safely).
Result<Target> ParseTarget(std::string_view url) {
  auto invalid = [&] { return InvalidArgumentError("invalid URL '" + std::string(url) + "'"); };
  Target t;
  const size_t colon = url.find(':');
  if (colon == std::string_view::npos || colon == 0) return invalid();
  const std::string_view scheme = url.substr(0, colon);
  for (char c : scheme) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') {
      return invalid();
    }
  }
  if (scheme == "https") {
    t.tls = true;
  } else if (scheme != "http") {
    return InvalidArgumentError("unsupported URL scheme in '" + std::string(url) +
                                "' (want http or https)");
  }
  std::string_view rest = url.substr(colon + 1);
  if (rest.substr(0, 2) != "//") {
    return InvalidArgumentError("URL without host: '" + std::string(url) + "'");
  }
  rest.remove_prefix(2);
  const size_t auth_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, auth_end);
  rest = auth_end == std::string_view::npos ? std::string_view() : rest.substr(auth_end);
  t.origin = url.substr(0, url.size() - rest.size());
  if (const size_t at = authority.rfind('@'); at != std::string_view::npos) {
    if (!ValidUriPart(authority.substr(0, at), "")) return invalid();
    authority.remove_prefix(at + 1);
  }
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return invalid();
    t.host = authority.substr(1, close - 1);
    t.ipv6 = true;
    for (char c : t.host) {
      if (!IsHex(c) && c != ':' && c != '.') return invalid();
    }
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return invalid();
      port = after.substr(1);
    }
  } else {
    const size_t pc = authority.rfind(':');
    t.host = authority.substr(0, pc);
    if (pc != std::string_view::npos) port = authority.substr(pc + 1);
    if (!ValidUriPart(t.host, "") || t.host.find_first_of(":@") != std::string_view::npos) {
      return invalid();
    }
  }
  if (t.host.empty()) return InvalidArgumentError("URL without host: '" + std::string(url) + "'");
  t.port = t.tls ? 443 : 80;
  if (!port.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value > 65535) return invalid();
    t.port = static_cast<uint16_t>(value);
  }
  if (const size_t hash = rest.find('#'); hash != std::string_view::npos) {
    if (!ValidUriPart(rest.substr(hash + 1), "/?")) return invalid();
    rest = rest.substr(0, hash);
  }
  const size_t q = rest.find('?');
  t.path = rest.substr(0, q);
  if (q != std::string_view::npos) {
    t.has_query = true;
    t.query = rest.substr(q + 1);
  }
  if (!ValidUriPart(t.path, "/") || !ValidUriPart(t.query, "/?")) return invalid();
  return t;
}

Status TransportError(const std::string& where, std::string_view what,
                      const boost::system::error_code& ec) {
  std::string detail = ec.message();
  if (ec.category() == asio::error::get_ssl_category()) {
    // OpenSSL's reason ("certificate verify failed") is what an operator needs to act on.
    const char* reason = ERR_reason_error_string(static_cast<unsigned long>(ec.value()));
    if (reason != nullptr) detail = reason;
  }
  return UnavailableError(std::string(what) + " " + where + ": " + detail);
}

Status TransportError(const Target& t, std::string_view what, const boost::system::error_code& ec) {
  return TransportError(t.key(), what, ec);
}

Status TimedOut(const Target& t, std::string_view what) {
  return DeadlineExceededError("timed out " + std::string(what) + " " + t.key());
}

// The body ended: a clean end of stream, or a TLS peer that closed without close_notify after a
// body delimited by the connection's end (which HTTP/1.1 allows).
bool EndOfBody(const boost::system::error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
         ec == ssl::error::stream_truncated;
}

struct Conn;

// Enforces the deadlines of a client's connections, like the server's sweep: an operation stores
// its deadline in its connection (no timer per operation), and one timer looks every kSweepEvery
// for connections past theirs and shuts their socket down, which ends the pending operation.
// The timer runs only while some connection has a deadline (an idle client leaves its io_context
// free to return from run()). Shared by the pool and every connection, so it lives as long as a
// connection that may need it.
class Sweeper : public std::enable_shared_from_this<Sweeper> {
 public:
  explicit Sweeper(const asio::any_io_executor& executor) : timer_(executor) {}

  void Add(Conn* c) {
    std::lock_guard lock(mu_);
    conns_.push_back(c);
  }
  void Remove(Conn* c) {
    std::lock_guard lock(mu_);
    auto it = std::find(conns_.begin(), conns_.end(), c);
    if (it == conns_.end()) return;
    *it = conns_.back();
    conns_.pop_back();
  }
  // A deadline was just stored (sequentially consistent, like the loads here and in Sweep(), so
  // that either this sees the sweep stopping or the sweep sees the new deadline).
  void Wake() {
    if (sweeping_.load()) return;
    std::lock_guard lock(mu_);
    if (!sweeping_.exchange(true)) Schedule();
  }

 private:
  void Schedule() {  // with mu_ held
    timer_.expires_after(kSweepEvery);
    timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
      if (ec) return;
      if (auto self = weak.lock()) self->Sweep();
    });
  }
  void Sweep();

  std::mutex mu_;
  std::vector<Conn*> conns_;  // with an open socket; guarded by mu_
  std::atomic<bool> sweeping_{false};
  asio::steady_timer timer_;  // guarded by mu_
};

// One connection, plain or TLS. Every I/O helper below takes the stream through Io(), so the
// HTTP logic is written once for both.
struct Conn {
  Conn(const asio::any_io_executor& executor, std::shared_ptr<Sweeper> sweeper)
      : sweeper(std::move(sweeper)), sock(executor) {}
  ~Conn() { Close(); }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  std::shared_ptr<Sweeper> sweeper;
  tcp::socket sock;  // moved into `tls` for https
  std::unique_ptr<beast::ssl_stream<tcp::socket>> tls;
  // The current operation's deadline (steady clock ticks): kNoDeadline between operations,
  // kFired once the sweep has shut the socket down.
  std::atomic<Ticks> deadline{kNoDeadline};
  int fd = -1;             // while registered with the sweeper
  bool timed_out = false;  // the sweep fired: the connection is dead (owner's copy)

  tcp::socket& lowest() { return tls ? beast::get_lowest_layer(*tls) : sock; }

  boost::system::error_code Open(const tcp::endpoint& ep) {
    boost::system::error_code ec;
    sock.open(ep.protocol(), ec);
    if (ec) return ec;
    fd = sock.native_handle();
    sweeper->Add(this);
    return ec;
  }
  void ArmAt(Ticks when) {
    deadline.store(when);
    sweeper->Wake();
  }
  void Arm(std::chrono::milliseconds timeout) { ArmAt(DeadlineIn(timeout)); }
  // Ends the current operation's deadline; true when the sweep fired (the operation failed, or
  // will, because of the deadline).
  bool Disarm() {
    if (deadline.exchange(kNoDeadline) == kFired) timed_out = true;
    return timed_out;
  }
  void Close() {
    if (fd >= 0) {
      sweeper->Remove(this);  // before the descriptor can be reused
      fd = -1;
    }
    boost::system::error_code ignored;
    lowest().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().close(ignored);
  }
};

void Sweeper::Sweep() {
  std::lock_guard lock(mu_);
  const Ticks now = Now();
  bool armed = false;
  for (Conn* c : conns_) {
    Ticks d = c->deadline.load();
    if (d == kNoDeadline || d == kFired) continue;
    armed = true;
    // The owner may disarm at the same moment: only a deadline still in place fires.
    if (d <= now && c->deadline.compare_exchange_strong(d, kFired)) {
      ::shutdown(c->fd, SHUT_RDWR);  // the pending read or write fails; the owner closes
    }
  }
  if (!armed) {
    sweeping_.store(false);
    // A deadline stored before Wake() could see the flag cleared is ours to enforce.
    for (Conn* c : conns_) {
      const Ticks d = c->deadline.load();
      if (d != kNoDeadline && d != kFired) armed = true;
    }
    if (!armed || sweeping_.exchange(true)) return;
  }
  Schedule();
}

template <typename F>
auto Io(Conn& c, F f) -> decltype(f(c.sock)) {
  if (c.tls) return f(*c.tls);
  return f(c.sock);
}

// Sends `head` then `body`: on a plain connection (non-blocking) with WriteAll, so that a request
// the socket takes at once costs no trip through the scheduler.
asio::awaitable<boost::system::error_code> Send(Conn* conn, std::string_view head,
                                                std::string_view body) {
  Conn& c = *conn;
  const std::array<asio::const_buffer, 2> bufs{asio::buffer(head), asio::buffer(body)};
  if (c.tls) {
    auto [ec, n] = co_await asio::async_write(*c.tls, bufs, kUseTuple);
    co_return ec;
  }
  co_return co_await WriteAll(c.sock, bufs);
}

bool ValidHeaderText(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

// The request line and header fields, ending with the empty line. Same fields as Beast's
// request::set() for each header, prepare_payload() and keep_alive(true) would give, written
// directly: a later header replaces an earlier one of the same name; Host and User-Agent are
// ours unless the request sets them; a request with a body (or a POST, PUT or PATCH) gets
// Content-Length.
Result<std::string> RequestHead(const ClientRequest& req, const Target& t) {
  const bool has_body = !req.body.empty() || req.method == bhttp::verb::post ||
                        req.method == bhttp::verb::put || req.method == bhttp::verb::patch;
  bool own_host = true, own_agent = true;
  size_t size = 96 + t.origin.size() + t.path.size() + t.query.size();
  for (const auto& [k, v] : req.headers) {
    if (k.empty() || !ValidHeaderText(k) || k.find(':') != std::string::npos ||
        !ValidHeaderText(v)) {
      return InvalidArgumentError("invalid request header '" + k + "'");
    }
    if (IEquals(k, "host")) own_host = false;
    if (IEquals(k, "user-agent")) own_agent = false;
    size += k.size() + v.size() + 4;
  }
  std::string h;
  h.reserve(size);
  h.append(bhttp::to_string(req.method));
  h.push_back(' ');
  if (t.path.empty()) {
    h.push_back('/');
  } else {
    h.append(t.path);
  }
  if (t.has_query) {
    h.push_back('?');
    h.append(t.query);
  }
  h.append(" HTTP/1.1\r\n");
  char digits[24];
  if (own_host) {
    h.append("Host: ");
    if (t.ipv6) h.push_back('[');
    h.append(t.host);
    if (t.ipv6) h.push_back(']');
    h.push_back(':');
    h.append(digits, std::to_chars(digits, digits + sizeof(digits), t.port).ptr);
    h.append("\r\n");
  }
  if (own_agent) h.append("User-Agent: segma\r\n");
  const auto& headers = req.headers;
  for (size_t i = 0; i < headers.size(); ++i) {
    const auto& [k, v] = headers[i];
    bool replaced = false;
    for (size_t j = i + 1; j < headers.size() && !replaced; ++j) {
      replaced = IEquals(headers[j].first, k);
    }
    if (replaced) continue;
    if (has_body && (IEquals(k, "content-length") || IEquals(k, "transfer-encoding"))) continue;
    if (IEquals(k, "connection") && IEquals(v, "close")) continue;  // connections are kept
    h.append(k);
    h.append(": ");
    h.append(v);
    h.append("\r\n");
  }
  if (has_body) {
    h.append("Content-Length: ");
    h.append(digits, std::to_chars(digits, digits + sizeof(digits), req.body.size()).ptr);
    h.append("\r\n");
  }
  h.append("\r\n");
  return h;
}

template <typename Message>
void CopyHeaders(const Message& m, ClientResponse& out) {
  out.status = m.result_int();
  for (const auto& f : m) {
    std::string name(f.name_string());
    for (char& c : name) c = AsciiLower(c);
    // A repeated field (two Set-Cookie lines, say) is kept whole: its values joined by ", ".
    auto [it, inserted] = out.headers.try_emplace(std::move(name), std::string(f.value()));
    if (!inserted) it->second.append(", ").append(f.value());
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
  // By origin (scheme://authority as the URLs write it).
  std::map<std::string, std::vector<std::unique_ptr<Conn>>, std::less<>> idle;
  size_t max_idle = 32;
  TlsOptions tls_options;
  std::shared_ptr<ssl::context> tls_context;  // made on the first https:// request
  std::shared_ptr<Sweeper> sweeper;

  std::unique_ptr<Conn> Take(std::string_view origin) {
    std::lock_guard lock(mu);
    auto it = idle.find(origin);
    if (it == idle.end() || it->second.empty()) return nullptr;
    auto s = std::move(it->second.back());
    it->second.pop_back();
    return s;
  }
  void Give(std::string_view origin, std::unique_ptr<Conn> s) {
    std::unique_lock lock(mu);
    auto it = idle.find(origin);
    if (it == idle.end()) it = idle.emplace(std::string(origin), 0).first;
    if (it->second.size() < max_idle) {
      it->second.push_back(std::move(s));
      return;
    }
    lock.unlock();  // the connection unregisters from the sweeper as it closes
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
  pool_->sweeper = std::make_shared<Sweeper>(executor_);
}

HttpClient::~HttpClient() = default;

namespace {

// A new connection to `t` (within `timeout`); for https, the TLS handshake has been done and the
// server's certificate checked against `tls` (chain and host name). `host` owns the host name
// (the resolver and OpenSSL want it NUL-terminated).
asio::awaitable<Result<std::unique_ptr<Conn>>> Connect(asio::any_io_executor ex, Target t,
                                                       std::string host,
                                                       std::chrono::milliseconds timeout,
                                                       std::shared_ptr<ssl::context> tls,
                                                       std::shared_ptr<Sweeper> sweeper) {
  const Ticks deadline = DeadlineIn(timeout);
  std::vector<tcp::endpoint> endpoints;
  boost::system::error_code not_ip;
  const asio::ip::address ip = asio::ip::make_address(host, not_ip);
  if (!not_ip) {
    endpoints.emplace_back(ip, t.port);  // an address needs no resolver (nor its thread)
  } else {
    tcp::resolver resolver(ex);
    auto [rec, results] = co_await resolver.async_resolve(host, std::to_string(t.port), kUseTuple);
    if (rec) co_return TransportError(t, "resolving", rec);
    for (const auto& r : results) endpoints.push_back(r.endpoint());
  }
  auto conn = std::make_unique<Conn>(ex, std::move(sweeper));
  boost::system::error_code cec = asio::error::host_not_found;
  for (const auto& ep : endpoints) {
    cec = conn->Open(ep);
    if (cec) continue;
    conn->ArmAt(deadline);
    std::tie(cec) = co_await conn->sock.async_connect(ep, kUseTuple);
    if (conn->Disarm()) co_return TimedOut(t, "connecting to");
    if (!cec) break;
    conn->Close();
  }
  if (cec) co_return TransportError(t, "connecting to", cec);
  boost::system::error_code ignored;
  conn->sock.set_option(tcp::no_delay(true), ignored);
  if (!t.tls) {
    conn->sock.non_blocking(true, ignored);  // for Send()'s immediate write
    co_return std::move(conn);
  }
  conn->tls = std::make_unique<beast::ssl_stream<tcp::socket>>(std::move(conn->sock), *tls);
  // SNI: virtual-hosted mirrors and CDNs pick their certificate by it (never sent for an IP).
  if (not_ip && !SSL_set_tlsext_host_name(conn->tls->native_handle(), host.c_str())) {
    co_return UnavailableError("TLS: cannot set the server name " + host);
  }
  conn->tls->set_verify_callback(ssl::host_name_verification(host));
  conn->Arm(timeout);
  auto [hec] = co_await conn->tls->async_handshake(ssl::stream_base::client, kUseTuple);
  if (conn->Disarm()) co_return TimedOut(t, "TLS handshake with");
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
  CO_ASSIGN_OR_RETURN(std::string head, RequestHead(req, t));
  // A pooled connection may have been closed by the server while idle: retry once on a fresh one.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::unique_ptr<Conn> conn = attempt == 0 ? pool_->Take(t.origin) : nullptr;
    const bool reused = conn != nullptr;
    if (!conn) {
      auto connected =
          co_await Connect(executor_, t, std::string(t.host), req.timeout, tls, pool_->sweeper);
      if (!connected.ok()) co_return connected.status();
      conn = std::move(connected).value();
    }
    conn->Arm(req.timeout);
    const boost::system::error_code wec = co_await Send(conn.get(), head, req.body);
    if (wec && reused && !conn->Disarm()) continue;
    // A server may answer early and close (413 for a body over its limit): read what it said
    // before reporting the failed write.
    beast::flat_buffer buffer;
    buffer.reserve(kReadBufferBytes);
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(256 * 1024 * 1024);
    auto [rec, rn] = co_await Io(
        *conn, [&](auto& s) { return bhttp::async_read(s, buffer, parser, kUseTuple); });
    if (conn->Disarm()) co_return TimedOut(t, rec && wec ? "sending to" : "reading from");
    if (rec) {
      if (wec) co_return TransportError(t, "sending to", wec);
      if (reused && rn == 0) continue;
      co_return TransportError(t, "reading from", rec);
    }
    ClientResponse out;
    auto& res = parser.get();
    CopyHeaders(res, out);
    out.body = std::move(res.body());
    if (!wec && res.keep_alive() && buffer.size() == 0) pool_->Give(t.origin, std::move(conn));
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
  CO_ASSIGN_OR_RETURN(std::string head, RequestHead(req, t));
  auto connected =
      co_await Connect(executor_, t, std::string(t.host), req.timeout, tls, pool_->sweeper);
  if (!connected.ok()) co_return connected.status();
  std::unique_ptr<Conn> conn = std::move(connected).value();
  conn->Arm(req.timeout);
  const boost::system::error_code wec = co_await Send(conn.get(), head, req.body);
  if (conn->Disarm()) co_return TimedOut(t, "sending to");
  if (wec) co_return TransportError(t, "sending to", wec);

  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::buffer_body> parser;
  parser.body_limit(boost::none);
  conn->Arm(req.timeout);
  auto [hec, hn] = co_await Io(
      *conn, [&](auto& s) { return bhttp::async_read_header(s, buffer, parser, kUseTuple); });
  if (conn->Disarm()) co_return TimedOut(t, "reading from");
  if (hec) co_return TransportError(t, "reading from", hec);
  ClientResponse out;
  CopyHeaders(parser.get(), out);
  const bool ok_status = out.status >= 200 && out.status < 300;

  char chunk[16 * 1024];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof(chunk);
    conn->Arm(req.timeout);
    auto [ec, n] = co_await Io(
        *conn, [&](auto& s) { return bhttp::async_read_some(s, buffer, parser, kUseTuple); });
    if (conn->Disarm()) co_return TimedOut(t, "streaming from");
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
  Impl() {}  // user-provided: make_unique<Impl>() then leaves `chunk` alone instead of zeroing it
  std::string origin;  // the pool's key
  std::string where;   // host:port, for messages
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
  // A transport failure: the connection is of no further use.
  Status Fail(Status s) {
    Close();
    ended = true;
    return s;
  }
  // The body ended cleanly: a keep-alive connection with nothing left over can serve another
  // request.
  void Finish() {
    ended = true;
    if (stream == nullptr) return;
    auto p = pool.lock();
    if (p && parser.is_done() && parser.keep_alive() && buffer.size() == 0 && !stream->timed_out) {
      p->Give(origin, std::move(stream));
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
  if (i.cancelled) co_return CancelledError("stream from " + i.where + " cancelled");
  if (i.ended || i.stream == nullptr) co_return std::string_view();
  // Parses what is buffered before reading more, here rather than in Beast's read_some (which
  // completes a read from its buffer through the scheduler); the parser is eager, so a piece is
  // everything of the body that arrived together (up to the size of `chunk`).
  while (!i.parser.is_done()) {
    auto& body = i.parser.get().body();
    body.data = i.chunk;
    body.size = sizeof(i.chunk);
    if (i.buffer.size() > 0) {
      boost::system::error_code ec;
      const size_t used = i.parser.put(i.buffer.data(), ec);
      i.buffer.consume(used);
      const size_t got = sizeof(i.chunk) - body.size;
      if (got > 0) co_return std::string_view(i.chunk, got);
      if (ec && ec != bhttp::error::need_more && ec != bhttp::error::need_buffer) {
        co_return i.Fail(UnavailableError("streaming from " + i.where + ": " + ec.message()));
      }
      if (ec != bhttp::error::need_more && used > 0) continue;  // a chunk's framing: parse on
    }
    if (i.stream->timed_out) {
      co_return i.Fail(DeadlineExceededError("timed out streaming from " + i.where));
    }
    const size_t room = i.buffer.capacity() - i.buffer.size();
    i.stream->Arm(i.timeout);
    auto [ec, n] = co_await Io(*i.stream, [&](auto& s) {
      return s.async_read_some(i.buffer.prepare(std::max(room, sizeof(i.chunk) / 2)), kUseTuple);
    });
    if (i.cancelled) co_return CancelledError("stream from " + i.where + " cancelled");
    const bool timed_out = i.stream->Disarm();
    i.buffer.commit(n);
    if (timed_out) {
      co_return i.Fail(DeadlineExceededError("timed out streaming from " + i.where));
    }
    if (ec && EndOfBody(ec)) {
      // The connection's end ends a body without a length; any other body is cut short.
      i.parser.put_eof(ec);
      if (!ec) break;
    }
    if (ec) co_return i.Fail(TransportError(i.where, "streaming from", ec));
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
  CO_ASSIGN_OR_RETURN(std::string head, RequestHead(req, t));
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto impl = std::make_unique<ClientStream::Impl>();
    impl->timeout = req.timeout;
    impl->buffer.reserve(sizeof(impl->chunk));  // a TLS record's worth
    impl->stream = attempt == 0 ? pool_->Take(t.origin) : nullptr;
    const bool reused = impl->stream != nullptr;
    if (!reused) {
      auto connected =
          co_await Connect(executor_, t, std::string(t.host), req.timeout, tls, pool_->sweeper);
      if (!connected.ok()) co_return connected.status();
      impl->stream = std::move(connected).value();
    }
    Conn& conn = *impl->stream;
    conn.Arm(req.timeout);
    const boost::system::error_code wec = co_await Send(&conn, head, req.body);
    if (wec) {
      if (conn.Disarm()) co_return TimedOut(t, "sending to");
      if (reused) continue;  // the idle connection had been closed by the server
      co_return TransportError(t, "sending to", wec);
    }
    impl->parser.body_limit(boost::none);
    auto [hec, hn] = co_await Io(conn, [&](auto& s) {
      return bhttp::async_read_header(s, impl->buffer, impl->parser, kUseTuple);
    });
    if (conn.Disarm()) co_return TimedOut(t, "reading from");
    if (hec) {
      if (reused && impl->buffer.size() == 0 && hn == 0) continue;
      co_return TransportError(t, "reading from", hec);
    }
    impl->origin = t.origin;
    impl->where = t.key();
    impl->pool = pool_;
    impl->parser.eager(true);  // Next() hands on all of the body that is buffered
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
    ioc.stop();  // the deadline sweep's timer may still be waiting
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
