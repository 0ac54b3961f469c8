#include "http/router.h"

namespace segma::http {

void Router::Add(bhttp::verb method, std::string pattern, Handler handler) {
  routes_.push_back(Route{method, std::move(pattern), std::move(handler)});
}

namespace {

// "/a/b/c" → {"a","b","c"}; "/" → {""}.
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

bool Router::MatchPattern(std::string_view pattern, std::string_view path,
                          std::map<std::string, std::string>* params) {
  if (pattern.empty() || path.empty() || pattern[0] != '/' || path[0] != '/') return false;
  thread_local std::vector<std::string_view> psegs, segs;
  Split(pattern, psegs);
  Split(path, segs);
  for (size_t i = 0; i < psegs.size(); ++i) {
    std::string_view p = psegs[i];
    const bool capture = p.size() >= 2 && p.front() == '{' && p.back() == '}';
    if (capture && p.size() > 5 && p.substr(p.size() - 4) == "...}") {
      // Rest-of-path capture: needs at least one non-empty segment.
      if (i >= segs.size() || segs[i].empty()) return false;
      if (params != nullptr) {
        const size_t offset = static_cast<size_t>(segs[i].data() - path.data());
        params->emplace(std::string(p.substr(1, p.size() - 5)), path.substr(offset));
      }
      return true;
    }
    if (i >= segs.size()) return false;
    if (capture) {
      if (segs[i].empty()) return false;
      if (params != nullptr) params->emplace(std::string(p.substr(1, p.size() - 2)), segs[i]);
    } else if (p != segs[i]) {
      return false;
    }
  }
  return psegs.size() == segs.size();
}

Router::MatchResult Router::Match(bhttp::verb method, std::string_view path, RequestContext& ctx,
                                  const Route*& route) const {
  bool path_known = false;
  for (const Route& r : routes_) {
    if (!MatchPattern(r.pattern, path, nullptr)) continue;
    path_known = true;
    if (r.method != method) continue;
    ctx.path_params.clear();
    MatchPattern(r.pattern, path, &ctx.path_params);
    ctx.route = r.pattern;
    route = &r;
    return MatchResult::kFound;
  }
  return path_known ? MatchResult::kMethodNotAllowed : MatchResult::kNotFound;
}

}  // namespace segma::http
