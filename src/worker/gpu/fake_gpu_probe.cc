#include "worker/gpu/fake_gpu_probe.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <utility>

#include <fmt/format.h>

namespace segma::gpu {

namespace {

constexpr int64_t kGiB = int64_t{1} << 30;
constexpr int64_t kMaxFakeGib = 16384;  // 16 TiB: far above any GPU, catches typos in units
constexpr size_t kMaxFakeNameLength = 64;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Parses a whole non-negative decimal integer; nullopt for anything else.
std::optional<int64_t> ParseInt(std::string_view s) {
  int64_t v = 0;
  if (s.empty() || !std::isdigit(static_cast<unsigned char>(s.front()))) return std::nullopt;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

bool ValidNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}

Result<FakeGpuSpec> ParseGroup(std::string_view group) {
  const auto bad = [group](std::string_view why) {
    return InvalidArgumentError(fmt::format(
        "bad fake GPU group '{}': {} (want COUNTxNAME:GiB, e.g. 4xH200-NVL:141)", group, why));
  };
  const size_t colon = group.rfind(':');
  if (colon == std::string_view::npos) return bad("missing ':GiB' memory size");
  std::string_view head = Trim(group.substr(0, colon));
  const std::string_view size_text = Trim(group.substr(colon + 1));
  FakeGpuSpec spec;
  // "4xH200" has a count; "H200" alone means 1.
  const size_t x = head.find_first_of("xX");
  const bool digits_before_x =
      x != std::string_view::npos && x > 0 &&
      std::all_of(head.begin(), head.begin() + static_cast<ptrdiff_t>(x),
                  [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; });
  if (digits_before_x) {
    std::optional<int64_t> count = ParseInt(head.substr(0, x));
    if (!count || *count < 1 || *count > kMaxFakeGpus) {
      return bad(fmt::format("count must be between 1 and {}", kMaxFakeGpus));
    }
    spec.count = static_cast<int>(*count);
    head = head.substr(x + 1);
  } else if (!head.empty() && (head[0] == 'x' || head[0] == 'X') &&
             (head.size() == 1 || std::isupper(static_cast<unsigned char>(head[1])) != 0 ||
              std::isdigit(static_cast<unsigned char>(head[1])) != 0 || head[1] == '-')) {
    // "x:1", "xH100:80": a count was meant but is missing. ("Xavier:32" is a name.)
    return bad("missing count before 'x'");
  }
  if (head.empty()) return bad("missing GPU name");
  if (head.size() > kMaxFakeNameLength) {
    return bad(fmt::format("name longer than {} characters", kMaxFakeNameLength));
  }
  if (!std::all_of(head.begin(), head.end(), ValidNameChar)) {
    return bad("name may contain only letters, digits, '-', '_' and '.'");
  }
  spec.name = std::string(head);
  if (size_text.empty()) return bad("missing memory size after ':'");
  std::optional<int64_t> gib = ParseInt(size_text);
  if (!gib && size_text.front() == '-') return bad("memory size must be positive");
  if (!gib) return bad("memory size must be a whole number of GiB");
  if (*gib <= 0 || *gib > kMaxFakeGib) {
    return bad(fmt::format("memory size must be between 1 and {} GiB", kMaxFakeGib));
  }
  spec.memory_gib = *gib;
  return spec;
}

uint64_t Fnv1a(std::string_view data, uint64_t hash = 14695981039346656037ULL) {
  for (unsigned char c : data) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return hash;
}

std::string FakeUuid(std::string_view seed, int index) {
  const std::string key = fmt::format("{}\x1f{}", seed, index);
  const uint64_t hi = Fnv1a(key);
  const uint64_t lo = Fnv1a(key, hi ^ 0x9e3779b97f4a7c15ULL);
  return fmt::format("GPU-fake-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", hi >> 32, (hi >> 16) & 0xffff,
                     hi & 0xffff, lo >> 48, lo & 0xffffffffffffULL);
}

std::vector<std::string> UpperTokens(std::string_view s) {
  std::vector<std::string> tokens;
  std::string cur;
  for (char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      cur.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    } else if (!cur.empty()) {
      tokens.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) tokens.push_back(std::move(cur));
  return tokens;
}

bool HasNvLink(std::string_view display_name) {
  for (const std::string& t : UpperTokens(display_name)) {
    if (t == "H100" || t == "H200" || t == "GH200") return true;
  }
  return false;
}

// Power drawn at `utilization` percent, for plausible dashboards: idle ~15% of the limit.
double SimulatedPower(double limit, double utilization) {
  return limit * (0.15 + 0.85 * utilization / 100.0);
}

double PowerLimitFor(std::string_view display_name) {
  for (const std::string& t : UpperTokens(display_name)) {
    if (t == "NVL") return 600;
  }
  for (const std::string& t : UpperTokens(display_name)) {
    if (t == "H100" || t == "H200") return 700;
    if (t == "B200") return 1000;
    if (t == "A100") return 400;
    if (t == "L40S" || t == "L40") return 350;
    if (t == "L4") return 72;
  }
  return 600;
}

// Highest SM clock and the memory clock of a GPU, MHz (nvidia-smi -q -d CLOCK of real boards).
std::pair<double, double> ClocksFor(std::string_view display_name) {
  for (const std::string& t : UpperTokens(display_name)) {
    if (t == "H100" || t == "H200" || t == "GH200") return {1980, 2619};
    if (t == "B200") return {1965, 3996};
    if (t == "A100") return {1410, 1593};
    if (t == "RTX") return {2617, 14001};
    if (t == "L40S" || t == "L40" || t == "L4") return {2520, 9001};
  }
  return {1980, 2619};
}

constexpr double kIdleSmClock = 345;

}  // namespace

Result<std::vector<FakeGpuSpec>> ParseFakeGpuSpec(std::string_view spec) {
  if (Trim(spec).empty()) return InvalidArgumentError("empty fake GPU spec");
  std::vector<FakeGpuSpec> out;
  int total = 0;
  while (true) {
    const size_t comma = spec.find(',');
    const std::string_view group = Trim(spec.substr(0, comma));
    if (group.empty()) return InvalidArgumentError("empty group in fake GPU spec");
    ASSIGN_OR_RETURN(FakeGpuSpec g, ParseGroup(group));
    total += g.count;
    if (total > kMaxFakeGpus) {
      return InvalidArgumentError(
          fmt::format("fake GPU spec describes more than {} GPUs", kMaxFakeGpus));
    }
    out.push_back(std::move(g));
    if (comma == std::string_view::npos) break;
    spec.remove_prefix(comma + 1);
  }
  return out;
}

std::string FakeGpuDisplayName(std::string_view spec_name) {
  std::string name(spec_name);
  std::replace(name.begin(), name.end(), '-', ' ');
  std::replace(name.begin(), name.end(), '_', ' ');
  std::vector<std::string> tokens = UpperTokens(name);
  if (!tokens.empty() && tokens.front() == "NVIDIA") return name;
  return "NVIDIA " + name;
}

std::string KnownComputeCapability(std::string_view display_name) {
  const std::vector<std::string> tokens = UpperTokens(display_name);
  const auto has = [&tokens](std::string_view t) {
    return std::find(tokens.begin(), tokens.end(), t) != tokens.end();
  };
  if (has("RTX") && (has("PRO") || has("5090") || has("5080"))) {
    // RTX PRO 6000 Blackwell and GeForce 50xx; the older "RTX 6000 Ada" is 8.9.
    return has("ADA") ? "8.9" : "12.0";
  }
  if (has("RTX") && (has("4090") || has("4080") || has("ADA"))) return "8.9";
  if (has("B200") || has("B100") || has("GB200")) return "10.0";
  if (has("H100") || has("H200") || has("GH200") || has("H800") || has("H20")) return "9.0";
  if (has("L40S") || has("L40") || has("L4")) return "8.9";
  if (has("A100") || has("A800") || has("A30")) return "8.0";
  if (has("A10") || has("A40") || has("A6000")) return "8.6";
  if (has("T4")) return "7.5";
  if (has("V100")) return "7.0";
  return {};
}

FakeGpuProbe::FakeGpuProbe(const std::vector<FakeGpuSpec>& specs, std::string_view seed) {
  int index = 0;
  for (size_t group = 0; group < specs.size(); ++group) {
    const FakeGpuSpec& spec = specs[group];
    const std::string display = FakeGpuDisplayName(spec.name);
    const int first = index;
    for (int i = 0; i < spec.count; ++i, ++index) {
      Slot slot;
      types::GpuDevice& g = slot.device;
      g.index = index;
      g.uuid = FakeUuid(seed, index);
      g.name = display;
      g.compute_capability = KnownComputeCapability(display);
      g.memory_total = spec.memory_gib * kGiB;
      g.power_limit = PowerLimitFor(display);
      g.simulated = true;
      slots_.push_back(std::move(slot));
    }
    const bool nvlink = HasNvLink(display);
    for (int a = first; a < index; ++a) {
      for (int b = first; b < index; ++b) {
        if (a != b && nvlink) slots_[a].device.links[b] = "nvlink";
      }
    }
  }
  for (Slot& a : slots_) {
    for (const Slot& b : slots_) {
      if (a.device.index != b.device.index) a.device.links.emplace(b.device.index, "pcie");
    }
  }
}

Result<std::unique_ptr<FakeGpuProbe>> FakeGpuProbe::Create(std::string_view spec,
                                                           std::string_view seed) {
  ASSIGN_OR_RETURN(std::vector<FakeGpuSpec> specs, ParseFakeGpuSpec(spec));
  return std::make_unique<FakeGpuProbe>(specs, seed);
}

Status FakeGpuProbe::CheckSet(int index, int64_t bytes, int64_t other) const {
  if (index < 0 || index >= static_cast<int>(slots_.size())) {
    return NotFoundError(fmt::format("no fake GPU with index {}", index));
  }
  if (bytes < 0) return InvalidArgumentError("memory must be >= 0");
  const int64_t total = slots_[index].device.memory_total;
  if (bytes > total - other) {
    return InvalidArgumentError(fmt::format(
        "GPU {} has {} bytes, {} in use elsewhere; cannot use {}", index, total, other, bytes));
  }
  return OkStatus();
}

Status FakeGpuProbe::SetUsedMemory(int index, int64_t bytes) {
  std::lock_guard lock(mu_);
  const int64_t other =
      index >= 0 && index < static_cast<int>(slots_.size()) ? slots_[index].external_used : 0;
  RETURN_IF_ERROR(CheckSet(index, bytes, other));
  slots_[index].managed_used = bytes;
  return OkStatus();
}

Status FakeGpuProbe::SetExternalMemory(int index, int64_t bytes) {
  std::lock_guard lock(mu_);
  const int64_t other =
      index >= 0 && index < static_cast<int>(slots_.size()) ? slots_[index].managed_used : 0;
  RETURN_IF_ERROR(CheckSet(index, bytes, other));
  slots_[index].external_used = bytes;
  return OkStatus();
}

void FakeGpuProbe::SetClaimedMemory(const std::map<int, int64_t>& bytes) {
  std::lock_guard lock(mu_);
  for (Slot& slot : slots_) {
    auto it = bytes.find(slot.device.index);
    const int64_t want = it == bytes.end() ? 0 : std::max<int64_t>(it->second, 0);
    slot.managed_used = std::min(want, slot.device.memory_total - slot.external_used);
  }
}

Result<std::vector<types::GpuDevice>> FakeGpuProbe::Probe() {
  std::lock_guard lock(mu_);
  const double step = static_cast<double>(probes_++);
  std::vector<types::GpuDevice> out;
  out.reserve(slots_.size());
  for (const Slot& slot : slots_) {
    types::GpuDevice g = slot.device;
    g.memory_used = slot.managed_used + slot.external_used;
    g.memory_used_external = slot.external_used;
    // A loaded engine keeps its GPU busy in this simulation (25-65%, moving); an idle one sits
    // near 0%. GPUs of one worker move out of phase.
    const double wave = std::sin(0.9 * step + 1.3 * g.index);
    g.utilization = slot.managed_used > 0 ? 45 + 20 * wave : 1.5 + 1.5 * wave;
    g.temperature = 32 + g.utilization * 0.5 + 1.5 * std::sin(0.37 * step + g.index);
    g.power = SimulatedPower(g.power_limit, g.utilization);
    const auto [max_sm, mem] = ClocksFor(g.name);
    g.sm_clock = std::round(kIdleSmClock + (max_sm - kIdleSmClock) * g.utilization / 100);
    g.memory_clock = mem;
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace segma::gpu
