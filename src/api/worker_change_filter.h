#pragma once

// Which "workers" events change what one of their consumers acts on (issue 17). Every heartbeat
// updates its worker's row, and so publishes an event; most heartbeats change only readings
// (utilisation, memory in use, temperature, ...). A consumer whose work grows with the cluster
// (the gateway's route table, the controller pass) reacts only to the events whose fingerprint,
// the fields it uses taken from the event's public view of the worker, differs from the last one
// it saw for that worker. Readings left out of a fingerprint reach that consumer at its next
// pass for another reason (the controllers' sweep).

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>

#include "common/event_bus.h"
#include "common/json.h"

namespace segma::api {

class WorkerChangeFilter {
 public:
  // The fields of a worker's public JSON view (types::ToJson(Worker)) that the consumer uses.
  using Fingerprint = std::function<std::string(const json::object& worker)>;

  explicit WorkerChangeFilter(Fingerprint fingerprint) : fingerprint_(std::move(fingerprint)) {}

  // True for a created or deleted worker and for an update whose fingerprint differs from the
  // last one seen for the worker (or is the first seen for it); false for an update that leaves
  // the fingerprint as it was, and for events of other resources. Not thread-safe: one consumer
  // calls it, in the order the events were published.
  bool Changes(const Event& e);

 private:
  Fingerprint fingerprint_;
  std::unordered_map<int64_t, size_t> last_;  // worker id → hash of its last fingerprint
};

// What a route's replica takes from its worker: the state (READY is healthy) and the address.
std::string RoutingFingerprint(const json::object& worker);

// Everything but the readings a heartbeat refreshes: state, labels, maintenance, address, port
// and the inventory (CPUs, memory and disk sizes, each GPU with its memory size, MIG layout and
// links). Left out: last_heartbeat_at, updated_at, CPU utilisation, memory and disk in use, and
// each GPU's memory in use (also external), utilisation, temperature, power, clocks and
// processes.
std::string InventoryFingerprint(const json::object& worker);

}  // namespace segma::api
