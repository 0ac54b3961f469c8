#include "gateway/balancer.h"

#include <algorithm>
#include <limits>

namespace segma::gateway {

namespace {

int64_t ToMs(Timestamp t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// A stateless 64-bit mixer (splitmix64 finaliser) for rendezvous hashing.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t AffinityHash(std::string_view data) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

void Balancer::OrderDeployments(const ModelRoute& route, int64_t project_id,
                                std::vector<size_t>& out) {
  out.clear();
  for (size_t i = 0; i < route.deployments.size(); ++i) {
    const Deployment& d = route.deployments[i];
    if (d.project_id == 0 || d.project_id == project_id) out.push_back(i);
  }
  if (out.size() <= 1) return;
  std::stable_sort(out.begin(), out.end(), [&](size_t a, size_t b) {
    return route.deployments[a].weight > route.deployments[b].weight;
  });
  uint64_t total = 0;
  for (size_t i : out) total += route.deployments[i].weight;
  if (total == 0) return;
  // Deterministic weighted choice: call n goes to the deployment owning slot n mod total.
  uint64_t slot = weighted_rr_.fetch_add(1, std::memory_order_relaxed) % total;
  for (size_t k = 0; k < out.size(); ++k) {
    const uint32_t w = route.deployments[out[k]].weight;
    if (slot < w) {
      std::rotate(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(k),
                  out.begin() + static_cast<std::ptrdiff_t>(k) + 1);
      return;
    }
    slot -= w;
  }
}

bool Balancer::Ejected(const Replica& replica, Timestamp now) {
  return replica.state->ejected_until_ms.load(std::memory_order_relaxed) > ToMs(now);
}

std::optional<RoutingPolicy> ParseRoutingPolicy(std::string_view name) {
  if (name == "affinity") return RoutingPolicy::kAffinity;
  if (name == "least-outstanding") return RoutingPolicy::kLeastOutstanding;
  if (name == "round-robin") return RoutingPolicy::kRoundRobin;
  return std::nullopt;
}

const Replica* Balancer::Pick(const Deployment& deployment, const PickHints& hints, Timestamp now,
                              std::span<const int64_t> tried) {
  const Replica* least = nullptr;
  int64_t least_load = std::numeric_limits<int64_t>::max();
  const Replica* affine = nullptr;
  uint64_t best_score = 0;
  const std::string_view key = options_.policy != RoutingPolicy::kAffinity ? std::string_view()
                               : !hints.session_id.empty()
                                   ? hints.session_id
                                   : hints.prefix.substr(0, options_.prefix_chars);
  const uint64_t key_hash = key.empty() ? 0 : AffinityHash(key);
  const size_t n = deployment.replicas.size();
  const size_t start = n == 0 ? 0 : rr_.fetch_add(1, std::memory_order_relaxed) % n;
  for (size_t k = 0; k < n; ++k) {
    const Replica& r = deployment.replicas[(start + k) % n];
    if (!r.healthy || Ejected(r, now)) continue;
    if (std::find(tried.begin(), tried.end(), r.instance_id) != tried.end()) continue;
    if (options_.policy == RoutingPolicy::kRoundRobin) return &r;
    const int64_t load = r.state->outstanding.load(std::memory_order_relaxed);
    if (load < least_load) {
      least_load = load;
      least = &r;
    }
    if (!key.empty()) {
      const uint64_t score = Mix(key_hash ^ Mix(static_cast<uint64_t>(r.instance_id)));
      if (affine == nullptr || score > best_score) {
        best_score = score;
        affine = &r;
      }
    }
  }
  if (affine != nullptr &&
      affine->state->outstanding.load(std::memory_order_relaxed) - least_load <=
          options_.affinity_load_threshold) {
    return affine;
  }
  return least;
}

void Balancer::Begin(const Replica& replica) {
  replica.state->outstanding.fetch_add(1, std::memory_order_relaxed);
  replica.state->requests.fetch_add(1, std::memory_order_relaxed);
}

void Balancer::End(const Replica& replica) {
  replica.state->outstanding.fetch_sub(1, std::memory_order_relaxed);
}

void Balancer::ReportSuccess(const Replica& replica) {
  replica.state->consecutive_failures.store(0, std::memory_order_relaxed);
}

void Balancer::ReportFailure(const Replica& replica, Timestamp now) {
  const int32_t failures =
      replica.state->consecutive_failures.fetch_add(1, std::memory_order_relaxed) + 1;
  if (failures >= options_.eject_after_failures) {
    replica.state->ejected_until_ms.store(ToMs(now + options_.eject_for),
                                          std::memory_order_relaxed);
    replica.state->consecutive_failures.store(0, std::memory_order_relaxed);
  }
}

}  // namespace segma::gateway
