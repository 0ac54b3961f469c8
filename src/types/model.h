#pragma once

// Deployments (`Model`) and their replicas (`ModelInstance`), with their JSON codecs.
// REST shape: ARCHITECTURE.md §4 ("POST /v2/models …"); states: ARCHITECTURE.md §5.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"

namespace segma::types {

enum class SourceType { kLocalPath, kHuggingFace, kModelScope, kSimulated };
std::string_view SourceTypeName(SourceType t);  // "local_path", "huggingface", ...
std::optional<SourceType> ParseSourceType(std::string_view s);

// Where a model's files come from. Only the fields of `type` are meaningful.
struct ModelSource {
  SourceType type = SourceType::kSimulated;
  std::string path;          // local_path: absolute, no ".." components
  std::string repo;          // huggingface / modelscope: "org/name"
  std::string revision;      // huggingface: default "main"; modelscope: default "master"
  std::string file;          // huggingface / modelscope: optional file glob ("*Q4_K_M.gguf")
  double params_b = 0;       // simulated (required), hub (optional size hint): billions of params
  std::string size_profile;  // simulated: optional profile name ("llama-8b"); empty = by params_b

  friend bool operator==(const ModelSource&, const ModelSource&) = default;
};

// A stable key naming the files of `s`, used to find workers that already hold them
// ("huggingface:org/name@main:*.gguf").
std::string SourceKey(const ModelSource& s);

// Parses a model source strictly, as the `source` of POST /v2/models (kInvalidArgument naming the
// field under `path`).
Result<ModelSource> ModelSourceFromJson(const json::object& o, const std::string& path = "source");

enum class ModelCategory { kLlm, kEmbedding, kReranker, kSpeechToText };
std::string_view ModelCategoryName(
    ModelCategory c);  // "llm", "embedding", "reranker", "speech-to-text"
std::optional<ModelCategory> ParseModelCategory(std::string_view s);

// How a model's replicas are placed relative to other deployments (docs/scheduler.md): spread
// (emptiest GPUs), binpack (fullest GPUs), fragmentation (leave free slices that the request
// sizes of the cluster can use; ADR 0026).
enum class PlacementStrategy { kSpread, kBinpack, kFragmentation };
std::string_view PlacementStrategyName(PlacementStrategy p);  // "spread", "binpack", ...
std::optional<PlacementStrategy> ParsePlacementStrategy(std::string_view s);

// How a model's replicas are placed relative to each other: on distinct workers where the pool
// allows (then distinct GPUs), on distinct GPUs, or wherever the strategy puts them. A soft
// preference: a pool too small for it still places every replica.
// How an instance on a GPU it shares is held to its VRAM claim (docs/gpu-sharing.md):
//   kClaims    the scheduler reserves the claim; the engine is trusted to stay within it.
//   kEnforced  the worker also preloads libsegma-vgpu.so into the engine, which refuses device
//              allocations past the claim (CUDA_ERROR_OUT_OF_MEMORY) and reports the claim as the
//              GPU's memory. Applies to engines on a GPU they do not own whole, on workers that
//              have the library; elsewhere it is kClaims. The default of every cluster unless
//              its admin chooses otherwise.
enum class GpuSharing { kClaims, kEnforced };
std::string_view GpuSharingName(GpuSharing g);  // "claims", "enforced"
std::optional<GpuSharing> ParseGpuSharing(std::string_view s);

enum class ReplicaSpread { kWorker, kGpu, kNone };
std::string_view ReplicaSpreadName(ReplicaSpread r);  // "worker", "gpu", "none"
std::optional<ReplicaSpread> ParseReplicaSpread(std::string_view s);

struct GpuSelector {
  // Explicit GPUs, "<worker_name>:<index>". Empty = any GPU.
  std::vector<std::string> gpu_ids;
  // GPUs each replica uses; 0 = as many as the estimate needs.
  int gpus_per_replica = 0;

  friend bool operator==(const GpuSelector&, const GpuSelector&) = default;
};

// KV cache offload to host RAM (LMCache / HiCache). At most one of ram_gib and ram_ratio is set.
struct ExtendedKvCache {
  bool enabled = false;
  std::optional<double> ram_gib;    // absolute size of the RAM cache
  std::optional<double> ram_ratio;  // RAM cache size as a multiple of the GPU KV cache
  int64_t chunk_size = 0;           // tokens per chunk; 0 = engine default

  friend bool operator==(const ExtendedKvCache&, const ExtendedKvCache&) = default;
};

// A deployment: a model served by `replicas` instances.
struct Model {
  int64_t id = 0;
  std::string name;  // unique in its project; 1-64 of [A-Za-z0-9._-]
  int64_t project_id = 0;
  int64_t cluster_id = 0;  // 0 = any cluster
  ModelSource source;
  std::string backend;  // "llama.cpp" | "vllm" | "sglang" | "tensorrt-llm" | "simulator" | custom;
                        // empty = automatic
  std::string backend_version;            // empty = the backend's default
  int replicas = 1;                       // 0 = stopped
  std::vector<ModelCategory> categories;  // empty = detect from the model
  PlacementStrategy placement_strategy = PlacementStrategy::kSpread;
  ReplicaSpread replica_spread = ReplicaSpread::kWorker;
  // nullopt = the default of the cluster the instance runs in (Cluster::gpu_sharing); the worker
  // receives the model with it filled in (GET /v2/worker/models/{id}).
  std::optional<GpuSharing> gpu_sharing;
  std::map<std::string, std::string> worker_selector;  // worker labels that must all match
  GpuSelector gpu_selector;
  std::string gpu_type;  // case-insensitive substring of the GPU name ("H200"); empty = any
  // A MIG device of this profile ("1g.18gb", "3g.71gb", "1c.3g.71gb"), as NVML names it; empty =
  // any GPU or MIG device. docs/gpu-sharing.md "MIG".
  std::string mig_profile;
  // The share of each of its GPUs' compute (SM time) an instance's engine may use, 1..100;
  // nullopt = unlimited. The scheduler keeps the shares on a GPU at or below 100 in all (instances
  // without one are not counted); under gpu_sharing "enforced" the worker has libsegma-vgpu hold
  // the engine to it (SEGMA_VGPU_COMPUTE). docs/gpu-sharing.md "Compute share".
  std::optional<int> gpu_compute_percent;
  bool cpu_offloading = false;
  bool distributed_inference_across_workers = false;
  std::vector<std::string> backend_parameters;
  std::map<std::string, std::string> env;
  // Tokens per sequence; 0 = the default (docs/scheduler.md "Concurrency": min(trained context,
  // 8192) for the KV cache the claim holds).
  int64_t context_length = 0;
  // Sequences served at once (parallel slots); 0 = the default target of 32, lowered by the
  // scheduler when no GPU arrangement holds it. A value set here is a requirement.
  int max_concurrent_sequences = 0;
  ExtendedKvCache extended_kv_cache;
  bool restart_on_error = true;
  Timestamp created_at{};
  Timestamp updated_at{};
  int ready_replicas = 0;  // derived: instances RUNNING

  friend bool operator==(const Model&, const Model&) = default;
};

enum class InstanceState {
  kPending,
  kScheduled,
  kDownloading,
  kStarting,
  kRunning,
  kError,
  kUnschedulable,
  kStopping,
};
std::string_view InstanceStateName(InstanceState s);  // "PENDING", ...
std::optional<InstanceState> ParseInstanceState(std::string_view s);
// The states a worker's engine supervisor observes and reports (DOWNLOADING, STARTING, RUNNING,
// ERROR); the others belong to the server's controllers.
bool IsWorkerReportedState(InstanceState s);

// What an instance reserves. Bytes throughout.
struct ResourceClaim {
  std::map<int, int64_t> vram;  // GPU index → bytes on that GPU
  int64_t ram = 0;
  // Layers on the GPU(s) (llama.cpp -ngl) out of total_layers, in llama.cpp's own count (blocks
  // plus the output layer); offload_layers < total_layers means the rest run from RAM. Both 0
  // when unknown or not layer-based.
  int offload_layers = 0;
  int total_layers = 0;
  std::vector<double> tensor_split;  // per GPU of gpu_indexes, proportions (llama.cpp -ts)
  // What the engine's command is sized from (engines::LaunchContext): the KV cache it will hold
  // on its GPUs, all of them together (for vLLM and SGLang, everything their memory fraction
  // leaves after weights), and the model weights on each GPU. 0 = unknown.
  int64_t kv_cache_bytes = 0;
  int64_t weight_bytes_per_gpu = 0;
  // The concurrency the VRAM covers: sequences of context_length tokens whose KV cache is in the
  // claim. 0 when unknown (claims of older servers, CPU-only placements of unknown shape).
  int sequences = 0;
  int64_t context_length = 0;
  // The share of the compute of each GPU in `vram` (the model's gpu_compute_percent when it was
  // placed), 1..100; 0 = none (not limited, and not counted in a GPU's sum of shares).
  int compute_percent = 0;

  friend bool operator==(const ResourceClaim&, const ResourceClaim&) = default;
};

// A subordinate worker of a multi-worker placement (llama.cpp RPC server, vLLM/SGLang node).
// The scheduler sets the placement (worker, GPUs, claim); the subordinate worker reports the rest
// about the server process it runs for the instance (docs/adr/0014-rpc-server-split.md).
struct DistributedServer {
  int64_t worker_id = 0;
  std::string worker_name;
  std::vector<int> gpu_indexes;
  ResourceClaim claim;
  // Reported by the subordinate; the address is the worker's, as the server knows it.
  std::string address;
  int port = 0;       // 0 = no server process yet
  std::string state;  // "" (not reported yet), "STARTING", "RUNNING" or "ERROR"
  std::string state_message;
  int restart_count = 0;  // changes whenever a new server process replaces the previous one

  friend bool operator==(const DistributedServer&, const DistributedServer&) = default;
};

// One replica of a Model.
struct ModelInstance {
  int64_t id = 0;
  int64_t model_id = 0;
  int64_t project_id = 0;
  std::string name;  // "<model name>-<suffix>"
  InstanceState state = InstanceState::kPending;
  std::string state_message;
  int64_t worker_id = 0;  // 0 = not placed
  std::string worker_name;
  std::vector<int> gpu_indexes;
  int port = 0;
  ResourceClaim claim;
  std::vector<DistributedServer> distributed_servers;
  int restart_count = 0;
  std::optional<Timestamp> last_restart_at;
  std::map<std::string, std::string> unschedulable_reasons;  // worker name → why not
  // The secret the instance's engine requires of its clients, as its worker reported it (docs/
  // adr/0035-engine-secrets.md); "" = none (not reported yet, or an engine that takes none). The
  // gateways send it upstream. Never serialized by ToJson: no /v2 answer or event carries it.
  std::string engine_secret;
  Timestamp created_at{};
  Timestamp updated_at{};

  friend bool operator==(const ModelInstance&, const ModelInstance&) = default;
};

json::object ToJson(const ModelSource& s);
json::object ToJson(const Model& m);
json::object ToJson(const ResourceClaim& c);
// Parses a claim as ToJson writes it. Every field is optional; wrong types and negative sizes
// are kInvalidArgument naming the field under `path`.
Result<ResourceClaim> ResourceClaimFromJson(const json::object& o,
                                            const std::string& path = "claim");
// Every field but engine_secret, which never leaves the server except to a gateway.
json::object ToJson(const ModelInstance& i);

// Parses the body of `POST /v2/models` (and `POST /v2/model-evaluations`) strictly: unknown
// fields, wrong types and invalid values are kInvalidArgument with the field path
// ("source.path must be absolute"). `name` and `source` are required; `project_id` may be absent
// (0) when the caller fills it from the URL or the token. Server-owned fields (id, times,
// ready_replicas) are rejected as unknown.
Result<Model> ModelFromJson(const json::object& o);

// Applies the body of `PATCH /v2/models/{id}` to `current`: only the fields present change, and
// the result is validated as a whole. `project_id` cannot be changed (kInvalidArgument); a
// nested object (source, gpu_selector, extended_kv_cache) present in the patch replaces the old
// one entirely. Returns the patched model; `current` is not modified.
Result<Model> PatchModelFromJson(const Model& current, const json::object& patch);

// Checks the invariants that ModelFromJson enforces (useful for models built in code).
Status ValidateModel(const Model& m);

}  // namespace segma::types
