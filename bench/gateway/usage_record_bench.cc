// What UsageMeter::Record costs the request path with the usage journal (ADR 0024) and without:
// one record per iteration, from 1 and 2 threads, the writer thread off (so the queue only
// grows and its cost is not in the numbers), the journal in a temporary directory with its
// fsync thread running every 100 ms. Results in docs/benchmarks.md.

#include <unistd.h>

#include <filesystem>
#include <string>

#include <benchmark/benchmark.h>

#include "gateway/usage_meter.h"

namespace segma::gateway {
namespace {

class NullSink : public UsageSink {
 public:
  Status Write(const std::vector<store::UsageRecord>&) override { return OkStatus(); }
};

store::UsageRecord Sample(int64_t i) {
  store::UsageRecord r;
  r.request_id = "0Mh3kQz" + std::to_string(1'000'000'000 + i);  // time-ordered ids are 18 chars
  r.time = Timestamp(std::chrono::seconds(1'800'000'000));
  r.api_key_id = 12;
  r.user_id = 3;
  r.project_id = 4;
  r.model = "llama-3.1-8b-instruct";
  r.deployment_id = 5;
  r.instance_id = 6;
  r.prompt_tokens = 40;
  r.completion_tokens = 16;
  r.ttft_ms = 0.3;
  r.duration_ms = 0.4;
  r.status = 200;
  return r;
}

void BM_Record(benchmark::State& state) {
  static NullSink sink;
  static std::unique_ptr<UsageMeter> meter;
  const bool journal = state.range(0) != 0;
  const std::string dir = "/tmp/segma-usage-record-bench-" + std::to_string(::getpid());
  if (state.thread_index() == 0) {
    std::filesystem::remove_all(dir);
    UsageMeterOptions o;
    o.capacity = 100'000'000;
    o.batch_size = 1'000'000'000;  // the writer never wakes for a full batch
    o.flush_interval = std::chrono::hours(1);
    if (journal) o.journal.dir = dir;
    meter = std::make_unique<UsageMeter>(sink, o);
    if (!meter->Start().ok()) state.SkipWithError("cannot start the meter");
  }
  int64_t i = state.thread_index() * 1'000'000'000LL;
  for (auto _ : state) benchmark::DoNotOptimize(meter->Record(Sample(i++)));
  if (state.thread_index() == 0) {
    meter.reset();
    std::filesystem::remove_all(dir);
  }
}
BENCHMARK(BM_Record)->ArgName("journal")->Arg(0)->Arg(1)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace
}  // namespace segma::gateway
