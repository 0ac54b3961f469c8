#include "common/event_bus.h"

#include <algorithm>

namespace segma {

std::string_view EventTypeName(Event::Type t) {
  switch (t) {
    case Event::Type::kCreated:
      return "CREATED";
    case Event::Type::kUpdated:
      return "UPDATED";
    case Event::Type::kDeleted:
      return "DELETED";
  }
  return "UPDATED";
}

Subscription::~Subscription() { bus_->Remove(this); }

std::optional<Event> Subscription::TryPop() {
  std::lock_guard lock(mu_);
  if (queue_.empty()) return std::nullopt;
  Event e = std::move(queue_.front());
  queue_.pop_front();
  return e;
}

bool Subscription::overflowed() const {
  std::lock_guard lock(mu_);
  return overflowed_;
}

void Subscription::SetNotifier(std::function<void()> notify) {
  std::lock_guard lock(mu_);
  notify_ = std::move(notify);
}

void Subscription::Push(const Event& e) {
  std::function<void()> notify;
  {
    std::lock_guard lock(mu_);
    if (overflowed_) return;
    if (queue_.size() >= kMaxQueued) {
      overflowed_ = true;
      queue_.clear();
    } else {
      queue_.push_back(e);
    }
    notify = notify_;
  }
  if (notify) notify();
}

std::shared_ptr<Subscription> EventBus::Subscribe(std::string resource) {
  std::shared_ptr<Subscription> s(new Subscription(this, std::move(resource)));
  std::lock_guard lock(mu_);
  subs_.push_back(s.get());
  return s;
}

void EventBus::Publish(const Event& event) {
  // Publishing under mu_ keeps a subscription alive while it is pushed to (its destructor takes
  // mu_ in Remove); notifiers must therefore never subscribe or unsubscribe.
  std::lock_guard lock(mu_);
  for (Subscription* s : subs_) {
    if (s->resource_.empty() || s->resource_ == event.resource) s->Push(event);
  }
}

void EventBus::Remove(Subscription* s) {
  std::lock_guard lock(mu_);
  subs_.erase(std::remove(subs_.begin(), subs_.end(), s), subs_.end());
}

}  // namespace segma
