// Load generator for `segma engine-sim` (loopback measurements, not a test): N concurrent
// streaming chat completions, each stream starting its next request when one ends, for a bounded
// time. Reports completed streams, token throughput, TTFT and inter-token gaps as the client saw
// them.
//
//   engine_sim_load --url http://127.0.0.1:8000 --streams 1000 --max-tokens 64 --seconds 20
//   engine_sim_load --in-process 1 --streams 1000 ...   (an EngineSim with the 8B/H100 defaults on
//                                                        its own thread; no segma binary needed)

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/json.h"
#include "http/client.h"
#include "sim/engine_sim.h"

namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

struct Stats {
  int64_t started = 0, completed = 0, errors = 0, tokens = 0;
  std::string first_error;
  std::vector<double> ttft_ms, gap_ms;
};

double Pct(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

asio::awaitable<void> Stream(segma::http::HttpClient& client, std::string url, int max_tokens,
                             Clock::time_point end, int index, Stats& stats) {
  while (Clock::now() < end) {
    segma::http::ClientRequest req;
    req.method = boost::beast::http::verb::post;
    req.url = url + "/v1/chat/completions";
    req.timeout = std::chrono::milliseconds(60'000);
    req.JsonBody(segma::json::object{
        {"messages",
         segma::json::array{segma::json::object{
             {"role", "user"}, {"content", "stream " + std::to_string(index) + " says hello"}}}},
        {"max_tokens", max_tokens},
        {"stream", true}});
    ++stats.started;
    const auto t0 = Clock::now();
    auto last = t0;
    int64_t events = 0;
    bool done = false;
    // OpenStream returns a fully read keep-alive connection to the pool, so the next request
    // skips connect (and Asio's single-threaded resolver, which would dominate the client's TTFT).
    auto opened = co_await client.OpenStream(std::move(req));
    bool failed = !opened.ok() || (*opened)->response().status != 200;
    if (failed && stats.first_error.empty()) {
      stats.first_error = opened.ok() ? (*opened)->response().body : opened.status().ToString();
    }
    while (!failed) {
      auto piece = co_await (*opened)->Next();
      if (!piece.ok()) {
        if (stats.first_error.empty()) stats.first_error = piece.status().ToString();
        failed = true;
        break;
      }
      if (piece->empty()) break;
      const auto now = Clock::now();
      // Count "data: " events; the first one carries the first token.
      for (size_t pos = piece->find("data: "); pos != std::string_view::npos;
           pos = piece->find("data: ", pos + 6)) {
        if (piece->substr(pos + 6, 6) == "[DONE]") {
          done = true;
          continue;
        }
        ++events;
      }
      const double ms = std::chrono::duration<double, std::milli>(now - last).count();
      if (last == t0) {
        stats.ttft_ms.push_back(ms);
      } else {
        stats.gap_ms.push_back(ms);
      }
      last = now;
    }
    if (failed || !done) {
      ++stats.errors;
      continue;
    }
    ++stats.completed;
    stats.tokens += std::max<int64_t>(0, events - 2);  // minus role and final chunks
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string url = "http://127.0.0.1:8000";
  int streams = 100, max_tokens = 64;
  double seconds = 10;
  bool in_process = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--url") url = v;
    if (k == "--streams") streams = std::clamp(std::atoi(v.c_str()), 1, 5000);
    if (k == "--max-tokens") max_tokens = std::clamp(std::atoi(v.c_str()), 1, 100'000);
    if (k == "--seconds") seconds = std::clamp(std::atof(v.c_str()), 1.0, 300.0);
    if (k == "--in-process") in_process = v == "1";
  }
  asio::io_context server_ioc(1);
  std::unique_ptr<segma::sim::EngineSim> engine;
  std::thread server_thread;
  if (in_process) {
    segma::sim::EngineSimConfig config;
    config.model = "load";
    config.timing = segma::sim::DefaultTiming(8, segma::sim::GpuType::kH100).value();
    engine = std::make_unique<segma::sim::EngineSim>(server_ioc, config);
    segma::Result<uint16_t> port = engine->Start();
    if (!port.ok()) {
      std::fprintf(stderr, "%s\n", port.status().ToString().c_str());
      return 2;
    }
    url = "http://127.0.0.1:" + std::to_string(*port);
    server_thread = std::thread([&server_ioc] { server_ioc.run(); });
  }
  asio::io_context ioc(1);
  segma::http::HttpClient client(ioc.get_executor(), static_cast<size_t>(streams));
  Stats stats;
  const auto start = Clock::now();
  const auto end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  for (int i = 0; i < streams; ++i) {
    asio::co_spawn(ioc, Stream(client, url, max_tokens, end, i, stats), asio::detached);
  }
  ioc.run();
  if (in_process) {
    engine->Stop();
    server_ioc.stop();
    server_thread.join();
  }
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf(
      "streams=%d max_tokens=%d wall=%.1fs started=%lld completed=%lld errors=%lld "
      "tokens=%lld tokens/s=%.0f\n"
      "client TTFT ms p50=%.1f p99=%.1f; inter-chunk ms p50=%.1f p99=%.1f\n",
      streams, max_tokens, wall, static_cast<long long>(stats.started),
      static_cast<long long>(stats.completed), static_cast<long long>(stats.errors),
      static_cast<long long>(stats.tokens), static_cast<double>(stats.tokens) / wall,
      Pct(stats.ttft_ms, 0.5), Pct(stats.ttft_ms, 0.99), Pct(stats.gap_ms, 0.5),
      Pct(stats.gap_ms, 0.99));
  if (!stats.first_error.empty()) std::printf("first error: %s\n", stats.first_error.c_str());
  return stats.errors > 0 ? 1 : 0;
}
