#include "fakes/fake_hub.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

namespace segma::testing {

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FakeHub: %s failed\n", what);
    std::abort();
  }
}

std::string Sha256(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

std::string Decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::map<std::string, std::string> Query(const std::string& q) {
  std::map<std::string, std::string> out;
  std::stringstream ss(q);
  std::string kv;
  while (std::getline(ss, kv, '&')) {
    size_t eq = kv.find('=');
    if (eq != std::string::npos) out[kv.substr(0, eq)] = Decode(kv.substr(eq + 1));
  }
  return out;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

}  // namespace

struct FakeHub::Tls {
  SSL_CTX* ctx = nullptr;
  ~Tls() {
    if (ctx) SSL_CTX_free(ctx);
  }
};

struct FakeHub::Response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  File* file = nullptr;  // the body is this file's content (ranges and failures apply)
};

FakeHub::FakeHub(const std::string& dir) : dir_(dir), tls_(std::make_unique<Tls>()) {
  // SSL_write to a client that went away (a download abandoned on purpose) must not kill the test.
  ::signal(SIGPIPE, SIG_IGN);
  ca_file_ = dir_ + "/hub-cert.pem";
  key_file_ = dir_ + "/hub-key.pem";
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
      "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " +
      key_file_ + " -out " + ca_file_ + " > " + dir_ + "/openssl.log 2>&1";
  Check(std::system(cmd.c_str()) == 0, "openssl req (see openssl.log)");
  tls_->ctx = SSL_CTX_new(TLS_server_method());
  Check(tls_->ctx != nullptr, "SSL_CTX_new");
  Check(SSL_CTX_use_certificate_file(tls_->ctx, ca_file_.c_str(), SSL_FILETYPE_PEM) == 1,
        "loading the certificate");
  Check(SSL_CTX_use_PrivateKey_file(tls_->ctx, key_file_.c_str(), SSL_FILETYPE_PEM) == 1,
        "loading the key");

  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  Check(listen_fd_ >= 0, "socket");
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  Check(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0, "bind");
  Check(::listen(listen_fd_, 64) == 0, "listen");
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { Accept(); });
}

FakeHub::~FakeHub() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  acceptor_.join();
  ::close(listen_fd_);
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    for (int fd : connection_fds_) ::shutdown(fd, SHUT_RDWR);
    threads.swap(connections_);
  }
  for (auto& t : threads) t.join();
}

std::string FakeHub::url() const { return "https://127.0.0.1:" + std::to_string(port_); }

void FakeHub::AddFile(const std::string& hub, const std::string& repo, const std::string& revision,
                      const std::string& path, std::string content, bool lfs) {
  std::lock_guard lock(mu_);
  File f;
  f.hub = hub;
  f.repo = repo;
  f.revision = revision;
  f.path = path;
  f.sha256 = Sha256(content);
  f.content = std::move(content);
  f.lfs = lfs;
  files_.push_back(std::move(f));
}

void FakeHub::DropOnceAfter(const std::string& path, int64_t bytes) {
  std::lock_guard lock(mu_);
  for (File& f : files_) {
    if (f.path == path) f.drop_after = bytes;
  }
}

void FakeHub::AdvertiseSha256(const std::string& path, const std::string& sha256) {
  std::lock_guard lock(mu_);
  for (File& f : files_) {
    if (f.path == path) f.advertised_sha256 = sha256;
  }
}

std::vector<FakeHub::Request> FakeHub::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

void FakeHub::Accept() {
  while (!stopping_) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stopping_) return;
      continue;
    }
    std::lock_guard lock(mu_);
    connection_fds_.push_back(fd);
    connections_.emplace_back([this, fd] { Serve(fd); });
  }
}

FakeHub::File* FakeHub::Find(const std::string& hub, const std::string& repo,
                             const std::string& rev, const std::string& path) {
  for (File& f : files_) {
    if (f.hub == hub && f.repo == repo && (rev.empty() || f.revision == rev) &&
        (path.empty() || f.path == path)) {
      return &f;
    }
  }
  return nullptr;
}

// Called with mu_ held.
FakeHub::Response FakeHub::Handle(const std::string& method, const std::string& target) {
  (void)method;
  Response r;
  const size_t qpos = target.find('?');
  const std::string path = Decode(target.substr(0, qpos));
  const auto query = Query(qpos == std::string::npos ? "" : target.substr(qpos + 1));
  auto not_found = [&](const std::string& what) {
    r.status = 404;
    r.headers.emplace_back("Content-Type", "application/json");
    r.body = "{\"error\":" + JsonString(what) + "}";
    return r;
  };
  auto sha_of = [](const File& f) {
    return f.advertised_sha256.empty() ? f.sha256 : f.advertised_sha256;
  };
  // Hugging Face listing: /api/models/{org}/{name}/revision/{rev}
  if (path.starts_with("/api/models/")) {
    const size_t rev_at = path.find("/revision/");
    if (rev_at == std::string::npos) return not_found("Not Found");
    const std::string repo = path.substr(12, rev_at - 12);
    const std::string rev = path.substr(rev_at + 10);
    if (!Find("huggingface", repo, rev, "")) return not_found("Repository not found");
    std::string siblings;
    for (const File& f : files_) {
      if (f.hub != "huggingface" || f.repo != repo || f.revision != rev) continue;
      if (!siblings.empty()) siblings += ",";
      siblings += "{\"rfilename\":" + JsonString(f.path) +
                  ",\"blobId\":\"0000000000000000000000000000000000000000\",\"size\":" +
                  std::to_string(f.lfs ? 134 : f.content.size());
      if (f.lfs) {
        siblings += ",\"lfs\":{\"sha256\":\"" + sha_of(f) +
                    "\",\"size\":" + std::to_string(f.content.size()) + ",\"pointerSize\":134}";
      }
      siblings += "}";
    }
    r.headers.emplace_back("Content-Type", "application/json");
    r.body = "{\"id\":" + JsonString(repo) +
             ",\"sha\":\"1111111111111111111111111111111111111111\",\"siblings\":[" + siblings +
             "]}";
    return r;
  }
  // ModelScope: /api/v1/models/{org}/{name}/repo/files and /api/v1/models/{org}/{name}/repo
  if (path.starts_with("/api/v1/models/")) {
    const bool listing = path.ends_with("/repo/files");
    const bool file = path.ends_with("/repo");
    if (!listing && !file) return not_found("Not Found");
    const std::string repo = path.substr(15, path.size() - 15 - (listing ? 11 : 5));
    const std::string rev = query.count("Revision") ? query.at("Revision") : "master";
    if (!Find("modelscope", repo, rev, "")) {
      r.status = 404;
      r.body =
          "{\"Code\":10010205001,\"Message\":\"model " + repo + " not exists\",\"Success\":false}";
      return r;
    }
    if (listing) {
      std::string list;
      for (const File& f : files_) {
        if (f.hub != "modelscope" || f.repo != repo || f.revision != rev) continue;
        if (!list.empty()) list += ",";
        list += "{\"Name\":" + JsonString(f.path.substr(f.path.rfind('/') + 1)) +
                ",\"Path\":" + JsonString(f.path) +
                ",\"Type\":\"blob\",\"Size\":" + std::to_string(f.content.size()) +
                ",\"Sha256\":\"" + sha_of(f) + "\"}";
      }
      r.headers.emplace_back("Content-Type", "application/json");
      r.body = "{\"Code\":200,\"Data\":{\"Files\":[" + list + "]},\"Success\":true}";
      return r;
    }
    File* f = Find("modelscope", repo, rev, query.count("FilePath") ? query.at("FilePath") : "?");
    if (!f) return not_found("file not found");
    r.file = f;
    return r;
  }
  // The "CDN" that LFS resolves redirect to: /cdn/{sha256}/{org}/{name}/{path}
  if (path.starts_with("/cdn/")) {
    for (File& f : files_) {
      if (path == "/cdn/" + f.sha256 + "/" + f.repo + "/" + f.path) {
        r.file = &f;
        return r;
      }
    }
    return not_found("Not Found");
  }
  // Hugging Face resolve: /{org}/{name}/resolve/{rev}/{path}
  const size_t resolve_at = path.find("/resolve/");
  if (resolve_at != std::string::npos) {
    const std::string repo = path.substr(1, resolve_at - 1);
    const std::string rest = path.substr(resolve_at + 9);
    const size_t slash = rest.find('/');
    if (slash == std::string::npos) return not_found("Entry not found");
    File* f = Find("huggingface", repo, rest.substr(0, slash), rest.substr(slash + 1));
    if (!f) {
      if (!Find("huggingface", repo, "", "")) return not_found("Repository not found");
      return not_found("Entry not found");
    }
    r.headers.emplace_back("X-Repo-Commit", "1111111111111111111111111111111111111111");
    if (f->lfs) {
      r.status = 302;
      r.headers.emplace_back("X-Linked-Etag", "\"" + sha_of(*f) + "\"");
      r.headers.emplace_back("X-Linked-Size", std::to_string(f->content.size()));
      r.headers.emplace_back("Location", url() + "/cdn/" + f->sha256 + "/" + repo + "/" + f->path);
      return r;
    }
    r.headers.emplace_back("ETag", "\"0000000000000000000000000000000000000000\"");
    r.file = f;
    return r;
  }
  return not_found("Not Found");
}

void FakeHub::Serve(int fd) {
  SSL* ssl = SSL_new(tls_->ctx);
  SSL_set_fd(ssl, fd);
  auto finish = [&] {
    SSL_free(ssl);
    ::close(fd);
  };
  if (SSL_accept(ssl) != 1) {
    finish();
    return;
  }
  auto send = [&](const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      int n = SSL_write(ssl, s.data() + off, static_cast<int>(s.size() - off));
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  };
  std::string in;
  char buf[8192];
  while (!stopping_) {
    size_t end;
    while ((end = in.find("\r\n\r\n")) == std::string::npos) {
      int n = SSL_read(ssl, buf, sizeof(buf));
      if (n <= 0) {
        finish();
        return;
      }
      in.append(buf, static_cast<size_t>(n));
    }
    std::string head = in.substr(0, end);
    in.erase(0, end + 4);
    std::stringstream ss(head);
    std::string line, method, target;
    std::getline(ss, line);
    std::stringstream(line) >> method >> target;
    Request req{method, target, "", ""};
    while (std::getline(ss, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      if (name == "range") req.range = value;
      if (name == "authorization") req.authorization = value;
    }
    Response r;
    std::string content;
    int64_t drop_after = -1;
    {
      std::lock_guard lock(mu_);
      requests_.push_back(req);
      r = Handle(method, target);
      if (r.file) {
        content = r.file->content;
        drop_after = r.file->drop_after;
        r.file->drop_after = -1;
      }
    }
    if (r.file) {
      int64_t from = 0;
      if (req.range.starts_with("bytes=")) from = std::atoll(req.range.c_str() + 6);
      const int64_t size = static_cast<int64_t>(content.size());
      if (!req.range.empty()) {
        if (from >= size) {
          r.status = 416;
          r.headers.emplace_back("Content-Range", "bytes */" + std::to_string(size));
          content.clear();
        } else {
          r.status = 206;
          r.headers.emplace_back("Content-Range", "bytes " + std::to_string(from) + "-" +
                                                      std::to_string(size - 1) + "/" +
                                                      std::to_string(size));
          content = content.substr(static_cast<size_t>(from));
        }
      }
      r.headers.emplace_back("Accept-Ranges", "bytes");
      r.headers.emplace_back("Content-Type", "application/octet-stream");
    } else {
      content = r.body;
    }
    std::string out = "HTTP/1.1 " + std::to_string(r.status) + " X\r\n";
    for (const auto& [k, v] : r.headers) out += k + ": " + v + "\r\n";
    out += "Content-Length: " + std::to_string(content.size()) + "\r\n\r\n";
    if (!send(out)) break;
    if (!r.file) {
      if (!send(content)) break;
      continue;
    }
    const int now = ++bodies_;
    int seen = max_bodies_.load();
    while (now > seen && !max_bodies_.compare_exchange_weak(seen, now)) {
    }
    bool dropped = false;
    for (size_t off = 0; off < content.size(); off += 16 * 1024) {
      size_t n = std::min<size_t>(16 * 1024, content.size() - off);
      if (drop_after >= 0 && static_cast<int64_t>(off + n) >= drop_after) {
        n = static_cast<size_t>(std::max<int64_t>(0, drop_after - static_cast<int64_t>(off)));
        dropped = true;
      }
      if (n > 0 && !send(content.substr(off, n))) {
        dropped = true;
        break;
      }
      if (dropped) break;
      if (chunk_delay_ms_ > 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(chunk_delay_ms_.load()));
      }
    }
    --bodies_;
    if (dropped) break;
  }
  ::shutdown(fd, SHUT_RDWR);
  finish();
}

}  // namespace segma::testing
