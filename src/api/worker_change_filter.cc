#include "api/worker_change_filter.h"

#include <initializer_list>
#include <string_view>

namespace segma::api {

namespace {

std::string_view StringField(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string_view(v->get_string()) : std::string_view();
}

void Erase(json::object& o, std::initializer_list<std::string_view> keys) {
  for (std::string_view k : keys) o.erase(k);
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
  json::object o = worker;
  Erase(o, {"last_heartbeat_at", "updated_at"});
  if (json::value* status = o.if_contains("status"); status != nullptr && status->is_object()) {
    json::object& s = status->get_object();
    Erase(s, {"cpu_utilization", "memory_used", "disk_used"});
    if (json::value* gpus = s.if_contains("gpus"); gpus != nullptr && gpus->is_array()) {
      for (json::value& g : gpus->get_array()) {
        if (!g.is_object()) continue;
        Erase(g.get_object(), {"memory_used", "memory_used_external", "utilization", "temperature",
                               "power", "sm_clock", "memory_clock", "processes"});
      }
    }
  }
  return json::serialize(o);
}

}  // namespace segma::api
