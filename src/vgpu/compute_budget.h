#pragma once

// The token bucket that holds the processes of one engine instance to a share of a device's SM
// time (SEGMA_VGPU_COMPUTE), and the feedback step that sizes it from the measured utilisation.
//
// A kernel launch takes tokens (its grid's block count; a graph launch a fixed amount) and waits
// while the bucket is empty. Once a period (kComputePeriodNs) one process of the instance (the one
// that claims the tick) adds `refill` tokens, capping the bucket at one period's refill; every
// `update interval` it scales `refill` by the instance's measured SM utilisation against its
// share: down when the instance ran above it, up when it ran below it while launches waited.
// The unit of the tokens is arbitrary: the loop finds how many the workload spends per period at
// its share. The bucket may go into debt by one launch (a launch proceeds while any token is
// left), so a launch larger than the refill never waits forever.
//
// The cells live in shared memory (SharedCompute) and are only touched through atomics, so the
// bucket holds across processes without a lock. Time is a parameter: no clock is read here.

#include <atomic>
#include <cstdint>
#include <optional>
#include <span>

#include <sys/types.h>

namespace segma::vgpu {

inline constexpr int64_t kComputePeriodNs = 100'000'000;           // 100 ms
inline constexpr int64_t kComputeUpdateNs = 5 * kComputePeriodNs;  // default update interval
inline constexpr int64_t kMinRefill = 1;
inline constexpr int64_t kMaxRefill = int64_t{1} << 40;
// A bucket starts without a limit: until a reading says the instance runs above its share, no
// launch waits (the first step down starts from the tokens actually spent, so it is one step).
inline constexpr int64_t kInitialRefill = kMaxRefill;
// The charge of one graph launch, whose kernels the library does not see.
inline constexpr int64_t kGraphLaunchCost = 4096;

// One device's bucket. All zero = not initialised (ComputeBudget::Initialise).
struct ComputeCells {
  // Written by every launch: a cache line of its own.
  alignas(64) std::atomic<int64_t> tokens;
  // Launches that found the bucket empty (the slow path).
  alignas(64) std::atomic<int64_t> waits;
  // The rest is written only by the process that claimed the current tick.
  alignas(64) std::atomic<int64_t> next_tick_ns;
  std::atomic<int64_t> refill;          // tokens per period
  std::atomic<int64_t> level;           // tokens right after the last refill
  std::atomic<int64_t> spent;           // tokens spent since the last update
  std::atomic<int64_t> periods;         // ticks since the last update
  std::atomic<int64_t> util_sum;        // utilisation readings since the last update
  std::atomic<int64_t> util_count;      //
  std::atomic<int64_t> waits_seen;      // `waits` at the last update
  std::atomic<int64_t> last_update_ns;  //
  std::atomic<int64_t> last_sample_us;  // the watcher's NVML lastSeenTimeStamp
  std::atomic<int32_t> last_util;       // the last reading, for diagnostics (-1: none yet)
};
static_assert(std::atomic<int64_t>::is_always_lock_free);

// The feedback step: the next refill, from the current one, the share and the instance's mean
// utilisation (percent) and tokens spent per period since the last update, and whether launches
// waited meanwhile. Within a point of the share it keeps the refill; above it, it scales the
// tokens actually spent (not the refill, which may be far above what the workload asks for) by
// sqrt(share / utilisation); below it, and only when launches waited (otherwise the bucket is not
// what holds the workload back), it scales the refill by the same. The ratio is first kept within
// [1/2, 2], so one step changes the refill by at most √2. The result stays within
// [kMinRefill, kMaxRefill].
int64_t NextRefill(int64_t refill, int percent, int util, int64_t spent_per_period, bool throttled);

// One of NVML's per-process utilisation samples, as far as the limiter needs it.
struct UtilSample {
  pid_t pid;
  unsigned long long time_stamp;  // µs
  unsigned sm_util;               // percent
};

// An instance's SM utilisation (percent) over a set of new samples of one device: the sum of its
// own processes' readings divided by the number of sampling instants (distinct time stamps), or
// nullopt when there are no samples. When processes time-slice the GPU, NVML names one process
// per instant (the one on the GPU, at 90-99 %: seen on an H100), so the share of instants that
// were the instance's is its share of the GPU's time; dividing by its own samples only would read
// ~100 % for every process that runs at all. When processes run together (MPS), each instant has
// a sample per process and the sum is the instance's utilisation, as before.
std::optional<int> InstanceUtil(std::span<const UtilSample> samples, std::span<const pid_t> ours);

class ComputeBudget {
 public:
  explicit ComputeBudget(ComputeCells& cells) : cells_(cells) {}

  // Sets fresh cells to a full bucket of kInitialRefill. Called once, by the segment's creator.
  static void Initialise(ComputeCells& cells);

  // The launch fast path: takes `cost` tokens and returns true if any token is left, otherwise
  // takes nothing and returns false. Thread- and process-safe.
  bool Take(int64_t cost) {
    if (cells_.tokens.load(std::memory_order_relaxed) <= 0) return false;
    cells_.tokens.fetch_sub(cost, std::memory_order_relaxed);
    return true;
  }
  // Counts a launch that had to wait.
  void NoteWait() { cells_.waits.fetch_add(1, std::memory_order_relaxed); }

  // True for exactly one caller per period, among all processes: that caller then samples the
  // utilisation and calls Tick. A tick missed for longer than a period (no process was there)
  // restarts the schedule from `now_ns`.
  bool ClaimTick(int64_t now_ns);

  // The claimant's step: books the tokens spent since the last tick, records `util` (the
  // instance's SM utilisation in percent over the readings since the last tick; nullopt when
  // there is no new reading), updates the refill with NextRefill when `update_interval_ns` has
  // passed since the last update and there were readings, and refills the bucket.
  void Tick(int percent, std::optional<int> util, int64_t now_ns, int64_t update_interval_ns);

  int64_t Tokens() const { return cells_.tokens.load(std::memory_order_relaxed); }
  int64_t Refill() const { return cells_.refill.load(std::memory_order_relaxed); }
  int64_t Waits() const { return cells_.waits.load(std::memory_order_relaxed); }
  int LastUtil() const { return cells_.last_util.load(std::memory_order_relaxed); }

 private:
  ComputeCells& cells_;
};

}  // namespace segma::vgpu
