#pragma once

// Stand-alone gateway replicas (`segma gateway --server URL --token T`) and the server side they
// talk to (ADR 0009). A replica has no database: it follows the server's gateway state — the key
// table (secret hashes and precomputed decisions, never API key secrets), the route table with
// each engine's secret (which the replica sends upstream, ADR 0035) — through a
// long-poll watch of GET /internal/gateway/state, serves /v1 from memory exactly like the
// server's own gateway, and sends its usage records back with POST /internal/gateway/usage.
//
// Wire format of the state (JSON):
//   {"version": "K-R",  // opaque; pass it back as ?version= to wait for the next change
//    "keys":   [{"hash","id","name","project_id","user_id","scope","allowed_models"|null,
//                "expires_at_ms"|null,"revoked_at_ms"|null,"limits":{…},
//                "inference":{"code","message"}}],
//    "project_limits": [{"project_id","limits":{…}}],  // projects with some limit (ADR 0013)
//    "routes": [{"name","created_at","owned_by","deployments":[{"deployment_id","project_id",
//                "weight","upstream_model","replicas":[{"instance_id","base_url","healthy",
//                "engine_secret" (absent: the engine takes none)}]}]}]}
// Usage: {"records": [store::UsageRecord as JSON]}; the server inserts them idempotently by
// request id, so a batch retried after a lost answer is not counted twice.
// Limits ("limits", "project_limits": types::Limits as JSON) are optional on input, so that a
// replica accepts an older server's state (everything unlimited then). Each replica counts its
// own admissions: N replicas admit up to N times a per-minute limit (ADR 0013).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "gateway/gateway.h"
#include "gateway/key_table.h"
#include "gateway/route_table.h"
#include "gateway/usage_meter.h"
#include "store/store.h"

namespace segma::gateway {

// ---- codecs (shared by the server's endpoints and the replica) ---------------------------------

json::object KeyRecordToJson(const std::string& secret_hash, const KeyRecord& key);
// kInvalidArgument for a malformed entry.
Result<std::pair<std::string, KeyRecord>> KeyRecordFromJson(const json::value& v);
// The routes of a built table as plain specs (live counters are not part of the state).
json::array RoutesToJson(const RouteTable& table);
json::array ProjectLimitsToJson(const std::map<int64_t, types::Limits>& limits);
Result<std::map<int64_t, types::Limits>> ProjectLimitsFromJson(const json::value& v);
Result<RouteTable::Builder> RoutesFromJson(const json::value& v);
json::object UsageRecordToJson(const store::UsageRecord& r);
Result<store::UsageRecord> UsageRecordFromJson(const json::value& v);

// The version string of a gateway's state: changes whenever its keys or routes change.
std::string StateVersion(const Gateway& gateway);
// The whole state of `gateway` (server side), as documented above.
json::object StateToJson(const Gateway& gateway);

// ---- replica side ------------------------------------------------------------------------------

struct ReplicaOptions {
  std::string server_url;  // http://host:port of `segma server`/`start`
  std::string token;       // the server's gateway token (data dir file gateway_token)
  // How long the server holds a watch request open when nothing changes.
  std::chrono::seconds watch_timeout{20};
  std::chrono::milliseconds retry_pause{500};
};

// Keeps a Gateway's keys and routes equal to the server's. Thread-safe; runs one thread.
class ReplicaFollower {
 public:
  // `gateway` must outlive the follower; its KeyTable must have follow_store = false.
  ReplicaFollower(Gateway& gateway, ReplicaOptions options);
  ~ReplicaFollower();  // Stop()
  ReplicaFollower(const ReplicaFollower&) = delete;
  ReplicaFollower& operator=(const ReplicaFollower&) = delete;

  // Fetches the state once (synchronously; the error if the server cannot be reached or refuses
  // the token), then follows it in the background, retrying on errors.
  Status Start();
  void Stop();
  // Applies one state document. kInvalidArgument (nothing applied) if it is malformed.
  Status Apply(const json::value& state);
  // Number of states applied, for tests.
  uint64_t applied() const { return applied_.load(); }

 private:
  // One watch request; returns when the state changed (applied) or the server timed out.
  Status Poll();
  void Run();

  Gateway& gateway_;
  const ReplicaOptions options_;
  std::string version_;  // only the follower thread (and Start before it) touches it
  std::atomic<uint64_t> applied_{0};
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
};

// Sends usage batches to the server (POST /internal/gateway/usage). A failure is returned to the
// UsageMeter, which keeps the batch and retries, so records survive a server restart.
class RemoteUsageSink final : public UsageSink {
 public:
  explicit RemoteUsageSink(ReplicaOptions options) : options_(std::move(options)) {}
  // UsageSink
  Status Write(const std::vector<store::UsageRecord>& batch) override;

 private:
  const ReplicaOptions options_;
};

}  // namespace segma::gateway
