#include "scheduler/serving_prediction.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <string_view>

#include <fmt/format.h>

namespace segma::scheduler {
namespace {

struct Point {
  double users;
  double tokens_per_second;  // per user, p50
  double ttft_ms;            // p50
};

// One engine on one GPU type, as bench/gpu measured it through segma's deployment path.
struct Calibration {
  std::string_view backend;
  std::string_view gpu;  // matched as a word of the reported name ("H200" in "NVIDIA H200 NVL")
  std::string_view basis;
  double reference_parameters;
  std::array<Point, 5> reference;  // ascending users
  double large_parameters;
  // The larger model against the reference at the same users: tokens/s and TTFT ratios.
  std::array<Point, 3> large_ratio;
};

// docs/benchmarks.md "Current rendering: commit b37ffa4": llama.cpp -ngl 999 -fa on, the 8B
// (Llama-3.1-8B layout, q8_0) and 32B (Qwen2.5-32B dimensions, q8_0) test models, streaming
// chat of ~260-token prompts and 128-token answers through the gateway, the GPU to itself.
constexpr Calibration kLlamaCppH200{
    "llama.cpp",
    "H200",
    "llama.cpp on one NVIDIA H200, measured through segma's deployment path (docs/benchmarks.md, "
    "commit b37ffa4): the GPU to itself, ~260-token prompts, 128-token answers",
    8.03e9,
    {{{1, 227.0, 61}, {8, 97.7, 315}, {16, 40.3, 424}, {32, 32.6, 530}, {64, 16.0, 505}}},
    32.76e9,
    {{{1, 68.8 / 227.0, 157.0 / 61},
      {16, 16.2 / 40.3, 1029.0 / 424},
      {32, 15.8 / 32.6, 1401.0 / 530}}},
};

constexpr std::array<const Calibration*, 1> kCalibrations{&kLlamaCppH200};

// Whether `word` appears in `name` as a whole word ("H200" in "NVIDIA H200 NVL", not in
// "GH200").
bool HasWord(std::string_view name, std::string_view word) {
  auto is_word_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  for (size_t at = name.find(word); at != std::string_view::npos; at = name.find(word, at + 1)) {
    const size_t end = at + word.size();
    if ((at == 0 || !is_word_char(name[at - 1])) &&
        (end == name.size() || !is_word_char(name[end])))
      return true;
  }
  return false;
}

// Log-log interpolation of the points' values at `users`; outside the points, the nearest
// point's value (the caller scales beyond the last).
template <size_t N, typename Get>
double Interpolate(const std::array<Point, N>& points, double users, Get get) {
  if (users <= points.front().users) return get(points.front());
  for (size_t i = 1; i < N; ++i) {
    if (users > points[i].users) continue;
    const double t = (std::log(users) - std::log(points[i - 1].users)) /
                     (std::log(points[i].users) - std::log(points[i - 1].users));
    return std::exp(std::lerp(std::log(get(points[i - 1])), std::log(get(points[i])), t));
  }
  return get(points.back());
}

struct Rates {
  double tokens_per_second;
  double ttft_ms;
};

Rates Scaled(const Calibration& c, double users, double size_exponent) {
  auto tps = [](const Point& p) { return p.tokens_per_second; };
  auto ttft = [](const Point& p) { return p.ttft_ms; };
  Rates r{Interpolate(c.reference, users, tps), Interpolate(c.reference, users, ttft)};
  // Past the last measurement the engine is saturated: the same total shared by more users,
  // whose prompts queue behind each other.
  const double last = c.reference.back().users;
  if (users > last) {
    r.tokens_per_second *= last / users;
    r.ttft_ms *= users / last;
  }
  r.tokens_per_second *= std::pow(Interpolate(c.large_ratio, users, tps), size_exponent);
  r.ttft_ms *= std::pow(Interpolate(c.large_ratio, users, ttft), size_exponent);
  return r;
}

Rates At(const Calibration& c, double users, double size_exponent) {
  // The larger model's ratio grows with users (it batches better), which, scaled past the
  // measured sizes, could predict faster decoding for more users: each user gets at most what
  // fewer users got. Every factor is log-linear in users between the measured user counts, so
  // the least over fewer users is at one of those counts.
  Rates r = Scaled(c, users, size_exponent);
  auto at_most = [&](double fewer) {
    if (fewer < users) {
      r.tokens_per_second =
          std::min(r.tokens_per_second, Scaled(c, fewer, size_exponent).tokens_per_second);
    }
  };
  for (const Point& p : c.reference) at_most(p.users);
  for (const Point& p : c.large_ratio) at_most(p.users);
  return r;
}

}  // namespace

ServingPrediction PredictServing(const ServingQuery& q) {
  ServingPrediction p;
  p.sequences = std::max(1, q.sequences);
  const Calibration* c = nullptr;
  bool backend_known = false;
  for (const Calibration* candidate : kCalibrations) {
    if (candidate->backend != q.backend) continue;
    backend_known = true;
    if (HasWord(q.gpu_name, candidate->gpu)) c = candidate;
  }
  if (!backend_known) {
    p.reason =
        fmt::format("no measurements of {} yet", q.backend.empty() ? "this engine" : q.backend);
    return p;
  }
  if (c == nullptr) {
    p.reason = fmt::format("no measurements of {} on {} yet", q.backend,
                           q.gpu_name.empty() ? "this GPU" : q.gpu_name);
    return p;
  }
  if (q.kind != PlacementKind::kSingleGpu) {
    p.reason = fmt::format("measured on one whole GPU; a {} placement is not predicted",
                           PlacementKindName(q.kind));
    return p;
  }
  if (q.parameter_count == 0) {
    p.reason = "the model's parameter count is unknown";
    return p;
  }
  // Sizes between the two measured models interpolate; beyond them, extrapolate within a factor
  // of four of the nearer one (further out, the nearer bound's exponent is kept).
  const double params = static_cast<double>(q.parameter_count);
  const double exponent = std::log(params / c->reference_parameters) /
                          std::log(c->large_parameters / c->reference_parameters);
  p.extrapolated = params < c->reference_parameters / 1.5 || params > c->large_parameters * 1.5;
  const double bounded = std::clamp(exponent, -1.0, 2.0);

  p.available = true;
  p.basis = std::string(c->basis);
  const Rates one = At(*c, 1, bounded);
  const Rates busy = At(*c, p.sequences, bounded);
  p.single_user_tokens_per_second = one.tokens_per_second;
  p.single_user_ttft_ms = one.ttft_ms;
  p.tokens_per_second_per_user = busy.tokens_per_second;
  p.ttft_ms = busy.ttft_ms;
  p.total_tokens_per_second = busy.tokens_per_second * p.sequences;
  return p;
}

std::vector<std::string> ContractWarnings(const ServingPrediction& p) {
  std::vector<std::string> out;
  if (!p.available) return out;
  if (p.tokens_per_second_per_user < kContractTokensPerSecond) {
    out.push_back(
        fmt::format("predicted {:.1f} tokens/s per user with {} concurrent sequences, below the "
                    "target of {:.0f}",
                    p.tokens_per_second_per_user, p.sequences, kContractTokensPerSecond));
  }
  if (p.ttft_ms > kContractTtftMs) {
    out.push_back(fmt::format(
        "predicted time to first token {:.1f} s with {} concurrent sequences, above the target of "
        "{:.0f} s",
        p.ttft_ms / 1000, p.sequences, kContractTtftMs / 1000));
  }
  return out;
}

}  // namespace segma::scheduler
