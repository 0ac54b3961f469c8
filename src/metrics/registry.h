#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace segma::metrics {

// The process's metric registry (prometheus-cpp core), exposed as Prometheus text by our own HTTP
// server. Families are registered once at start-up and then updated lock-free by prometheus-cpp.
// Thread-safe.
class Registry {
 public:
  Registry() : registry_(std::make_shared<prometheus::Registry>()) {}

  prometheus::Registry& prometheus() { return *registry_; }

  // Appends text-format families to every Serialize(), after the registry's own: for series whose
  // label sets come and go (GPUs, engines, workers), written from a snapshot. A collector must
  // write whole families (HELP, TYPE, samples) whose names no other part of the registry uses,
  // must be cheap (it runs on the scraping thread) and must stay valid as long as the registry.
  using Collector = std::function<void(std::string& out)>;
  void AddCollector(Collector collector);

  // The text exposition format (version 0.0.4) of every collectable in this registry, then the
  // collectors' output.
  std::string Serialize() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  mutable std::mutex mu_;
  std::vector<Collector> collectors_;  // guarded by mu_
  // The size of the last exposition: the next one reserves it at once instead of growing (and
  // copying, and faulting pages in) as the collectors append ~1 MB.
  mutable std::atomic<size_t> last_size_{0};
};

// Histogram buckets for request latencies, in seconds (100 µs .. 60 s).
const prometheus::Histogram::BucketBoundaries& LatencyBuckets();

}  // namespace segma::metrics
