#include "http/forwarded.h"

#include <algorithm>
#include <cctype>
#include <vector>

namespace segma::http {

namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Splits `value` at `sep` outside double quotes (RFC 7239 quoted strings).
void SplitOutsideQuotes(std::string_view value, char sep, std::vector<std::string_view>& out) {
  bool quoted = false;
  size_t start = 0;
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] == '"') quoted = !quoted;
    if (value[i] == '\\' && quoted) {
      ++i;
      continue;
    }
    if (value[i] == sep && !quoted) {
      out.push_back(Trim(value.substr(start, i - start)));
      start = i + 1;
    }
  }
  out.push_back(Trim(value.substr(start)));
}

std::string_view Unquote(std::string_view v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') return v.substr(1, v.size() - 2);
  return v;
}

// One hop: "192.0.2.1", "192.0.2.1:80", "2001:db8::1", "[2001:db8::1]", "[2001:db8::1]:4711".
std::optional<IpAddress> ParseHop(std::string_view hop) {
  hop = Unquote(Trim(hop));
  if (hop.starts_with('[')) {
    const size_t close = hop.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const std::string_view rest = hop.substr(close + 1);
    if (!rest.empty() && !rest.starts_with(':')) return std::nullopt;
    std::optional<IpAddress> a = ParseIpAddress(hop.substr(1, close - 1));
    return a;
  }
  const size_t colon = hop.find(':');
  if (colon != std::string_view::npos && hop.find(':', colon + 1) == std::string_view::npos) {
    hop = hop.substr(0, colon);  // IPv4 with a port
  }
  return ParseIpAddress(hop);
}

// The value of parameter `name` in one Forwarded element ("for=1.2.3.4;proto=https").
std::optional<std::string_view> ForwardedParam(std::string_view element, std::string_view name) {
  std::vector<std::string_view> pairs;
  SplitOutsideQuotes(element, ';', pairs);
  for (std::string_view p : pairs) {
    const size_t eq = p.find('=');
    if (eq == std::string_view::npos) continue;
    if (EqualsIgnoreCase(Trim(p.substr(0, eq)), name)) return Unquote(Trim(p.substr(eq + 1)));
  }
  return std::nullopt;
}

// The values of every field `name` of `req`, in order.
template <typename Name>
std::vector<std::string_view> FieldValues(const Request& req, Name name) {
  std::vector<std::string_view> out;
  auto [it, end] = req.equal_range(name);
  for (; it != end; ++it) out.push_back(it->value());
  return out;
}

std::optional<std::string> NormalisedProto(std::string_view v) {
  v = Trim(v);
  if (EqualsIgnoreCase(v, "https")) return "https";
  if (EqualsIgnoreCase(v, "http")) return "http";
  return std::nullopt;
}

}  // namespace

ClientInfo ResolveClient(const Request& req, std::string_view peer, const CidrSet& trusted) {
  ClientInfo out;
  std::optional<IpAddress> current = ParseIpAddress(peer);
  out.address = current ? current->ToString() : std::string(peer);
  if (!current || !trusted.Contains(*current)) return out;

  // The hops, left (the client as the first proxy saw it) to right (the peer's own view).
  std::vector<std::string_view> hops;
  for (std::string_view v : FieldValues(req, "X-Forwarded-For")) SplitOutsideQuotes(v, ',', hops);
  std::vector<std::string_view> elements;
  const bool use_forwarded = hops.empty();
  for (std::string_view v : FieldValues(req, bhttp::field::forwarded)) {
    SplitOutsideQuotes(v, ',', elements);
  }
  if (use_forwarded) {
    for (std::string_view e : elements) {
      // An element without for= is a hop we cannot read: it ends the walk there.
      hops.push_back(ForwardedParam(e, "for").value_or(std::string_view()));
    }
  }
  int examined = 0;
  for (auto it = hops.rbegin(); it != hops.rend() && examined < kMaxForwardedHops;
       ++it, ++examined) {
    std::optional<IpAddress> hop = ParseHop(*it);
    if (!hop) break;
    current = hop;
    if (!trusted.Contains(*current)) break;
  }
  out.address = current->ToString();

  // The nearest proxy's word on the scheme: the last value it set or appended.
  std::optional<std::string_view> proto;
  for (std::string_view v : FieldValues(req, "X-Forwarded-Proto")) {
    std::vector<std::string_view> values;
    SplitOutsideQuotes(v, ',', values);
    proto = values.back();
  }
  if (!proto && !elements.empty()) proto = ForwardedParam(elements.back(), "proto");
  if (proto) out.proto = NormalisedProto(*proto);
  return out;
}

}  // namespace segma::http
