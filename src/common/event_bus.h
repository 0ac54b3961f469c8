#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/json.h"

namespace segma {

// A change to one resource, as watch streams deliver it.
struct Event {
  enum class Type { kCreated, kUpdated, kDeleted };
  std::string resource;  // "workers", "models", ... (the REST collection name)
  Type type = Type::kUpdated;
  int64_t id = 0;
  std::optional<int64_t> project_id;  // for RBAC filtering of project-scoped resources
  json::object data;                  // the public JSON view, as GET returns it
};

std::string_view EventTypeName(Event::Type t);  // "CREATED" | "UPDATED" | "DELETED"

class EventBus;

// One subscriber's queue. Bounded: when a slow subscriber falls `kMaxQueued` events behind, it is
// marked overflowed and must re-list (watch streams end, clients reconnect). Thread-safe.
class Subscription {
 public:
  static constexpr size_t kMaxQueued = 10'000;
  ~Subscription();

  // Pops the next event, if any.
  std::optional<Event> TryPop();
  bool overflowed() const;
  // `notify` runs (on the publisher's thread, without locks held) after each publish that made
  // the queue non-empty. Use it to wake an asynchronous waiter.
  void SetNotifier(std::function<void()> notify);

 private:
  friend class EventBus;
  Subscription(EventBus* bus, std::string resource) : bus_(bus), resource_(std::move(resource)) {}
  void Push(const Event& e);

  EventBus* bus_;
  const std::string resource_;  // empty: every resource
  mutable std::mutex mu_;
  std::deque<Event> queue_;
  bool overflowed_ = false;
  std::function<void()> notify_;
};

// In-process publish/subscribe of resource changes. Thread-safe. Must outlive its subscriptions.
class EventBus {
 public:
  // Subscribes to events of `resource` ("" for all). Unsubscribes when the pointer is released.
  std::shared_ptr<Subscription> Subscribe(std::string resource);
  void Publish(const Event& event);

 private:
  friend class Subscription;
  void Remove(Subscription* s);

  std::mutex mu_;
  std::vector<Subscription*> subs_;
};

}  // namespace segma
