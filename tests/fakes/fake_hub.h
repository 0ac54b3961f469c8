#pragma once

// A model hub for tests: HTTPS on 127.0.0.1 with a self-signed certificate made for it, speaking
// the URL layouts of Hugging Face (listing with blobs, resolve with a redirect to a CDN path and
// X-Linked-Etag / X-Linked-Size for LFS files) and ModelScope (file listing with Sha256 and Size,
// file download by FilePath), with Range requests and failure injection.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace segma::testing {

class FakeHub {
 public:
  struct Request {
    std::string method;
    std::string target;
    std::string range;          // the Range header, "" when absent
    std::string authorization;  // the Authorization header
  };

  // Makes a certificate for 127.0.0.1 and localhost under `dir` (openssl CLI) and starts serving.
  // Aborts the test process (CHECK) if that fails.
  explicit FakeHub(const std::string& dir);
  ~FakeHub();
  FakeHub(const FakeHub&) = delete;
  FakeHub& operator=(const FakeHub&) = delete;

  std::string url() const;                                 // https://127.0.0.1:PORT
  const std::string& ca_file() const { return ca_file_; }  // the certificate to trust

  // Adds a file to a repository. `hub` is "huggingface" or "modelscope". On Hugging Face an `lfs`
  // file is listed with its sha256 and served through a redirect; others are listed with a size
  // only (as Hugging Face does for small git files).
  void AddFile(const std::string& hub, const std::string& repo, const std::string& revision,
               const std::string& path, std::string content, bool lfs = true);
  // The next download of `path` (any repository) sends `bytes` of its body, then drops the
  // connection.
  void DropOnceAfter(const std::string& path, int64_t bytes);
  // `path` is listed and announced with this sha256 instead of its real one.
  void AdvertiseSha256(const std::string& path, const std::string& sha256);
  // A pause after each 16 KiB of a file body (to make downloads overlap).
  void SetChunkDelayMs(int ms) { chunk_delay_ms_ = ms; }

  std::vector<Request> requests() const;
  // The most file bodies that were being sent at the same time.
  int max_concurrent_bodies() const { return max_bodies_; }

 private:
  struct File {
    std::string hub, repo, revision, path, content, sha256, advertised_sha256;
    bool lfs = true;
    int64_t drop_after = -1;
  };
  struct Response;
  void Accept();
  void Serve(int fd);
  Response Handle(const std::string& method, const std::string& target);
  File* Find(const std::string& hub, const std::string& repo, const std::string& rev,
             const std::string& path);

  std::string dir_, ca_file_, key_file_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::vector<File> files_;
  std::vector<Request> requests_;
  std::vector<std::thread> connections_;
  std::vector<int> connection_fds_;
  std::atomic<int> chunk_delay_ms_{0};
  std::atomic<int> bodies_{0};
  std::atomic<int> max_bodies_{0};
  struct Tls;
  std::unique_ptr<Tls> tls_;
};

}  // namespace segma::testing
