#include "common/cidr.h"

#include <algorithm>
#include <charconv>
#include <cstring>

#include <arpa/inet.h>
#include <fmt/format.h>

namespace segma {

namespace {

constexpr uint8_t kV4MappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Keeps the first `prefix_len` bits of `a`, zeroes the rest.
IpAddress Masked(const IpAddress& a, int prefix_len) {
  IpAddress out = a;
  for (int i = 0; i < 16; ++i) {
    const int keep = std::clamp(prefix_len - i * 8, 0, 8);
    out.bytes[i] &= static_cast<uint8_t>(0xff00 >> keep);
  }
  return out;
}

}  // namespace

std::string IpAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (::inet_ntop(v6 ? AF_INET6 : AF_INET, bytes.data(), buf, sizeof(buf)) == nullptr) return "";
  return buf;
}

std::optional<IpAddress> ParseIpAddress(std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  char buf[INET6_ADDRSTRLEN] = {};
  std::memcpy(buf, text.data(), text.size());
  IpAddress a;
  if (text.find(':') == std::string_view::npos) {
    if (::inet_pton(AF_INET, buf, a.bytes.data()) != 1) return std::nullopt;
    return a;
  }
  if (::inet_pton(AF_INET6, buf, a.bytes.data()) != 1) return std::nullopt;
  if (std::memcmp(a.bytes.data(), kV4MappedPrefix, sizeof(kV4MappedPrefix)) == 0) {
    IpAddress v4;
    std::memcpy(v4.bytes.data(), a.bytes.data() + 12, 4);
    return v4;
  }
  a.v6 = true;
  return a;
}

bool CidrRange::Contains(const IpAddress& address) const {
  if (address.v6 != base.v6) return false;
  return Masked(address, prefix_len) == base;
}

std::string CidrRange::ToString() const {
  return fmt::format("{}/{}", base.ToString(), prefix_len);
}

Result<CidrRange> ParseCidr(std::string_view text) {
  const std::string_view t = TrimSpaces(text);
  const size_t slash = t.find('/');
  const std::string_view addr_text = t.substr(0, slash);
  const bool mapped_text = addr_text.find(':') != std::string_view::npos;
  std::optional<IpAddress> addr = ParseIpAddress(addr_text);
  if (!addr) {
    return InvalidArgumentError(
        fmt::format("'{}' is not an IP address or CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32)",
                    t.substr(0, 64)));
  }
  CidrRange r;
  r.base = *addr;
  r.prefix_len = addr->bits();
  if (slash != std::string_view::npos) {
    const std::string_view len_text = t.substr(slash + 1);
    int len = -1;
    auto [ptr, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
    // An IPv4-mapped IPv6 range counts its prefix over 128 bits.
    const int max_len = mapped_text && !addr->v6 ? 128 : addr->bits();
    if (len_text.empty() || ec != std::errc() || ptr != len_text.data() + len_text.size() ||
        len < 0 || len > max_len) {
      return InvalidArgumentError(
          fmt::format("'{}' has a bad prefix length (0 to {})", t.substr(0, 64), max_len));
    }
    if (max_len == 128 && !addr->v6) {
      if (len < 96) {
        return InvalidArgumentError(
            fmt::format("'{}' is wider than the IPv4-mapped range ::ffff:0:0/96", t.substr(0, 64)));
      }
      len -= 96;
    }
    r.prefix_len = len;
  }
  const IpAddress masked = Masked(r.base, r.prefix_len);
  if (!(masked == r.base)) {
    return InvalidArgumentError(
        fmt::format("'{}' has bits set beyond its /{} prefix; did you mean {}/{}?", t.substr(0, 64),
                    r.prefix_len, masked.ToString(), r.prefix_len));
  }
  return r;
}

Result<CidrSet> CidrSet::ParseList(std::string_view comma_separated) {
  std::vector<CidrRange> ranges;
  std::string_view rest = comma_separated;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string_view item = TrimSpaces(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (item.empty()) continue;
    ASSIGN_OR_RETURN(CidrRange r, ParseCidr(item));
    ranges.push_back(r);
  }
  return CidrSet(std::move(ranges));
}

bool CidrSet::Contains(const IpAddress& address) const {
  for (const CidrRange& r : ranges_) {
    if (r.Contains(address)) return true;
  }
  return false;
}

bool CidrSet::Contains(std::string_view address) const {
  std::optional<IpAddress> a = ParseIpAddress(address);
  return a && Contains(*a);
}

}  // namespace segma
