#pragma once

// The control plane's persistent state, behind one interface: SQLite today (sqlite/sqlite_store.h),
// PostgreSQL later. Everything here is synchronous; callers on the I/O threads run it on the
// blocking thread pool (STYLE §11).
//
// Conventions shared by every method:
//  - kNotFound       "worker 42 not found": the row (or a row it refers to) does not exist.
//  - kAlreadyExists  "project 'x' already exists": a unique key is taken.
//  - kInvalidArgument a ListOptions field is malformed (unknown sort field, page < 1, ...).
//  - kFailedPrecondition the change would break a reference (e.g. deleting a cluster that still
//                    has workers).
//  - kUnavailable    the database is busy or failed to read/write (safe to retry).
//  - kInternal       a stored row could not be decoded (a bug or a corrupted database).
// A failed mutation changes nothing: multi-statement changes run in one transaction.
//
// Events: every successful mutation of a public resource publishes one Event per changed row on
// the EventBus given at construction, after the commit, with `resource` = the REST collection
// name ("users", "projects", "project-members", "api-keys", "clusters", "workers", "models",
// "model-routes", ...), `project_id`
// for rows that belong to a project, `id` = the row id (the user id for project members) and
// `data` = types::ToJson(row). Cascaded deletes publish kDeleted for each removed child row that is
// itself a resource (api keys, project members). Sessions and TouchApiKey publish nothing.
//
// Timestamps: created_at / updated_at are set by the store from its Clock; values in the rows
// passed to Create* are ignored.
//
// Thread-safety: every method may be called concurrently from any thread.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "types/identity.h"
#include "types/model.h"
#include "types/model_file.h"
#include "types/model_route.h"
#include "types/worker.h"

namespace segma::store {

struct ListOptions {
  static constexpr int kMaxPerPage = 500;

  int page = 1;       // 1-based; < 1 is kInvalidArgument
  int per_page = 50;  // 1..kMaxPerPage; larger values are clamped to kMaxPerPage, < 1 invalid
  // A field name from the resource's allow-list (documented on each List method), optionally
  // prefixed with '-' for descending order. Empty: by id ascending. Anything else (including
  // "name; DROP TABLE users") is kInvalidArgument. Ties are broken by id.
  std::string sort;
  std::string q;  // case-insensitive substring match on the resource's name field(s); "" = all

  // Filters; each applies only where the List method documents it, and is ignored elsewhere.
  std::optional<int64_t> project_id;
  std::optional<int64_t> cluster_id;
  std::optional<int64_t> user_id;
  // Only rows of projects (or the projects themselves) that this user is a member of.
  std::optional<int64_t> member_user_id;
  // ListWorkers only: each worker without its status (GPUs and readings, the bulk of the row),
  // which is left empty, for readers that need only names and states.
  bool without_status = false;
};

template <typename T>
struct ListResult {
  std::vector<T> items;
  int64_t total = 0;  // rows matching the filters, over all pages
};

// A partial update: only fields that are set change.
struct UserPatch {
  std::optional<std::string> username;
  std::optional<std::string> full_name;
  std::optional<bool> is_admin;
  std::optional<bool> is_active;
  std::optional<std::string> password_hash;
  std::optional<bool> require_password_change;
};

struct ProjectPatch {
  std::optional<std::string> name;
  std::optional<std::string> description;
  // Outer optional: change or not; inner nullopt: remove the quota (unlimited).
  std::optional<std::optional<double>> max_gpus;
  std::optional<std::optional<double>> max_vram_gib;
  std::optional<std::optional<int64_t>> max_instances;
  std::optional<types::LimitsPatch> limits;  // applied to the stored limits in the transaction
};

struct ApiKeyPatch {
  std::optional<types::LimitsPatch> limits;  // applied to the stored limits in the transaction
  // Outer optional: change or not; inner nullopt: any address. Canonical CIDR strings.
  std::optional<std::optional<std::vector<std::string>>> allowed_cidrs;
};

struct ClusterPatch {
  std::optional<std::string> name;
  std::optional<std::string> description;
  std::optional<bool> is_default;  // true makes this the only default cluster
  std::optional<std::string> registration_token;
  std::optional<types::GpuSharing> gpu_sharing;
};

struct WorkerPatch {
  std::optional<std::map<std::string, std::string>> labels;  // replaces all labels
  // Turning maintenance on sets state MAINTENANCE; turning it off sets READY if the worker has
  // ever sent a heartbeat (the liveness controller demotes it if that heartbeat is stale), else
  // REGISTERING.
  std::optional<bool> maintenance;
  std::optional<std::string> maintenance_message;
};

// ---- models and instances (section owned by the scheduler work) --------------------------------

// Filters of ListModelInstances, besides ListOptions' project_id and member_user_id.
// What Prometheus' service discovery needs (GET /v2/metrics/targets; Store::ListScrapeTargets):
// endpoints and labels only, read without decoding workers' status or instances' claims.
struct WorkerEndpoint {
  int64_t id = 0;
  std::string name;
  std::string address;
  int port = 0;
};
struct EngineEndpoint {
  int64_t instance_id = 0;
  std::string instance;  // the instance's name
  int64_t project_id = 0;
  int port = 0;
  std::string worker;      // the worker's name
  std::string address;     // the worker's address
  std::string deployment;  // the model's name
  std::string backend;     // the model's backend ("" = automatic)
};
struct ScrapeTargets {
  std::vector<WorkerEndpoint> workers;  // every worker, by id
  std::vector<EngineEndpoint> engines;  // RUNNING instances with a port on a known worker, by id
};

struct ModelInstanceFilter {
  std::optional<int64_t> model_id;
  std::optional<int64_t> worker_id;              // main worker or any distributed server's worker
  std::optional<int64_t> distributed_worker_id;  // any distributed server's worker only
  std::optional<types::InstanceState> state;
};

// A partial update of an instance: only fields that are set change.
struct ModelInstancePatch {
  std::optional<types::InstanceState> state;
  std::optional<std::string> state_message;
  // Placement; ClearPlacement() sets all of them to "not placed".
  std::optional<int64_t> worker_id;
  std::optional<std::string> worker_name;
  std::optional<std::vector<int>> gpu_indexes;
  std::optional<types::ResourceClaim> claim;
  std::optional<std::vector<types::DistributedServer>> distributed_servers;
  // A subordinate worker's report: sets address, port, state, state_message and restart_count of
  // the distributed_servers entry of its worker_id, in the same transaction as the other fields;
  // the entry's placement and the other entries stay. kNotFound when no entry has that worker.
  std::optional<types::DistributedServer> distributed_server_status;
  std::optional<int> port;
  std::optional<int> restart_count;
  std::optional<std::optional<Timestamp>> last_restart_at;
  std::optional<std::map<std::string, std::string>> unschedulable_reasons;
  std::optional<std::string> engine_secret;  // the main worker's report; "" = none
  // Compare-and-set: when set, the update applies only if the stored state is one of these
  // (kAborted otherwise), so that a controller never overwrites a newer transition.
  std::optional<std::vector<types::InstanceState>> if_state_in;

  void ClearPlacement() {
    worker_id = 0;
    worker_name = std::string();
    gpu_indexes = std::vector<int>();
    claim = types::ResourceClaim();
    distributed_servers = std::vector<types::DistributedServer>();
    port = 0;
    engine_secret = std::string();  // the next worker's engine has its own
  }
};

// ---- backends (section owned by the engines work) ----------------------------------------------

// A stored user-defined backend, or the versions users added to a built-in one (a row named like
// the built-in). `spec` is a JSON object the API layer validated (engines::BackendFromJson); the
// store keeps it as text.
struct BackendRecord {
  int64_t id = 0;
  std::string name;
  std::string spec;
  Timestamp created_at{};
  Timestamp updated_at{};
};

// ---- usage records (section owned by the gateway work) -----------------------------------------

// How a metered request ended. A response cut short is billed for what was delivered before the
// cut (docs/gateway.md, ADR 0024).
enum class UsageFinish {
  kComplete,            // the whole response went out (any status)
  kClientDisconnected,  // the client went away mid-stream (status 499)
  kUpstreamFailed,      // the engine's stream ended early (status 502 in the record)
  kGatewayCrashed,      // the gateway died mid-stream; recovered from its usage journal
};
std::string_view UsageFinishName(UsageFinish f);  // "complete" | "client_disconnected" | ...
std::optional<UsageFinish> ParseUsageFinish(std::string_view s);

// One metered request, as the gateway's usage meter writes it. Idempotent by request_id.
struct UsageRecord {
  std::string request_id;
  Timestamp time;  // when the request arrived
  int64_t api_key_id = 0;
  int64_t user_id = 0;
  int64_t project_id = 0;
  std::string model;  // the public model name
  int64_t deployment_id = 0;
  int64_t instance_id = 0;  // 0: never reached an instance
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  std::optional<double> ttft_ms;  // streaming only
  double duration_ms = 0;
  int status = 0;  // the HTTP status the client got (499: client went away)
  UsageFinish finish = UsageFinish::kComplete;
};

// What a usage query groups by. kModel and kRoute both group by the name the client asked for (a
// route's or a model's; kModel is the older spelling); kDeployment by the model that served it
// (its id as text); kGpuType by the GPU type the serving instance held when the request arrived.
// GPU time is attributed where the dimension applies (project, deployment, gpu_type); for the
// others it is reported on a last row (per bucket) with an empty key, so totals do not depend on
// the grouping.
enum class UsageGroupBy { kProject, kUser, kKey, kModel, kFinish, kRoute, kDeployment, kGpuType };
// "project" | "user" | "key" | "model" | "finish" | "route" | "deployment" | "gpu_type"
std::string_view UsageGroupByName(UsageGroupBy g);
std::optional<UsageGroupBy> ParseUsageGroupBy(std::string_view s);

// Time buckets of a usage query, UTC; kNone: one row per group over the whole range.
enum class UsageBucket { kNone, kHour, kDay, kMonth };
std::string_view UsageBucketName(UsageBucket b);  // "" | "hour" | "day" | "month"
std::optional<UsageBucket> ParseUsageBucket(std::string_view s);
// The start of the bucket holding `t`, and of the next one (kNone: t itself, Timestamp::max()).
Timestamp UsageBucketStart(UsageBucket b, Timestamp t);
Timestamp UsageBucketNext(UsageBucket b, Timestamp bucket_start);

struct UsageQuery {
  UsageGroupBy group_by = UsageGroupBy::kProject;
  UsageBucket bucket = UsageBucket::kNone;
  Timestamp from;  // inclusive
  Timestamp to;    // exclusive
  // Only these projects (nullopt: all). An empty set matches nothing.
  std::optional<std::vector<int64_t>> project_ids;
};

// One group (of one bucket) of a usage query. `key` is the project, user, key or deployment id as
// text, the model or route name, the finish or the GPU type ("" for GPU time that the grouping
// cannot attribute, and for requests that never reached a GPU under kGpuType).
struct UsageSummary {
  std::optional<Timestamp> bucket;  // the bucket's start; nullopt for UsageBucket::kNone
  std::string key;
  int64_t requests = 0;
  int64_t errors = 0;  // status >= 400
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  int64_t cut_short = 0;  // requests whose finish is not kComplete
  // GPU time from the ledger, clipped exactly to [from, to) and the bucket: GPUs x milliseconds
  // (exact; gpu_hours() = gpu_ms / 3.6e6) and GiB of claimed VRAM x hours.
  int64_t gpu_ms = 0;
  double vram_gib_hours = 0;
  // prompt_tokens/1e6 x its model's prompt price + completion_tokens/1e6 x completion price +
  // GPU hours x the GPU type's hourly price, in PriceTable::currency (missing prices count 0).
  double cost = 0;

  double gpu_hours() const { return static_cast<double>(gpu_ms) / 3.6e6; }
};

// One interval of the GPU-time ledger (table gpu_intervals; docs/adr/0031-usage-gpu-ledger.md): an
// instance RUNNING on a worker the server could hear, holding gpu_count GPUs and vram_bytes of VRAM
// there.
struct GpuInterval {
  int64_t id = 0;
  int64_t instance_id = 0;
  int64_t deployment_id = 0;
  std::string model;
  int64_t project_id = 0;
  int64_t worker_id = 0;
  std::string gpu_type;
  std::vector<int> gpu_indexes;
  int64_t gpu_count = 0;
  int64_t vram_bytes = 0;
  Timestamp started_at{};
  std::optional<Timestamp> ended_at;  // nullopt while open
  Timestamp last_seen{};
};

// ---- prices (admin-set; no events) ------------------------------------------------------------

// Units a price is given in: per 1M prompt or completion tokens of a model (name = the model
// name clients ask for), per hour of one GPU of a type (name = the GPU type workers report).
enum class PriceUnit { kPrompt1MTokens, kCompletion1MTokens, kGpuHour };
// "prompt_1m_tokens" | "completion_1m_tokens" | "gpu_hour"
std::string_view PriceUnitName(PriceUnit u);
std::optional<PriceUnit> ParsePriceUnit(std::string_view s);

struct Price {
  PriceUnit unit = PriceUnit::kGpuHour;
  std::string name;
  double price = 0;  // >= 0, finite
  friend bool operator==(const Price&, const Price&) = default;
};

struct PriceTable {
  std::string currency = "USD";  // three capital letters (ISO 4217 style)
  std::vector<Price> items;      // by unit, then name; (unit, name) unique
  Timestamp updated_at{};        // set by the store; epoch until first set
};
// kInvalidArgument naming the first problem: currency not three letters A-Z, an empty or
// over-long name (> 256), a negative or non-finite price, a duplicate (unit, name).
Status ValidatePriceTable(const PriceTable& t);

// ---- audit trail (docs/security.md "Audit trail", ADR 0034) ------------------------------------

// One recorded call: a state-changing /v2 request or a sign-in. Never holds a request body.
struct AuditEvent {
  int64_t id = 0;  // assigned by AppendAuditEvent; ascending in append order
  Timestamp at;    // assigned by AppendAuditEvent from the store's clock (millisecond precision)
  std::string actor_kind;           // "user" | "api_key" | "worker" | "anonymous"
  std::optional<int64_t> actor_id;  // user id, API key id or worker id
  std::string actor_name;           // username (API keys: the creator's; a sign-in: the name tried)
  std::string method;               // "POST", "PATCH", ...
  std::string route;                // the route pattern: "/v2/models/{id}"
  std::string resource;             // the route's resource: "models", "auth", ...
  std::string resource_id;  // the pattern's last capture, or the id of a created row; "" if none
  std::optional<int64_t> project_id;
  int status = 0;  // the HTTP status answered
  std::string client_address;
  std::string request_id;
  std::string prev_hash;  // the previous row's hash; the anchor (see below) for the first row
  std::string hash;       // AuditEventHash(prev_hash, this row)
};

// Lowercase hex SHA-256 over `prev_hash`, a newline and the canonical serialisation of every field
// of `e` but prev_hash and hash (a JSON array in declaration order; null for absent optionals).
// Pure; what AppendAuditEvent stores and VerifyAuditChain recomputes.
std::string AuditEventHash(const std::string& prev_hash, const AuditEvent& e);

// Filters of ListAuditEvents; each unset one matches everything.
struct AuditFilter {
  // "user:ID", "api_key:ID" or "worker:ID" (kind and id), else an actor_name.
  std::optional<std::string> actor;
  std::optional<int64_t> project_id;
  std::optional<std::string> resource;
  std::optional<Timestamp> from;  // at >= from
  std::optional<Timestamp> to;    // at < to
};

// What VerifyAuditChain found.
struct AuditVerification {
  bool ok = true;
  int64_t checked = 0;                  // rows read
  std::optional<int64_t> first_bad_id;  // the first row whose hash or link is wrong
  std::string reason;                   // "" when ok
  std::string head_hash;                // the last row's hash ("" when empty): keep it elsewhere
};

class Store {
 public:
  virtual ~Store() = default;

  // The schema version this database is at (the highest applied migration).
  virtual Result<int> SchemaVersion() = 0;
  // kUnavailable if the database cannot answer a trivial query. For /readyz.
  virtual Status Ping() = 0;

  // ---- users ("users") ----------------------------------------------------------------------
  // Inserts `user` (id and timestamps assigned). kAlreadyExists if the username is taken.
  virtual Result<types::User> CreateUser(const types::User& user) = 0;
  virtual Result<types::User> GetUser(int64_t id) = 0;
  virtual Result<types::User> GetUserByUsername(const std::string& username) = 0;
  // Sort fields: id, username, full_name, created_at, updated_at. q: username or full_name.
  virtual Result<ListResult<types::User>> ListUsers(const ListOptions& options) = 0;
  // kAlreadyExists if a new username is taken.
  virtual Result<types::User> UpdateUser(int64_t id, const UserPatch& patch) = 0;
  // Also deletes the user's sessions, project memberships and API keys (kDeleted events for the
  // memberships and keys).
  virtual Status DeleteUser(int64_t id) = 0;
  // Number of active admin users.
  virtual Result<int64_t> CountActiveAdmins() = 0;

  // ---- sessions (no events) -----------------------------------------------------------------
  // Inserts a session for `session.user_id` (kNotFound if no such user).
  virtual Result<types::Session> CreateSession(const types::Session& session) = 0;
  virtual Result<types::Session> GetSession(int64_t id) = 0;
  // The sessions neither revoked nor expired (by the store's clock), with their usernames.
  // Filters: user_id. Sort fields: id, user_id, username, created_at, last_used_at (never used:
  // its created_at), expires_at. q: username.
  virtual Result<ListResult<types::Session>> ListSessions(const ListOptions& options) = 0;
  // Sets last_used_at to `at` unless it is already later. The caller coalesces (IdentityService
  // writes at most once a minute per session). Unknown ids are ignored.
  virtual Status TouchSession(int64_t id, Timestamp at) = 0;
  // Sets revoked_at (idempotent: a revoked session keeps its first revocation time).
  virtual Status RevokeSession(int64_t id, Timestamp at) = 0;
  // Revokes every unrevoked session of `user_id` except `keep_session_id`; returns how many.
  virtual Result<int64_t> RevokeUserSessions(int64_t user_id,
                                             std::optional<int64_t> keep_session_id,
                                             Timestamp at) = 0;
  // Deletes sessions that expired before `before`; returns how many. For a periodic janitor.
  virtual Result<int64_t> DeleteExpiredSessions(Timestamp before) = 0;

  // ---- projects ("projects") ----------------------------------------------------------------
  // kAlreadyExists if the name is taken.
  virtual Result<types::Project> CreateProject(const types::Project& project) = 0;
  virtual Result<types::Project> GetProject(int64_t id) = 0;
  virtual Result<types::Project> GetProjectByName(const std::string& name) = 0;
  // Sort fields: id, name, created_at, updated_at. q: name. Filters: member_user_id.
  virtual Result<ListResult<types::Project>> ListProjects(const ListOptions& options) = 0;
  virtual Result<types::Project> UpdateProject(int64_t id, const ProjectPatch& patch) = 0;
  // Deletes the project with its members and API keys in one transaction.
  virtual Status DeleteProject(int64_t id) = 0;

  // ---- project members ("project-members", id = user_id) -------------------------------------
  // kNotFound if the project or user does not exist; kAlreadyExists if already a member.
  virtual Result<types::ProjectMember> AddProjectMember(int64_t project_id, int64_t user_id,
                                                        types::ProjectRole role) = 0;
  // kNotFound if the user is not a member.
  virtual Result<types::ProjectMember> UpdateProjectMember(int64_t project_id, int64_t user_id,
                                                           types::ProjectRole role) = 0;
  virtual Status RemoveProjectMember(int64_t project_id, int64_t user_id) = 0;
  // Filters: project_id (required, else kInvalidArgument), user_id.
  // Sort fields: user_id, username, role, created_at. q: username.
  virtual Result<ListResult<types::ProjectMember>> ListProjectMembers(
      const ListOptions& options) = 0;
  // project id → role, for every project `user_id` belongs to (empty for none or unknown user).
  virtual Result<std::map<int64_t, types::ProjectRole>> GetProjectRoles(int64_t user_id) = 0;

  // ---- API keys ("api-keys") ----------------------------------------------------------------
  // Inserts `key` (id and created_at assigned; secret_hash and prefix as given). kNotFound if the
  // project or user does not exist; kAlreadyExists if the name is taken within the project or
  // the hash collides.
  virtual Result<types::ApiKey> CreateApiKey(const types::ApiKey& key) = 0;
  virtual Result<types::ApiKey> GetApiKey(int64_t id) = 0;
  // Looks a key up by Sha256Hex(secret). Returns revoked and expired keys too: the caller decides.
  virtual Result<types::ApiKey> GetApiKeyByHash(const std::string& secret_hash) = 0;
  // Sort fields: id, name, created_at, expires_at, last_used_at. q: name.
  // Filters: project_id, user_id (creator), member_user_id.
  virtual Result<ListResult<types::ApiKey>> ListApiKeys(const ListOptions& options) = 0;
  // Sets revoked_at (keeps the first revocation time). Publishes kUpdated.
  virtual Result<types::ApiKey> RevokeApiKey(int64_t id, Timestamp at) = 0;
  // Applies `patch` in one transaction. kNotFound if no such key. Publishes kUpdated.
  virtual Result<types::ApiKey> UpdateApiKey(int64_t id, const ApiKeyPatch& patch) = 0;
  virtual Status DeleteApiKey(int64_t id) = 0;
  // Records that key `id` was used at `at`. Called on every authenticated request, so writes are
  // coalesced: the stored last_used_at may lag by up to one minute. Unknown ids are ignored.
  virtual Status TouchApiKey(int64_t id, Timestamp at) = 0;

  // ---- clusters ("clusters") ----------------------------------------------------------------
  // kAlreadyExists if the name is taken. If `is_default`, the previous default stops being one.
  virtual Result<types::Cluster> CreateCluster(const types::Cluster& cluster) = 0;
  virtual Result<types::Cluster> GetCluster(int64_t id) = 0;
  // kNotFound if there is no default cluster.
  virtual Result<types::Cluster> GetDefaultCluster() = 0;
  // Sort fields: id, name, created_at, updated_at. q: name.
  virtual Result<ListResult<types::Cluster>> ListClusters(const ListOptions& options) = 0;
  virtual Result<types::Cluster> UpdateCluster(int64_t id, const ClusterPatch& patch) = 0;
  // kFailedPrecondition if workers still belong to the cluster.
  virtual Status DeleteCluster(int64_t id) = 0;

  // ---- workers ("workers") ------------------------------------------------------------------
  // Registers or re-registers the worker `name` of `cluster_id` (kNotFound if no such cluster):
  // a new name creates a row in state REGISTERING; a known name keeps its row (id, labels
  // merged with `labels` taking precedence, maintenance) and gets the new address, port and
  // token hash, and state REGISTERING unless in maintenance. kCreated or kUpdated event.
  virtual Result<types::Worker> UpsertWorkerByName(
      int64_t cluster_id, const std::string& name, const std::string& address, int port,
      const std::string& token_hash, const std::map<std::string, std::string>& labels) = 0;
  virtual Result<types::Worker> GetWorker(int64_t id) = 0;
  // Looks a worker up by Sha256Hex(worker token).
  virtual Result<types::Worker> GetWorkerByTokenHash(const std::string& token_hash) = 0;
  // Sort fields: id, name, state, created_at, updated_at, last_heartbeat_at. q: name.
  // Filters: cluster_id. options.without_status leaves each status empty.
  virtual Result<ListResult<types::Worker>> ListWorkers(const ListOptions& options) = 0;
  virtual Result<types::Worker> UpdateWorker(int64_t id, const WorkerPatch& patch) = 0;
  // Stores `status`, sets last_heartbeat_at = `at` and state READY (clearing state_message)
  // unless the worker is in maintenance. Publishes kUpdated.
  virtual Result<types::Worker> RecordHeartbeat(int64_t id, const types::WorkerStatus& status,
                                                Timestamp at) = 0;
  virtual Result<types::Worker> SetWorkerState(int64_t id, types::WorkerState state,
                                               const std::string& message) = 0;
  // Atomically moves every READY worker whose last heartbeat is older than `heartbeat_before`
  // (or that never sent one) to NOT_READY with `message`; returns the changed workers (one
  // kUpdated event each). For the liveness controller: no read-then-write race with heartbeats.
  virtual Result<std::vector<types::Worker>> MarkStaleWorkersNotReady(
      Timestamp heartbeat_before, const std::string& message) = 0;
  virtual Status DeleteWorker(int64_t id) = 0;
  // Every worker's endpoint and every RUNNING instance's (with a port, on a worker that has an
  // address, of a model that exists), in one read: what the http_sd endpoint serves.
  virtual Result<ScrapeTargets> ListScrapeTargets() = 0;

  // ---- models ("models") and model instances ("model-instances") -----------------------------
  // Events carry project_id. A model's ready_replicas is derived on read (RUNNING instances).
  //
  // Inserts `model` (id and timestamps assigned). kNotFound if the project does not exist;
  // kAlreadyExists if the name is taken in the project; kInvalidArgument if ValidateModel fails.
  virtual Result<types::Model> CreateModel(const types::Model& model) = 0;
  virtual Result<types::Model> GetModel(int64_t id) = 0;
  virtual Result<types::Model> GetModelByName(int64_t project_id, const std::string& name) = 0;
  // Sort fields: id, name, replicas, created_at, updated_at. q: name.
  // Filters: project_id, member_user_id.
  virtual Result<ListResult<types::Model>> ListModels(const ListOptions& options) = 0;
  // Replaces the stored model `model.id` with `model` (project_id and created_at are kept).
  // kNotFound, kAlreadyExists (name taken), kInvalidArgument (ValidateModel).
  virtual Result<types::Model> UpdateModel(const types::Model& model) = 0;
  // Deletes the model and its instances in one transaction (kDeleted for each instance first,
  // then for the model).
  virtual Status DeleteModel(int64_t id) = 0;

  // Inserts `instance` (id and timestamps assigned; project_id is taken from the model).
  // kNotFound if the model does not exist.
  virtual Result<types::ModelInstance> CreateModelInstance(
      const types::ModelInstance& instance) = 0;
  virtual Result<types::ModelInstance> GetModelInstance(int64_t id) = 0;
  // Sort fields: id, name, state, worker_id, created_at, updated_at. q: name.
  // Filters: project_id, member_user_id, and those of `filter`.
  virtual Result<ListResult<types::ModelInstance>> ListModelInstances(
      const ListOptions& options, const ModelInstanceFilter& filter = {}) = 0;
  // Applies `patch`; kNotFound, or kAborted when patch.if_state_in does not hold. Publishes
  // kUpdated (also when nothing changed).
  virtual Result<types::ModelInstance> UpdateModelInstance(int64_t id,
                                                           const ModelInstancePatch& patch) = 0;
  virtual Status DeleteModelInstance(int64_t id) = 0;

  // ---- model routes ("model-routes"; section owned by the routes work, ADR 0012) -------------
  // A route and its targets are one row to callers: events carry project_id and
  // data = types::ToJson(route) with the targets. Deleting a model removes it from every route
  // (kUpdated for each such route, even if no target is left); deleting a project deletes its
  // routes (kDeleted). Model names and route names share one namespace per project:
  // CreateModel/UpdateModel answer kAlreadyExists for the name of a route of the project.
  //
  // Inserts `route` (id and timestamps assigned) with its targets in one transaction. kNotFound
  // if the project does not exist; kInvalidArgument if ValidateModelRoute fails or a target model
  // does not exist or is in another project ("targets[1]: model 7 does not exist in project 2");
  // kAlreadyExists if a route or a model of the project has the name.
  virtual Result<types::ModelRoute> CreateModelRoute(const types::ModelRoute& route) = 0;
  virtual Result<types::ModelRoute> GetModelRoute(int64_t id) = 0;
  // Sort fields: id, name, created_at, updated_at. q: name. Filters: project_id, member_user_id.
  virtual Result<ListResult<types::ModelRoute>> ListModelRoutes(const ListOptions& options) = 0;
  // Replaces name, description and the whole target list of route `route.id` in one transaction
  // (project_id and created_at are kept). kNotFound, and the errors of CreateModelRoute.
  virtual Result<types::ModelRoute> UpdateModelRoute(const types::ModelRoute& route) = 0;
  virtual Status DeleteModelRoute(int64_t id) = 0;

  // ---- backends ("backends", id = the row id, data = the spec with id and times) ------------
  // Inserts `backend` (id and timestamps assigned). kAlreadyExists if the name is taken;
  // kInvalidArgument if spec is not a JSON object.
  virtual Result<BackendRecord> CreateBackend(const BackendRecord& backend) = 0;
  // kNotFound "backend 'x' not found".
  virtual Result<BackendRecord> GetBackend(const std::string& name) = 0;
  // Every stored backend, by name.
  virtual Result<std::vector<BackendRecord>> ListBackends() = 0;
  // Replaces the spec of the backend `backend.name`. kNotFound; kFailedPrecondition ("backend
  // 'x' version 'v' is used by model 'chat' (project 1)") if a model names the backend with one
  // of `removed_versions`, checked in the same transaction.
  virtual Result<BackendRecord> UpdateBackend(const BackendRecord& backend,
                                              const std::vector<std::string>& removed_versions) = 0;
  // kNotFound; kFailedPrecondition ("backend 'x' is used by model 'chat' (project 1)") if any
  // model names the backend, checked in the same transaction.
  virtual Status DeleteBackend(const std::string& name) = 0;

  // ---- model files ("model-files"; section owned by the model-files work) ---------------------
  // Rows are reported by workers; kDeleted events when removed.
  //
  // Inserts or updates the row of (file.worker_id, file.source_key, file.backend) with the other
  // fields of `file` (id and timestamps assigned). A row in state kDeleting keeps that state and
  // message, so the reporting worker learns of the pending deletion from the returned row.
  // kNotFound if the worker does not exist.
  virtual Result<types::ModelFile> UpsertModelFile(const types::ModelFile& file) = 0;
  virtual Result<types::ModelFile> GetModelFile(int64_t id) = 0;
  // Sort fields: id, worker_id, state, size_bytes, created_at, updated_at. q: source_key.
  // Filter: `worker_id`.
  virtual Result<ListResult<types::ModelFile>> ListModelFiles(
      const ListOptions& options, std::optional<int64_t> worker_id = std::nullopt) = 0;
  virtual Result<types::ModelFile> SetModelFileState(int64_t id, types::ModelFileState state,
                                                     const std::string& message) = 0;
  virtual Status DeleteModelFile(int64_t id) = 0;

  // ---- usage records (no events) --------------------------------------------------------------
  // Inserts `batch` in one transaction and adds it to the daily roll-up (usage_daily). Records
  // whose request_id is already stored are skipped (a retried batch is harmless).
  virtual Status InsertUsageRecords(const std::vector<UsageRecord>& batch) = 0;
  // Totals per (bucket, group) over [query.from, query.to), ordered by bucket, then key (ids
  // numerically): the usage records' sums, the ledger's GPU time (open intervals count up to the
  // store's clock) and the cost at the current prices. kInvalidArgument if from > to.
  virtual Result<std::vector<UsageSummary>> QueryUsage(const UsageQuery& query) = 0;

  // ---- GPU-time ledger (no events) -------------------------------------------------------------
  // Intervals are opened and closed by the store itself, where instance and worker rows are
  // written: an instance RUNNING on a worker that is not NOT_READY/UNREACHABLE has one open
  // interval per worker it holds GPUs on (a new one when its placement or claim changes); leaving
  // RUNNING or being deleted closes it at the store's clock; a worker marked NOT_READY,
  // UNREACHABLE or deleted closes its intervals at its last heartbeat (last_seen), and its next
  // heartbeat opens new ones for its still RUNNING instances. At open, the store closes, at
  // last_seen, the open intervals whose instance is gone or no longer RUNNING; the others keep
  // counting (docs/adr/0031-usage-gpu-ledger.md).
  //
  // Intervals overlapping [from, to) of these projects (nullopt: all), by started_at then id.
  virtual Result<std::vector<GpuInterval>> ListGpuIntervals(
      Timestamp from, Timestamp to, const std::optional<std::vector<int64_t>>& project_ids) = 0;

  // ---- prices (no events) ----------------------------------------------------------------------
  virtual Result<PriceTable> GetPrices() = 0;
  // Replaces the whole table (currency and items) in one transaction. kInvalidArgument from
  // ValidatePriceTable (nothing is written).
  virtual Result<PriceTable> ReplacePrices(const PriceTable& table) = 0;

  // ---- audit trail (no events; docs/security.md "Audit trail") --------------------------------
  // Appends `event` (id, at, prev_hash and hash assigned; the values passed are ignored), chained
  // to the last row (or to the pruning anchor, or "" for the very first row). Appends are
  // serialised by the store, so the chain is linear. Returns the row as stored. kUnavailable.
  virtual Result<AuditEvent> AppendAuditEvent(const AuditEvent& event) = 0;
  // Rows matching `filter`, by id (ascending; sort "-id" for newest first). Sort fields: id.
  // kInvalidArgument for bad paging or sort.
  virtual Result<ListResult<AuditEvent>> ListAuditEvents(const ListOptions& options,
                                                         const AuditFilter& filter) = 0;
  // Walks every row in id order and recomputes each hash and link: the first row must link to
  // the pruning anchor ("" when nothing was pruned). A row that was altered fails its own hash;
  // a deleted row breaks the next row's link. kUnavailable.
  virtual Result<AuditVerification> VerifyAuditChain() = 0;
  // Deletes the rows older than `before` and moves the anchor to the last one deleted, in one
  // transaction; returns how many were deleted.
  virtual Result<int64_t> PruneAuditEvents(Timestamp before) = 0;
};

}  // namespace segma::store
