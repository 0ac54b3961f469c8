#include "vgpu/compute_budget.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace segma::vgpu {
namespace {

// Readings this close to the share (in percentage points) leave the refill as it is: NVML's
// per-process readings are whole percents.
constexpr int kDeadBand = 1;

// The square root of share / utilisation, the ratio first kept within [1/2, 2]. The square root
// damps the step: NVML's readings lag the launches by up to a second, and a full step on a late
// reading overshoots (a simulated lag of 3 to 10 periods oscillated by up to 10 points with full
// steps, by under 2 with these; tests/vgpu/vgpu_test.cc).
double Step(int percent, int util) {
  return std::sqrt(std::clamp(static_cast<double>(percent) / std::max(util, 1), 0.5, 2.0));
}

int64_t Clamp(double v) {
  if (!(v >= static_cast<double>(kMinRefill))) return kMinRefill;  // NaN included
  if (v >= static_cast<double>(kMaxRefill)) return kMaxRefill;
  return static_cast<int64_t>(v);
}

}  // namespace

std::optional<int> InstanceUtil(std::span<const UtilSample> samples, std::span<const pid_t> ours) {
  if (samples.empty()) return std::nullopt;
  std::vector<unsigned long long> instants;
  instants.reserve(samples.size());
  long sum = 0;
  for (const UtilSample& s : samples) {
    instants.push_back(s.time_stamp);
    if (std::find(ours.begin(), ours.end(), s.pid) != ours.end()) sum += s.sm_util;
  }
  std::sort(instants.begin(), instants.end());
  const auto distinct = std::unique(instants.begin(), instants.end()) - instants.begin();
  return static_cast<int>(std::min<long>(100, sum / distinct));
}

int64_t NextRefill(int64_t refill, int percent, int util, int64_t spent_per_period,
                   bool throttled) {
  if (util > percent + kDeadBand) {
    const double factor = Step(percent, util);
    // Scaling the refill itself would take many steps when it is far above what the workload
    // spends (nothing waits until it drops below that).
    const int64_t base = std::min(refill, std::max<int64_t>(spent_per_period, kMinRefill));
    return Clamp(static_cast<double>(base) * factor);
  }
  if (util < percent - kDeadBand && throttled) {
    const double factor = Step(percent, util);
    return Clamp(std::max(static_cast<double>(refill) * factor, static_cast<double>(refill + 1)));
  }
  return refill;
}

void ComputeBudget::Initialise(ComputeCells& c) {
  c.tokens.store(kInitialRefill);
  c.refill.store(kInitialRefill);
  c.level.store(kInitialRefill);
  c.last_util.store(-1);
}

bool ComputeBudget::ClaimTick(int64_t now_ns) {
  int64_t next = cells_.next_tick_ns.load(std::memory_order_acquire);
  if (now_ns < next) return false;
  const int64_t target =
      now_ns - next >= kComputePeriodNs ? now_ns + kComputePeriodNs : next + kComputePeriodNs;
  return cells_.next_tick_ns.compare_exchange_strong(next, target, std::memory_order_acq_rel);
}

void ComputeBudget::Tick(int percent, std::optional<int> util, int64_t now_ns,
                         int64_t update_interval_ns) {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  ComputeCells& c = cells_;
  const int64_t spent = std::max<int64_t>(0, c.level.load(kRelaxed) - c.tokens.load(kRelaxed));
  c.spent.fetch_add(spent, kRelaxed);
  c.periods.fetch_add(1, kRelaxed);
  if (util) {
    c.util_sum.fetch_add(*util, kRelaxed);
    c.util_count.fetch_add(1, kRelaxed);
    c.last_util.store(*util, kRelaxed);
  }
  int64_t refill = c.refill.load(kRelaxed);
  const int64_t readings = c.util_count.load(kRelaxed);
  if (readings > 0 && now_ns - c.last_update_ns.load(kRelaxed) >= update_interval_ns) {
    const int mean_util = static_cast<int>(c.util_sum.load(kRelaxed) / readings);
    const int64_t spent_per_period = c.spent.load(kRelaxed) / c.periods.load(kRelaxed);
    const int64_t waits = c.waits.load(kRelaxed);
    refill = NextRefill(refill, percent, mean_util, spent_per_period,
                        waits != c.waits_seen.load(kRelaxed));
    c.refill.store(refill, kRelaxed);
    c.spent.store(0, kRelaxed);
    c.periods.store(0, kRelaxed);
    c.util_sum.store(0, kRelaxed);
    c.util_count.store(0, kRelaxed);
    c.waits_seen.store(waits, kRelaxed);
    c.last_update_ns.store(now_ns, kRelaxed);
  }
  // At most one period's worth: an idle instance does not save up a burst.
  int64_t tokens = c.tokens.load(kRelaxed);
  int64_t next = 0;
  do {
    next = std::min(tokens + refill, refill);
  } while (!c.tokens.compare_exchange_weak(tokens, next, kRelaxed));
  c.level.store(next, kRelaxed);
}

}  // namespace segma::vgpu
