#pragma once

// IP addresses and CIDR ranges, IPv4 and IPv6: the allow-lists of API keys (allowed_cidrs) and
// the proxies whose forwarding headers are believed (--trusted-proxies). Pure and thread-safe.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace segma {

// An IPv4 or IPv6 address. An IPv4-mapped IPv6 address ("::ffff:192.0.2.1", what a dual-stack
// socket reports for an IPv4 peer) is the IPv4 address: it matches IPv4 ranges and prints as
// "192.0.2.1".
struct IpAddress {
  bool v6 = false;
  std::array<uint8_t, 16> bytes{};  // IPv4: the first 4

  int bits() const { return v6 ? 128 : 32; }
  // "192.0.2.1", "2001:db8::1" (RFC 5952 form).
  std::string ToString() const;
  bool operator==(const IpAddress&) const = default;
};

// Parses a literal address ("192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1"); nullopt for
// anything else (names, ports, brackets, zone ids, leading zeros in IPv4).
std::optional<IpAddress> ParseIpAddress(std::string_view text);

// A CIDR range: the address with its host bits zero and the prefix length.
struct CidrRange {
  IpAddress base;
  int prefix_len = 0;

  bool Contains(const IpAddress& address) const;
  // "10.0.0.0/8", "2001:db8::/32".
  std::string ToString() const;
  bool operator==(const CidrRange&) const = default;
};

// Parses "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128). kInvalidArgument with
// a message that quotes the text: not an address, a prefix length out of range, or host bits set
// ("10.1.2.3/8 has bits set beyond its /8 prefix; did you mean 10.0.0.0/8?").
Result<CidrRange> ParseCidr(std::string_view text);

// A list of ranges; an address matches if any range contains it.
class CidrSet {
 public:
  CidrSet() = default;
  explicit CidrSet(std::vector<CidrRange> ranges) : ranges_(std::move(ranges)) {}

  // "10.0.0.0/8, 192.168.1.1,2001:db8::/32" (commas, spaces around them allowed; empty: no
  // range). kInvalidArgument from ParseCidr for the first bad entry.
  static Result<CidrSet> ParseList(std::string_view comma_separated);

  bool Contains(const IpAddress& address) const;
  // False for text that is not an address.
  bool Contains(std::string_view address) const;
  bool empty() const { return ranges_.empty(); }
  const std::vector<CidrRange>& ranges() const { return ranges_; }

 private:
  std::vector<CidrRange> ranges_;
};

}  // namespace segma
