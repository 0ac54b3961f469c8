#pragma once

// The gateway's in-memory view of API keys: Sha256Hex(secret) → key record, so that no request
// touches the store, and of every project's gateway limits (ADR 0013). Loaded whole at Start(),
// kept current by EventBus events ("api-keys", "users", "project-members": each makes a
// background thread re-read the affected keys from the store; "projects": that project's limits),
// and reloaded whole every `full_reload_every` as a safety net (and after a subscription
// overflow). KeyTableLimitsSource answers the Limiter from it. Expiry is checked against the Clock
// on every lookup, so it is exact; revocation and other changes take effect as soon as the
// background thread has applied the event (well under a second).
//
// Lookups read an immutable snapshot (std::shared_ptr<const Snapshot>, swapped atomically):
// lock-free for readers apart from the shared_ptr copy.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/cidr.h"
#include "common/clock.h"
#include "common/event_bus.h"
#include "common/status.h"
#include "gateway/limits.h"
#include "store/store.h"
#include "types/identity.h"

namespace segma::gateway {

// What the gateway needs to know about one key, precomputed off the hot path.
struct KeyRecord {
  int64_t id = 0;
  std::string name;
  int64_t project_id = 0;
  int64_t user_id = 0;
  types::ApiKeyScope scope = types::ApiKeyScope::kInference;
  std::optional<std::vector<std::string>> allowed_models;  // nullopt: every model
  std::optional<Timestamp> expires_at;
  std::optional<Timestamp> revoked_at;
  types::Limits limits;  // the key's own gateway limits
  // The client ranges the key may be used from; nullopt: any address.
  std::optional<CidrSet> allowed_cidrs;
  // Why the key may not run inference at all although it is valid (wrong scope, its creator is
  // no longer a member of the project, ...): OK or kPermissionDenied. kUnauthenticated when the
  // creator is disabled or gone.
  Status inference;

  bool AllowsModel(std::string_view model) const;
  // Whether the key may be used from client `address` (the real one, behind trusted proxies).
  bool AllowsAddress(std::string_view address) const;
};

// `cidrs` (an API key's stored allowed_cidrs) as a set; nullopt stays nullopt. An entry that does
// not parse is left out: the set only narrows.
std::optional<CidrSet> AllowedCidrSet(const std::optional<std::vector<std::string>>& cidrs);

struct KeyTableOptions {
  std::chrono::milliseconds full_reload_every{60'000};
  // false: the table never reads the store or subscribes to events; its contents come only from
  // Replace() (a `segma gateway` replica following the server, see replica.h).
  bool follow_store = true;
};

// Thread-safe. `store`, `bus` and `clock` must outlive the table.
class KeyTable {
 public:
  KeyTable(store::Store& store, EventBus& bus, const Clock& clock, KeyTableOptions options = {});
  ~KeyTable();
  KeyTable(const KeyTable&) = delete;
  KeyTable& operator=(const KeyTable&) = delete;

  // Subscribes to events, loads every key (kUnavailable etc. from the store: the table stays
  // empty and the caller may retry) and starts the background thread.
  Status Start();
  // Stops the background thread. Lookups keep answering from the last snapshot.
  void Stop();

  // Reloads every key now (synchronously). Thread-safe.
  Status Reload();

  // Resolves a bearer secret: the key, or kUnauthenticated ("invalid API key", "API key
  // expired", "API key revoked", or the record's own kUnauthenticated reason). Never touches the
  // store. Cheap: one SHA-256 and one hash lookup.
  Result<std::shared_ptr<const KeyRecord>> Authenticate(std::string_view secret) const;
  // By Sha256Hex(secret); nullptr if unknown. For tests.
  std::shared_ptr<const KeyRecord> Find(const std::string& secret_hash) const;
  // Every key as (Sha256Hex(secret), record), by hash. For the replicas' state (replica.h).
  std::vector<std::pair<std::string, std::shared_ptr<const KeyRecord>>> All() const;
  // Replaces the whole table with `records` ((secret hash, record) pairs) and the projects'
  // limits, and bumps version(). For tables with follow_store = false. Thread-safe.
  void Replace(std::vector<std::pair<std::string, KeyRecord>> records,
               std::map<int64_t, types::Limits> project_limits = {});
  // The gateway limits of key `key_id` / project `project_id` (unlimited if unknown). From
  // memory; thread-safe.
  types::Limits KeyLimits(int64_t key_id) const;
  types::Limits ProjectLimits(int64_t project_id) const;
  // Every project with limits, by id. For the replicas' state.
  std::map<int64_t, types::Limits> AllProjectLimits() const;
  size_t size() const;
  // Incremented after every applied change (event batch or reload). For tests.
  uint64_t version() const { return version_.load(); }

 private:
  struct Snapshot {
    std::unordered_map<std::string, std::shared_ptr<const KeyRecord>> by_hash;
    std::unordered_map<int64_t, std::string> hash_by_id;
    std::map<int64_t, types::Limits> project_limits;  // only projects with some limit
  };
  // Per-user facts shared by all of that user's keys, cached within one reload.
  struct Owner {
    Status active;  // kUnauthenticated if disabled or deleted
    bool is_admin = false;
    std::map<int64_t, types::ProjectRole> roles;
  };

  Result<Owner> LoadOwner(int64_t user_id);
  std::shared_ptr<const KeyRecord> MakeRecord(const types::ApiKey& key, const Owner& owner) const;
  void Run();
  // Re-reads the given keys and all keys of the given users, then publishes a new snapshot.
  Status Apply(const std::set<int64_t>& key_ids, const std::set<int64_t>& user_ids,
               const std::set<int64_t>& project_ids);
  Status LoadProjectLimits(Snapshot& snap);
  void Publish(std::shared_ptr<const Snapshot> snapshot);
  std::shared_ptr<const Snapshot> Current() const;

  store::Store& store_;
  EventBus& bus_;
  const Clock& clock_;
  const KeyTableOptions options_;

  std::atomic<std::shared_ptr<const Snapshot>> snapshot_;
  std::atomic<uint64_t> version_{0};
  std::mutex reload_mu_;  // serialises writers of snapshot_

  std::vector<std::shared_ptr<Subscription>> subs_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool wake_ = false;      // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

// The limits stored with keys and projects, as the Limiter asks for them: from the table's
// memory, no store access. A change applied to the table applies to the next admission.
class KeyTableLimitsSource final : public LimitsSource {
 public:
  explicit KeyTableLimitsSource(const KeyTable& table) : table_(table) {}
  // LimitsSource
  LimitConfig ForKey(int64_t key_id) const override { return table_.KeyLimits(key_id); }
  LimitConfig ForProject(int64_t project_id) const override {
    return table_.ProjectLimits(project_id);
  }

 private:
  const KeyTable& table_;
};

}  // namespace segma::gateway
