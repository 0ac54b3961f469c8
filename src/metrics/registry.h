#pragma once

#include <memory>
#include <string>

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
  // The text exposition format (version 0.0.4) of every collectable in this registry.
  std::string Serialize() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
};

// Histogram buckets for request latencies, in seconds (100 µs .. 60 s).
const prometheus::Histogram::BucketBoundaries& LatencyBuckets();

}  // namespace segma::metrics
