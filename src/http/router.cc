#include "http/router.h"

#include <algorithm>

namespace segma::http {

namespace {

// "/a/b/c" → {"a","b","c"}; "/" → {""}. `s` starts with "/".
void Split(std::string_view s, std::vector<std::string_view>& out) {
  out.clear();
  s.remove_prefix(1);
  for (;;) {
    size_t slash = s.find('/');
    out.push_back(s.substr(0, slash));
    if (slash == std::string_view::npos) return;
    s.remove_prefix(slash + 1);
  }
}

}  // namespace

void Router::Add(bhttp::verb method, std::string pattern, Handler handler) {
  std::vector<Segment> segments;
  if (!pattern.empty() && pattern[0] == '/') {
    std::vector<std::string_view> parts;
    Split(pattern, parts);
    for (std::string_view p : parts) {
      const bool capture = p.size() >= 2 && p.front() == '{' && p.back() == '}';
      if (capture && p.size() > 5 && p.ends_with("...}")) {
        segments.push_back({Segment::Kind::kRest, std::string(p.substr(1, p.size() - 5))});
      } else if (capture) {
        segments.push_back({Segment::Kind::kCapture, std::string(p.substr(1, p.size() - 2))});
      } else {
        segments.push_back({Segment::Kind::kLiteral, std::string(p)});
      }
    }
  }
  routes_.push_back(Route{method, std::move(pattern), std::move(handler), std::move(segments)});
}

void Router::SetFallback(Handler handler, std::vector<std::string> reserved) {
  fallback_ = Route{bhttp::verb::get, "fallback", std::move(handler), {}};
  reserved_ = std::move(reserved);
}

bool Router::MatchSegments(const Route& route, std::string_view path,
                           const std::vector<std::string_view>& segs,
                           std::map<std::string, std::string>* params) {
  const std::vector<Segment>& psegs = route.segments;
  if (psegs.empty()) return false;
  // Without a rest capture the counts must agree; check that before comparing any text.
  if (psegs.back().kind != Segment::Kind::kRest && psegs.size() != segs.size()) return false;
  for (size_t i = 0; i < psegs.size(); ++i) {
    const Segment& p = psegs[i];
    if (i >= segs.size()) return false;
    switch (p.kind) {
      case Segment::Kind::kLiteral:
        if (p.text != segs[i]) return false;
        break;
      case Segment::Kind::kCapture:
        if (segs[i].empty()) return false;
        if (params != nullptr) params->emplace(p.text, segs[i]);
        break;
      case Segment::Kind::kRest: {
        // Rest-of-path capture: needs at least one non-empty segment.
        if (segs[i].empty()) return false;
        if (params != nullptr) {
          const size_t offset = static_cast<size_t>(segs[i].data() - path.data());
          params->emplace(p.text, path.substr(offset));
        }
        return true;
      }
    }
  }
  return true;
}

Router::MatchResult Router::Match(bhttp::verb method, std::string_view path, RequestContext& ctx,
                                  const Route*& route) const {
  if (path.empty() || path[0] != '/') return MatchResult::kNotFound;
  thread_local std::vector<std::string_view> segs;
  Split(path, segs);
  for (const Route& r : routes_) {
    if (r.method != method || !MatchSegments(r, path, segs, nullptr)) continue;
    ctx.path_params.clear();
    MatchSegments(r, path, segs, &ctx.path_params);
    ctx.route = r.pattern;
    route = &r;
    return MatchResult::kFound;
  }
  for (const Route& r : routes_) {
    if (MatchSegments(r, path, segs, nullptr)) return MatchResult::kMethodNotAllowed;
  }
  if (fallback_ && method == bhttp::verb::get &&
      std::none_of(reserved_.begin(), reserved_.end(), [path](const std::string& prefix) {
        return path.starts_with(prefix) &&
               (path.size() == prefix.size() || path[prefix.size()] == '/');
      })) {
    ctx.path_params.clear();
    ctx.route = fallback_->pattern;
    route = &*fallback_;
    return MatchResult::kFound;
  }
  return MatchResult::kNotFound;
}

}  // namespace segma::http
