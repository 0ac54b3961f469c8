#include "metrics/registry.h"

#include <prometheus/text_serializer.h>

namespace segma::metrics {

void Registry::AddCollector(Collector collector) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::string Registry::Serialize() const {
  prometheus::TextSerializer serializer;
  std::string out = serializer.Serialize(registry_->Collect());
  out.reserve(last_size_.load(std::memory_order_relaxed) + 4096);
  {
    std::lock_guard lock(mu_);
    for (const Collector& c : collectors_) c(out);
  }
  last_size_.store(out.size(), std::memory_order_relaxed);
  return out;
}

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
      0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
  return kBuckets;
}

}  // namespace segma::metrics
