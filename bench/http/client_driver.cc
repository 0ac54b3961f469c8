// Drives HttpClient in a loop for counting system calls (strace -c) and instructions (callgrind)
// per request: run it twice with different counts and divide the difference.
//
//   client_driver URL fetch|stream COUNT
//
// Against `segma engine-sim --host 127.0.0.1 --port P --model sim --speed 0 --threads 1`, with
// URL http://127.0.0.1:P/v1/chat/completions:
//   system calls:  strace -f -c -o out.txt client_driver URL fetch N   for N = 1 and 2001:
//                  (total(2001) - total(1)) / 2000
//   instructions:  valgrind --tool=callgrind client_driver URL fetch N   for N = 100 and 600:
//                  ("Collected" of 600 - that of 100) / 500
//
// Sequential requests on one thread (concurrency 1), on one pooled connection. The request is a
// small chat completion; `stream` asks for SSE and reads it with OpenStream + Next().
#include <cstdio>
#include <cstdlib>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "http/client.h"

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using segma::http::ClientRequest;
using segma::http::HttpClient;

namespace {

asio::awaitable<void> Run(HttpClient& client, std::string url, bool stream, int count,
                          int* failures, size_t* bytes) {
  for (int i = 0; i < count; ++i) {
    ClientRequest req;
    req.method = bhttp::verb::post;
    req.url = url;
    req.body = stream ? R"({"model":"sim","max_tokens":8,"stream":true,)"
                        R"("messages":[{"role":"user","content":"hello"}]})"
                      : R"({"model":"sim","max_tokens":8,)"
                        R"("messages":[{"role":"user","content":"hello"}]})";
    req.headers.emplace_back("Content-Type", "application/json");
    req.headers.emplace_back("x-request-id", "bench");
    if (!stream) {
      auto r = co_await client.Fetch(std::move(req));
      if (!r.ok() || r->status != 200) {
        ++*failures;
        continue;
      }
      *bytes += r->body.size();
      continue;
    }
    req.headers.emplace_back("Accept", "text/event-stream");
    auto s = co_await client.OpenStream(std::move(req));
    if (!s.ok() || (*s)->response().status != 200) {
      ++*failures;
      continue;
    }
    for (;;) {
      auto piece = co_await (*s)->Next();
      if (!piece.ok()) {
        ++*failures;
        break;
      }
      if (piece->empty()) break;
      *bytes += piece->size();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s URL fetch|stream COUNT\n", argv[0]);
    return 2;
  }
  const std::string url = argv[1];
  const bool stream = std::string(argv[2]) == "stream";
  const int count = std::atoi(argv[3]);
  asio::io_context ioc(1);
  HttpClient client(ioc.get_executor());
  int failures = 0;
  size_t bytes = 0;
  asio::co_spawn(ioc, Run(client, url, stream, count, &failures, &bytes),
                 [&](std::exception_ptr e) {
                   if (e) ++failures;
                   ioc.stop();  // the client's idle connection needs nothing more
                 });
  ioc.run();
  std::printf("%d requests, %d failed, %zu body bytes\n", count, failures, bytes);
  return failures == 0 ? 0 : 1;
}
