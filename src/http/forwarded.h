#pragma once

// The real client of a request behind reverse proxies and load balancers (an ADC, nginx):
// X-Forwarded-For, RFC 7239 Forwarded and X-Forwarded-Proto are believed only from peers in the
// trusted set (--trusted-proxies), the way nginx's realip module does with
// real_ip_recursive on. docs/adr/0036-sign-in-lockout-and-trusted-proxies.md.

#include <optional>
#include <string>
#include <string_view>

#include "common/cidr.h"
#include "http/message.h"

namespace segma::http {

// At most this many forwarded addresses are examined, from the right.
inline constexpr int kMaxForwardedHops = 32;

struct ClientInfo {
  // The client's address (normalised: "192.0.2.1", "2001:db8::1"); the peer's own when it is not
  // trusted or said nothing believable.
  std::string address;
  // "http" or "https" as the nearest trusted proxy reported it (X-Forwarded-Proto, else the
  // proto= of Forwarded's last element); nullopt when the peer is not trusted or said nothing.
  std::optional<std::string> proto;
};

// Resolves the client of `req`, which arrived from `peer` (the socket's remote address).
// Unless `peer` is in `trusted`, the headers are ignored and the peer is the client. Otherwise
// the addresses of X-Forwarded-For (every such header, in order; or, when there is none, the
// for= of every Forwarded element) are walked from the right, skipping addresses in `trusted`:
// the first one outside it is the client. If every address is trusted, the leftmost examined
// one is; an entry that is not an address ("unknown", an obfuscated name, garbage) ends the walk
// at the last address read. Ports and IPv6 brackets are accepted ("[2001:db8::1]:4711",
// "192.0.2.1:80"). Pure; thread-safe.
ClientInfo ResolveClient(const Request& req, std::string_view peer, const CidrSet& trusted);

}  // namespace segma::http
