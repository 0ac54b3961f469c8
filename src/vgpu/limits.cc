#include "vgpu/limits.h"

#include <charconv>
#include <cstdio>

namespace segma::vgpu {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<int64_t> ParseBytes(std::string_view v) {
  int shift = 0;
  if (!v.empty()) {
    switch (v.back()) {
      case 'K':
      case 'k':
        shift = 10;
        break;
      case 'M':
      case 'm':
        shift = 20;
        break;
      case 'G':
      case 'g':
        shift = 30;
        break;
      case 'T':
      case 't':
        shift = 40;
        break;
      default:
        break;
    }
    if (shift != 0) v.remove_suffix(1);
  }
  int64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || n <= 0) return std::nullopt;
  if (n > (INT64_MAX >> shift)) return std::nullopt;
  return n << shift;
}

}  // namespace

std::optional<std::vector<DeviceLimit>> ParseLimits(std::string_view text, std::string* error) {
  std::vector<DeviceLimit> out;
  text = Trim(text);
  while (!text.empty()) {
    const size_t comma = text.find(',');
    const std::string_view entry = Trim(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    const size_t eq = entry.find('=');
    const std::string_view key = eq == std::string_view::npos ? entry : Trim(entry.substr(0, eq));
    if (eq == std::string_view::npos || key.empty()) {
      *error = "bad limit '" + std::string(entry) + "': want <device ordinal or uuid>=<bytes>";
      return std::nullopt;
    }
    const std::optional<int64_t> bytes = ParseBytes(Trim(entry.substr(eq + 1)));
    if (!bytes) {
      *error = "bad limit '" + std::string(entry) + "': the value is not a positive byte count";
      return std::nullopt;
    }
    for (const DeviceLimit& l : out) {
      if (l.key == key) {
        *error = "duplicate limit for device " + std::string(key);
        return std::nullopt;
      }
    }
    if (out.size() == kMaxDevices) {
      *error = "more than " + std::to_string(kMaxDevices) + " limits";
      return std::nullopt;
    }
    out.push_back({std::string(key), *bytes});
  }
  return out;
}

namespace {
// A UUID without its "GPU-" or "MIG-" prefix (CUDA returns a MIG device's UUID as bare bytes).
std::string_view UuidDigits(std::string_view u) {
  if (u.starts_with("GPU-") || u.starts_with("MIG-")) u.remove_prefix(4);
  return u;
}

}  // namespace

int FindLimit(const std::vector<DeviceLimit>& limits, int ordinal, std::string_view uuid) {
  if (!uuid.empty()) {
    for (size_t i = 0; i < limits.size(); ++i) {
      const std::string_view key = limits[i].key;
      if ((key.starts_with("GPU-") || key.starts_with("MIG-")) &&
          UuidDigits(key) == UuidDigits(uuid)) {
        return static_cast<int>(i);
      }
    }
  }
  const std::string ord = std::to_string(ordinal);
  for (size_t i = 0; i < limits.size(); ++i) {
    if (limits[i].key == ord) return static_cast<int>(i);
  }
  return -1;
}

std::string FormatUuid(const char bytes[16]) {
  char buf[64];
  const auto* b = reinterpret_cast<const unsigned char*>(bytes);
  std::snprintf(buf, sizeof(buf),
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                b[14], b[15]);
  return buf;
}

std::optional<std::vector<ComputeShare>> ParseComputeShares(std::string_view text,
                                                            std::string* error) {
  std::vector<ComputeShare> out;
  text = Trim(text);
  while (!text.empty()) {
    const size_t comma = text.find(',');
    const std::string_view entry = Trim(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    const size_t eq = entry.find('=');
    const std::string_view key = eq == std::string_view::npos ? entry : Trim(entry.substr(0, eq));
    const std::string_view value =
        eq == std::string_view::npos ? std::string_view() : Trim(entry.substr(eq + 1));
    int ordinal = -1;
    auto [kend, kec] = std::from_chars(key.data(), key.data() + key.size(), ordinal);
    if (eq == std::string_view::npos || key.empty() || kec != std::errc() ||
        kend != key.data() + key.size() || ordinal < 0 || ordinal >= kMaxDevices) {
      *error = "bad share '" + std::string(entry) + "': want <device ordinal 0-" +
               std::to_string(kMaxDevices - 1) + ">=<percent 1-100>";
      return std::nullopt;
    }
    int percent = 0;
    auto [vend, vec] = std::from_chars(value.data(), value.data() + value.size(), percent);
    if (value.empty() || vec != std::errc() || vend != value.data() + value.size() || percent < 1 ||
        percent > 100) {
      *error = "bad share '" + std::string(entry) + "': the value is not a percent from 1 to 100";
      return std::nullopt;
    }
    for (const ComputeShare& c : out) {
      if (c.ordinal == ordinal) {
        *error = "duplicate share for device " + std::to_string(ordinal);
        return std::nullopt;
      }
    }
    out.push_back({ordinal, percent});
  }
  return out;
}

}  // namespace segma::vgpu
