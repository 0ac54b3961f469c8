#pragma once

// The control plane's own metrics (docs/observability.md): workers and instances by state,
// deployments' desired and ready replicas, scheduling decisions by outcome and by the filter that
// rejected workers, controller pass latency, store query latency, open watch streams.

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>

#include "controllers/instance_scheduler.h"
#include "metrics/registry.h"
#include "store/store.h"

namespace segma::api {

// Registers its families on construction; the registry must outlive it, and it must outlive
// every Serialize() of the registry (it adds a collector). Thread-safe.
class ServerMetrics {
 public:
  explicit ServerMetrics(metrics::Registry& registry);

  // After a controller pass: how long it took and what the scheduler decided.
  void ObservePass(double seconds, const controllers::InstanceScheduler::PassResult& pass);
  // Counts workers, instances and deployments in the store for the next scrapes (the latency of
  // its list queries goes to segma_store_query_duration_seconds). kUnavailable from the store.
  Status Refresh(store::Store& store);

  // Watch streams (GET ...?watch=true) open now: one Open() and one Close() per stream.
  void WatchOpened() { watches_.fetch_add(1, std::memory_order_relaxed); }
  void WatchClosed() { watches_.fetch_sub(1, std::memory_order_relaxed); }

 private:
  void Render(std::string& out) const;
  prometheus::Histogram& QueryHistogram(const std::string& query);

  prometheus::Histogram* pass_seconds_;
  prometheus::Counter* placed_;
  prometheus::Counter* unschedulable_;
  prometheus::Family<prometheus::Counter>* rejections_;
  prometheus::Family<prometheus::Histogram>* store_queries_;
  std::atomic<int64_t> watches_{0};
  mutable std::mutex mu_;
  std::string snapshot_;  // rendered by Refresh; guarded by mu_
  std::map<std::string, prometheus::Counter*> rejection_counters_;  // guarded by mu_
  std::map<std::string, prometheus::Histogram*> query_histograms_;  // guarded by mu_
};

}  // namespace segma::api
