#include "api/worker_change_filter.h"

#include <initializer_list>
#include <string_view>

namespace segma::api {

namespace {

std::string_view StringField(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string_view(v->get_string()) : std::string_view();
}

bool IsOneOf(std::string_view key, std::initializer_list<std::string_view> keys) {
  for (std::string_view k : keys) {
    if (key == k) return true;
  }
  return false;
}

}  // namespace

bool WorkerChangeFilter::Changes(const Event& e) {
  if (e.resource != "workers") return false;
  if (e.type == Event::Type::kDeleted) {
    last_.erase(e.id);
    return true;
  }
  const size_t hash = std::hash<std::string>()(fingerprint_(e.data));
  auto [it, inserted] = last_.try_emplace(e.id, hash);
  if (inserted || e.type == Event::Type::kCreated) {
    it->second = hash;
    return true;
  }
  if (it->second == hash) return false;
  it->second = hash;
  return true;
}

std::string RoutingFingerprint(const json::object& worker) {
  std::string out(StringField(worker, "state"));
  out += '\n';
  out += StringField(worker, "address");
  return out;
}

std::string InventoryFingerprint(const json::object& worker) {
  // Skipped, not erased: json::object::erase moves the last key into the hole, so the order of
  // what remains would depend on which readings were present (sm_clock, processes).
  std::string out;
  const auto append = [&out](std::string_view key, const json::value& v) {
    out += key;
    out += '=';
    out += json::serialize(v);
    out += '\n';
  };
  for (const auto& [key, value] : worker) {
    if (IsOneOf(key, {"last_heartbeat_at", "updated_at"})) continue;
    if (key != "status" || !value.is_object()) {
      append(key, value);
      continue;
    }
    for (const auto& [skey, svalue] : value.get_object()) {
      if (IsOneOf(skey, {"cpu_utilization", "memory_used", "disk_used"})) continue;
      if (skey != "gpus" || !svalue.is_array()) {
        append(skey, svalue);
        continue;
      }
      for (const json::value& g : svalue.get_array()) {
        out += "gpu\n";
        if (!g.is_object()) {
          append("", g);
          continue;
        }
        for (const auto& [gkey, gvalue] : g.get_object()) {
          if (IsOneOf(gkey, {"memory_used", "memory_used_external", "utilization", "temperature",
                             "power", "sm_clock", "memory_clock", "processes", "slices"})) {
            continue;
          }
          append(gkey, gvalue);
        }
      }
    }
  }
  return out;
}

}  // namespace segma::api
