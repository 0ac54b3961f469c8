#pragma once

// The timing model of the simulated engine (`segma engine-sim`): parameters and their defaults
// per model size and GPU, approximate tokenization, a prefix cache over block hashes, and the
// engine's admission scheduler. Everything here is pure and synchronous: time is a parameter or
// a returned duration, never read from a clock. docs/engine-sim.md has the formulas and table.

#include <chrono>
#include <cstdint>
#include <deque>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace segma::sim {

using Micros = std::chrono::microseconds;

enum class GpuType { kH100, kH200, kA100, kL40S, kRtxPro6000, kCpu };

// "H100", "H200", "A100", "L40S", "RTX-PRO-6000" or "CPU" (case-insensitive; "_" and " " may
// stand for "-"). kInvalidArgument otherwise.
Result<GpuType> ParseGpuType(std::string_view name);
std::string_view GpuTypeName(GpuType gpu);

// The hardware figures the defaults are derived from.
struct GpuSpec {
  double memory_gib;      // usable device memory
  double bandwidth_tbps;  // memory bandwidth, TB/s
  double bf16_tflops;     // dense BF16 tensor throughput, TFLOP/s
  int default_max_seqs;   // vLLM's max_num_seqs on such a card (CPU: llama.cpp-like slots)
};
const GpuSpec& SpecFor(GpuType gpu);

struct TimingParams {
  double overhead_ms = 27;            // fixed part of TTFT (scheduling + one forward pass)
  double prefill_us_per_token = 160;  // per uncached prompt token
  double decode_ms_per_token = 12;    // one decode step at batch size 1
  int max_concurrency = 256;          // sequences decoding at once; the rest wait (FIFO)
  int max_waiting = 0;                // waiting queue bound (0: unbounded); beyond it → 503
  // Step times grow linearly with the running batch: factor 1 + load_slowdown·(r−1)/(max−1).
  double load_slowdown = 2.0;
  int block_tokens = 16;                // prefix-cache / KV block size in tokens
  int64_t kv_capacity_blocks = 27'000;  // KV cache size; also bounds the prefix cache (LRU)
  bool prefix_caching = true;
  int64_t max_model_len = 32'768;  // prompt + output tokens; longer requests get 400
  int default_max_tokens = 16;     // when a request gives no max_tokens
  int max_tokens_cap = 4096;       // max_tokens above this are clamped
  // Divides every duration: 2 is twice as fast; 0 answers at once (no timers, no queueing).
  double speed = 1.0;
};

// Defaults for a `params_b`-billion-parameter dense model in 16-bit weights on `tensor_parallel`
// GPUs of type `gpu` (see docs/engine-sim.md, "Defaults"):
//   decode_ms   = 2·params_b GB / (tp·bandwidth · 0.4 · tp_eff)
//   prefill_us  = 2·params_b GFLOP / (tp·tflops · 0.1 · tp_eff)
//   overhead_ms = 15 + decode_ms
//   kv blocks   = (tp·memory·0.9 − 2·params_b GB) / (params_b · 16 KiB per token · block_tokens)
// with tp_eff = 0.8 when tp > 1. kInvalidArgument for non-positive sizes.
Result<TimingParams> DefaultTiming(double params_b, GpuType gpu, int tensor_parallel = 1);

// Approximate tokenization, documented for users: one token per 4 bytes of UTF-8 text (at least
// one for a non-empty text). The prompt's full blocks of block_tokens tokens (4·block_tokens
// bytes) are chain-hashed, so two prompts share cached blocks exactly as far as they share a
// byte prefix rounded down to a block.
inline constexpr int kBytesPerToken = 4;
int64_t CountTokens(std::string_view text);
std::vector<uint64_t> BlockHashes(std::string_view text, int block_tokens);

// Durations of the model, before dividing by `speed`. `running` is the batch size including the
// sequence in question (≥ 1).
double LoadFactor(const TimingParams& p, int running);
Micros PrefillTime(const TimingParams& p, int64_t uncached_tokens, int running);
Micros DecodeStepTime(const TimingParams& p, int running);
// Applies `speed` (0 → zero).
Micros Scaled(const TimingParams& p, Micros d);

// An LRU set of block hashes bounded by `capacity_blocks`. Not thread-safe.
class PrefixCache {
 public:
  explicit PrefixCache(int64_t capacity_blocks) : capacity_(capacity_blocks) {}
  // The number of leading blocks of `blocks` that are cached; touches them (most recent).
  size_t Match(const std::vector<uint64_t>& blocks);
  // Inserts (or touches) all of `blocks`, evicting the least recently used beyond capacity.
  void Insert(const std::vector<uint64_t>& blocks);
  size_t size() const { return map_.size(); }

 private:
  void Touch(std::list<uint64_t>::iterator it);
  const int64_t capacity_;
  std::list<uint64_t> lru_;  // front: most recent
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> map_;
};

// What the engine does with one admitted request: how much of its prompt was cached and how
// long its prefill (the time to first token, queueing excluded) takes.
struct PrefillPlan {
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;
  Micros prefill{0};  // already scaled by speed
};

// The engine's scheduler: at most max_concurrency running sequences whose KV blocks fit the
// cache (one sequence always may run), a FIFO of waiting ones, and the prefix cache. Requests are
// identified by caller-chosen ids. Pure bookkeeping: the caller sleeps for the durations it
// returns. Not thread-safe: the owner serialises calls (EngineSim holds a mutex).
class EngineCore {
 public:
  explicit EngineCore(TimingParams params);

  enum class Admission { kRunning, kWaiting, kRejected };
  // Registers request `id` that will hold `kv_blocks` KV blocks while it runs. kRunning: it may
  // start now; kWaiting: it is queued and a later Finish() returns its id; kRejected: the waiting
  // queue is full (max_waiting).
  Admission Submit(uint64_t id, int64_t kv_blocks);

  // For a request that has just started running: matches its prompt against the prefix cache
  // (counting queries and hits in tokens, as vLLM does; at least one token is always computed),
  // caches its blocks, and returns its prefill time at the current batch size.
  PrefillPlan StartPrefill(int64_t prompt_tokens, const std::vector<uint64_t>& blocks);

  // The duration of the next decode step at the current batch size (scaled by speed).
  Micros NextDecodeStep() const;

  // Ends request `id` (running or waiting). Returns the ids of waiting requests that start now,
  // in FIFO order.
  std::vector<uint64_t> Finish(uint64_t id);

  int running() const { return static_cast<int>(running_.size()); }
  int waiting() const { return static_cast<int>(waiting_.size()); }
  // KV blocks held by running sequences over the capacity, in [0, 1].
  double kv_usage() const;
  int64_t prefix_queries_tokens() const { return queries_; }
  int64_t prefix_hit_tokens() const { return hits_; }
  const TimingParams& params() const { return params_; }

 private:
  bool Fits(int64_t kv_blocks) const;
  std::vector<uint64_t> StartWaiting();

  const TimingParams params_;
  PrefixCache cache_;
  std::unordered_map<uint64_t, int64_t> running_;  // id → KV blocks
  std::deque<std::pair<uint64_t, int64_t>> waiting_;
  int64_t used_blocks_ = 0;
  int64_t queries_ = 0;
  int64_t hits_ = 0;
};

}  // namespace segma::sim
