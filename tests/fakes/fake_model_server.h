#pragma once

// A small OpenAI-compatible engine for gateway tests: our own HttpServer on loopback answering
// /v1/chat/completions and /v1/completions (streaming or not, with usage), /v1/embeddings,
// /v1/rerank and /v1/audio/transcriptions, with configurable delays and failures. Its answers are
// deterministic, so a stream through the gateway can be compared byte for byte with a direct one.
// Runs its own io_context thread. Thread-safe.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace segma::testing {

struct FakeModelOptions {
  std::string name = "fake";  // sent back in header x-served-by
  int chunks = 4;             // content chunks of a streamed completion
  std::chrono::milliseconds chunk_delay{0};
  std::chrono::milliseconds first_chunk_delay{0};
  int64_t prompt_tokens = 11;
  int64_t completion_tokens = 7;
  int64_t cached_tokens = 3;
  // >= 0: a stream dies after this many content chunks (the connection is closed without the
  // end of the chunked body, as when an engine crashes mid-stream).
  int die_after_chunks = -1;
};

class FakeModelServer {
 public:
  explicit FakeModelServer(FakeModelOptions options = {});
  ~FakeModelServer();
  FakeModelServer(const FakeModelServer&) = delete;
  FakeModelServer& operator=(const FakeModelServer&) = delete;

  uint16_t port() const { return port_; }
  std::string base_url() const;  // http://127.0.0.1:PORT

  // Non-zero: every request is answered with this status (and an OpenAI error body).
  void set_fail_status(int status) { fail_status_ = status; }

  int requests() const { return requests_.load(); }
  int cancelled_streams() const { return cancelled_.load(); }
  int completed_streams() const { return completed_.load(); }
  std::string last_body() const;
  std::string last_content_type() const;
  // The Authorization header of the last request ("" when it had none).
  std::string last_authorization() const;

  // The exact SSE body this server streams for a request (for direct comparisons).
  std::string ExpectedStream(bool include_usage) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  FakeModelOptions options_;
  uint16_t port_ = 0;
  std::atomic<int> fail_status_{0};
  std::atomic<int> requests_{0};
  std::atomic<int> cancelled_{0};
  std::atomic<int> completed_{0};
  mutable std::mutex mu_;
  std::string last_body_;           // guarded by mu_
  std::string last_content_type_;   // guarded by mu_
  std::string last_authorization_;  // guarded by mu_
};

}  // namespace segma::testing
