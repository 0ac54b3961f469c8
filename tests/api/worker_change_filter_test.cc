// WorkerChangeFilter: which worker events change what the route table and the controllers use.

#include "api/worker_change_filter.h"

#include <gtest/gtest.h>

#include "types/identity.h"

namespace segma::api {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

types::Worker Ready() {
  types::Worker w;
  w.id = 7;
  w.cluster_id = 1;
  w.name = "gpu-7";
  w.state = types::WorkerState::kReady;
  w.address = "10.0.0.7";
  w.port = 10150;
  w.status.cpu_count = 64;
  w.status.memory_total = 512 * kGiB;
  for (int g = 0; g < 2; ++g) {
    types::GpuDevice d;
    d.index = g;
    d.uuid = "GPU-" + std::to_string(g);
    d.name = "NVIDIA H200";
    d.memory_total = 141 * kGiB;
    d.links[1 - g] = "nvlink";
    w.status.gpus.push_back(d);
  }
  return w;
}

Event Updated(const types::Worker& w) {
  return Event{"workers", Event::Type::kUpdated, w.id, std::nullopt, types::ToJson(w)};
}

// A later heartbeat: new readings, a new heartbeat time, the same everything else.
types::Worker NextBeat(types::Worker w, int beat) {
  w.last_heartbeat_at = Timestamp(std::chrono::seconds(1'700'000'000 + beat));
  w.updated_at = *w.last_heartbeat_at;
  w.status.cpu_utilization = beat % 100;
  w.status.memory_used = beat * kGiB;
  for (types::GpuDevice& g : w.status.gpus) {
    g.memory_used = beat * kGiB;
    g.memory_used_external = kGiB;
    g.utilization = beat % 100;
    g.temperature = 40 + beat % 30;
    g.power = 300 + beat;
    g.sm_clock = 1900 + beat;
    g.processes = {types::GpuProcess{1234 + beat, beat * kGiB, true}};
  }
  return w;
}

TEST(WorkerChangeFilterTest, ReadingsAloneChangeNeitherFingerprint) {
  WorkerChangeFilter routing(RoutingFingerprint);
  WorkerChangeFilter inventory(InventoryFingerprint);
  const types::Worker w = Ready();
  // The first sighting of a worker counts as a change.
  EXPECT_TRUE(routing.Changes(Updated(w)));
  EXPECT_TRUE(inventory.Changes(Updated(w)));
  for (int beat = 1; beat <= 3; ++beat) {
    EXPECT_FALSE(routing.Changes(Updated(NextBeat(w, beat)))) << beat;
    EXPECT_FALSE(inventory.Changes(Updated(NextBeat(w, beat)))) << beat;
  }
}

TEST(WorkerChangeFilterTest, StateAndAddressChangeBoth) {
  WorkerChangeFilter routing(RoutingFingerprint);
  WorkerChangeFilter inventory(InventoryFingerprint);
  types::Worker w = Ready();
  ASSERT_TRUE(routing.Changes(Updated(w)));
  ASSERT_TRUE(inventory.Changes(Updated(w)));
  w.state = types::WorkerState::kNotReady;
  EXPECT_TRUE(routing.Changes(Updated(w)));
  EXPECT_TRUE(inventory.Changes(Updated(w)));
  w.state = types::WorkerState::kReady;
  EXPECT_TRUE(routing.Changes(Updated(w)));
  EXPECT_TRUE(inventory.Changes(Updated(w)));
  w.address = "10.0.0.8";
  EXPECT_TRUE(routing.Changes(Updated(w)));
  EXPECT_TRUE(inventory.Changes(Updated(w)));
}

TEST(WorkerChangeFilterTest, InventoryAndLabelsChangeOnlyWhatTheControllersUse) {
  WorkerChangeFilter routing(RoutingFingerprint);
  WorkerChangeFilter inventory(InventoryFingerprint);
  types::Worker w = Ready();
  ASSERT_TRUE(routing.Changes(Updated(w)));
  ASSERT_TRUE(inventory.Changes(Updated(w)));
  w.status.gpus.pop_back();  // a GPU fell off the bus
  EXPECT_FALSE(routing.Changes(Updated(w)));
  EXPECT_TRUE(inventory.Changes(Updated(w)));
  w.labels["zone"] = "b";
  EXPECT_FALSE(routing.Changes(Updated(w)));
  EXPECT_TRUE(inventory.Changes(Updated(w)));
  w.status.gpus[0].mig_enabled = true;
  EXPECT_TRUE(inventory.Changes(Updated(w)));
}

TEST(WorkerChangeFilterTest, CreatedAndDeletedWorkersAlwaysChangeOtherResourcesNever) {
  WorkerChangeFilter routing(RoutingFingerprint);
  types::Worker w = Ready();
  Event created = Updated(w);
  created.type = Event::Type::kCreated;
  EXPECT_TRUE(routing.Changes(created));
  EXPECT_FALSE(routing.Changes(Updated(w)));
  Event deleted = Updated(w);
  deleted.type = Event::Type::kDeleted;
  EXPECT_TRUE(routing.Changes(deleted));
  // Forgotten with its deletion: the next sighting of the id is a change again.
  EXPECT_TRUE(routing.Changes(Updated(w)));
  Event model{"models", Event::Type::kUpdated, 1, 1, json::object{{"state", "READY"}}};
  EXPECT_FALSE(routing.Changes(model));
}

}  // namespace
}  // namespace segma::api
