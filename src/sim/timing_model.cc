#include "sim/timing_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>

namespace segma::sim {

namespace {

// FNV-1a, continued from `seed`: cheap, stable across runs and platforms.
uint64_t Fnv1a(std::string_view bytes, uint64_t seed) {
  uint64_t h = seed;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

constexpr uint64_t kFnvOffset = 14695981039346656037ull;

}  // namespace

Result<GpuType> ParseGpuType(std::string_view name) {
  std::string n;
  for (char c : name) {
    if (c == '_' || c == ' ') c = '-';
    n.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  if (n == "H100") return GpuType::kH100;
  if (n == "H200") return GpuType::kH200;
  if (n == "A100") return GpuType::kA100;
  if (n == "L40S") return GpuType::kL40S;
  if (n == "RTX-PRO-6000" || n == "RTXPRO6000") return GpuType::kRtxPro6000;
  if (n == "CPU") return GpuType::kCpu;
  return InvalidArgumentError("unknown GPU type '" + std::string(name) +
                              "' (H100, H200, A100, L40S, RTX-PRO-6000, CPU)");
}

std::string_view GpuTypeName(GpuType gpu) {
  switch (gpu) {
    case GpuType::kH100:
      return "H100";
    case GpuType::kH200:
      return "H200";
    case GpuType::kA100:
      return "A100";
    case GpuType::kL40S:
      return "L40S";
    case GpuType::kRtxPro6000:
      return "RTX-PRO-6000";
    case GpuType::kCpu:
      return "CPU";
  }
  return "?";
}

const GpuSpec& SpecFor(GpuType gpu) {
  // Public datasheet figures (SXM parts where there is a choice); the CPU row is a large
  // dual-socket server running llama.cpp.
  static const GpuSpec kH100{80, 3.35, 989, 256};
  static const GpuSpec kH200{141, 4.8, 989, 256};
  static const GpuSpec kA100{80, 2.0, 312, 256};
  static const GpuSpec kL40S{48, 0.864, 362, 128};
  static const GpuSpec kRtxPro6000{96, 1.79, 500, 256};
  static const GpuSpec kCpu{256, 0.1, 10, 4};
  switch (gpu) {
    case GpuType::kH100:
      return kH100;
    case GpuType::kH200:
      return kH200;
    case GpuType::kA100:
      return kA100;
    case GpuType::kL40S:
      return kL40S;
    case GpuType::kRtxPro6000:
      return kRtxPro6000;
    case GpuType::kCpu:
      return kCpu;
  }
  return kH100;
}

Result<TimingParams> DefaultTiming(double params_b, GpuType gpu, int tensor_parallel) {
  if (!(params_b > 0) || params_b > 10'000) {
    return InvalidArgumentError("--params-b must be in (0, 10000]");
  }
  if (tensor_parallel < 1 || tensor_parallel > 64) {
    return InvalidArgumentError("--tp must be in [1, 64]");
  }
  const GpuSpec& spec = SpecFor(gpu);
  const double tp = tensor_parallel;
  const double tp_eff = tensor_parallel > 1 ? 0.8 : 1.0;
  // Decode at batch 1 streams every weight once per token (bandwidth-bound, ~40% of peak);
  // prefill is compute-bound at 2 FLOP per parameter per token (~10% of peak at small batches).
  const double weight_gb = 2.0 * params_b;
  TimingParams p;
  p.decode_ms_per_token = weight_gb / (tp * spec.bandwidth_tbps * 0.4 * tp_eff);
  p.prefill_us_per_token = 2.0 * params_b * 1e3 / (tp * spec.bf16_tflops * 0.1 * tp_eff);
  p.overhead_ms = 15 + p.decode_ms_per_token;
  p.max_concurrency = spec.default_max_seqs;
  // KV bytes per token ≈ 16 KiB per billion parameters (Llama-3-8B with GQA: 128 KiB).
  const double free_bytes = tp * spec.memory_gib * 0.9 * (1 << 30) - weight_gb * 1e9;
  const double block_bytes = params_b * 16 * 1024 * p.block_tokens;
  p.kv_capacity_blocks = std::max<int64_t>(256, static_cast<int64_t>(free_bytes / block_bytes));
  return p;
}

int64_t CountTokens(std::string_view text) {
  if (text.empty()) return 0;
  return static_cast<int64_t>((text.size() + kBytesPerToken - 1) / kBytesPerToken);
}

std::vector<uint64_t> BlockHashes(std::string_view text, int block_tokens) {
  std::vector<uint64_t> out;
  const size_t block_bytes = static_cast<size_t>(std::max(1, block_tokens)) * kBytesPerToken;
  uint64_t h = kFnvOffset;
  for (size_t off = 0; off + block_bytes <= text.size(); off += block_bytes) {
    h = Fnv1a(text.substr(off, block_bytes), h);  // chained: a block's hash covers its prefix
    out.push_back(h);
  }
  return out;
}

double LoadFactor(const TimingParams& p, int running) {
  if (running <= 1 || p.max_concurrency <= 1) return 1.0;
  const int r = std::min(running, p.max_concurrency);
  return 1.0 + p.load_slowdown * (r - 1) / (p.max_concurrency - 1);
}

Micros PrefillTime(const TimingParams& p, int64_t uncached_tokens, int running) {
  const double us =
      (p.overhead_ms * 1000 + std::max<int64_t>(0, uncached_tokens) * p.prefill_us_per_token) *
      LoadFactor(p, running);
  return Micros(static_cast<int64_t>(std::llround(us)));
}

Micros DecodeStepTime(const TimingParams& p, int running) {
  return Micros(
      static_cast<int64_t>(std::llround(p.decode_ms_per_token * 1000 * LoadFactor(p, running))));
}

Micros Scaled(const TimingParams& p, Micros d) {
  if (p.speed <= 0) return Micros(0);
  return Micros(static_cast<int64_t>(std::llround(static_cast<double>(d.count()) / p.speed)));
}

size_t PrefixCache::Match(const std::vector<uint64_t>& blocks) {
  size_t n = 0;
  for (uint64_t b : blocks) {
    auto it = map_.find(b);
    if (it == map_.end()) break;
    Touch(it->second);
    ++n;
  }
  return n;
}

void PrefixCache::Insert(const std::vector<uint64_t>& blocks) {
  if (capacity_ <= 0) return;
  for (uint64_t b : blocks) {
    auto it = map_.find(b);
    if (it != map_.end()) {
      Touch(it->second);
      continue;
    }
    lru_.push_front(b);
    map_.emplace(b, lru_.begin());
    while (static_cast<int64_t>(map_.size()) > capacity_) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
  }
}

void PrefixCache::Touch(std::list<uint64_t>::iterator it) { lru_.splice(lru_.begin(), lru_, it); }

EngineCore::EngineCore(TimingParams params)
    : params_(std::move(params)), cache_(params_.prefix_caching ? params_.kv_capacity_blocks : 0) {}

bool EngineCore::Fits(int64_t kv_blocks) const {
  if (running_.empty()) return true;  // one sequence always runs, however long
  return static_cast<int>(running_.size()) < params_.max_concurrency &&
         used_blocks_ + kv_blocks <= params_.kv_capacity_blocks;
}

EngineCore::Admission EngineCore::Submit(uint64_t id, int64_t kv_blocks) {
  if (params_.speed <= 0) {
    // Instant mode: nothing is modelled, so nothing waits.
    running_.emplace(id, 0);
    return Admission::kRunning;
  }
  if (waiting_.empty() && Fits(kv_blocks)) {
    running_.emplace(id, kv_blocks);
    used_blocks_ += kv_blocks;
    return Admission::kRunning;
  }
  if (params_.max_waiting > 0 && static_cast<int>(waiting_.size()) >= params_.max_waiting) {
    return Admission::kRejected;
  }
  waiting_.emplace_back(id, kv_blocks);
  return Admission::kWaiting;
}

PrefillPlan EngineCore::StartPrefill(int64_t prompt_tokens, const std::vector<uint64_t>& blocks) {
  PrefillPlan plan;
  plan.prompt_tokens = prompt_tokens;
  if (params_.prefix_caching && prompt_tokens > 0) {
    const size_t matched = cache_.Match(blocks);
    // As in vLLM, the last prompt token is always computed (it yields the first logits).
    plan.cached_tokens =
        std::min<int64_t>(static_cast<int64_t>(matched) * params_.block_tokens, prompt_tokens - 1);
    queries_ += prompt_tokens;
    hits_ += plan.cached_tokens;
    cache_.Insert(blocks);
  }
  plan.prefill =
      Scaled(params_, PrefillTime(params_, prompt_tokens - plan.cached_tokens, running()));
  return plan;
}

Micros EngineCore::NextDecodeStep() const {
  return Scaled(params_, DecodeStepTime(params_, running()));
}

std::vector<uint64_t> EngineCore::StartWaiting() {
  std::vector<uint64_t> started;
  while (!waiting_.empty() && Fits(waiting_.front().second)) {
    auto [id, blocks] = waiting_.front();
    waiting_.pop_front();
    running_.emplace(id, blocks);
    used_blocks_ += blocks;
    started.push_back(id);
  }
  return started;
}

std::vector<uint64_t> EngineCore::Finish(uint64_t id) {
  if (auto it = running_.find(id); it != running_.end()) {
    used_blocks_ -= it->second;
    running_.erase(it);
  } else {
    auto w = std::find_if(waiting_.begin(), waiting_.end(),
                          [id](const auto& e) { return e.first == id; });
    if (w != waiting_.end()) waiting_.erase(w);
  }
  return StartWaiting();
}

double EngineCore::kv_usage() const {
  if (params_.kv_capacity_blocks <= 0) return 0;
  return std::clamp(static_cast<double>(used_blocks_) / params_.kv_capacity_blocks, 0.0, 1.0);
}

}  // namespace segma::sim
