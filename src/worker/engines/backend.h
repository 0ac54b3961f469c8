#pragma once

// Inference backends as data: what to exec for an instance, with which environment, and how to
// tell that it is ready. Built-in backends (llama.cpp, vLLM, SGLang, TensorRT-LLM, the simulator)
// and user-defined ones (POST /v2/backends) share one shape; RenderLaunch turns a backend, a
// deployment and one of its instances into an argv and an environment. See docs/engines.md.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "types/engine_choice.h"
#include "types/model.h"

namespace segma::engines {

// How an engine exposes Prometheus metrics (which names a scraper should expect).
enum class MetricsFormat { kNone, kVllm, kLlamaCpp, kSglang };
std::string_view MetricsFormatName(MetricsFormat f);  // "none", "vllm", "llama.cpp", "sglang"
std::optional<MetricsFormat> ParseMetricsFormat(std::string_view s);

// A run of argv elements (and environment entries) rendered together.
//
// Each string is a template: literal text with `{{variable}}` placeholders (the variables are
// listed in TemplateVariables()). A group with an empty `when` is unconditional: every variable it
// names must have a value, or rendering fails. A group with `when` set to a variable applies only
// when that variable has a value (e.g. `-c {{ctx_size}}` only when a context length was chosen).
//
// JSON: a plain string is an unconditional one-element group; an object
// {"when": "ctx_size", "args": ["-c", "{{ctx_size}}"], "env": {"K": "{{v}}"}} is a group.
struct TemplateGroup {
  std::string when;
  std::vector<std::string> args;
  std::map<std::string, std::string> env;

  friend bool operator==(const TemplateGroup&, const TemplateGroup&) = default;
};

struct BackendVersion {
  // The engine's command line; the first element of the first group is the executable (a bare
  // name is looked up in LaunchContext::binary_dir, then in PATH when the engine starts).
  std::vector<TemplateGroup> command;
  // Always set for the engine; values are templates.
  std::map<std::string, std::string> env;
  // The command run on each subordinate worker of a multi-worker placement (llama.cpp:
  // ggml-rpc-server). Empty: the backend cannot span workers.
  std::vector<TemplateGroup> distributed_server_command;
  std::string image;  // container image, informational (engines are exec'd directly today)
  std::string notes;

  friend bool operator==(const BackendVersion&, const BackendVersion&) = default;
};

struct Backend {
  std::string name;  // 1-64 of [A-Za-z0-9._-]
  std::map<std::string, BackendVersion> versions;
  std::string default_version;          // a key of `versions`
  std::string health_path = "/health";  // GET → 200 when ready
  // types::ModelFormatName values ("gguf", "safetensors", "tensorrt-engine"); empty = any
  // (simulator). Engine choice and the scheduler send only these formats to the backend.
  std::vector<std::string> model_formats;
  std::vector<std::string> gpu_vendors;  // "nvidia", "amd", ...; empty = any
  std::string min_compute_capability;    // "8.0"; empty = none (NVIDIA only)
  bool cpu_supported = false;
  MetricsFormat metrics_format = MetricsFormat::kNone;
  bool built_in = false;

  friend bool operator==(const Backend&, const Backend&) = default;
};

// The variables templates may name. Rendering defines a subset of them per instance.
const std::vector<std::string>& TemplateVariables();

// llama.cpp, vllm, sglang, tensorrt-llm, simulator (built_in = true).
const std::vector<Backend>& BuiltInBackends();
// The built-in backend called `name`, or nullptr.
const Backend* FindBuiltInBackend(std::string_view name);

json::object ToJson(const TemplateGroup& g);  // a group that can be a plain string is a string
json::value ToJsonValue(const TemplateGroup& g);
json::object ToJson(const BackendVersion& v);
json::object ToJson(const Backend& b);

// Parses a user-defined backend (the body of POST /v2/backends) strictly: unknown fields, wrong
// types, unknown template variables, unbalanced `{{`, an empty command, a default_version that is
// not among the versions, a health path without a leading '/', unknown model formats or metrics
// formats are kInvalidArgument with the field path. `built_in` may only be absent or false.
Result<Backend> BackendFromJson(const json::object& o);

// Checks the invariants BackendFromJson enforces (for backends built in code).
Status ValidateBackend(const Backend& b);

// What engine choice and the scheduler need of `b`: its formats and hardware, the versions that
// have a distributed_server_command, and whether a version's command renders {{n_gpu_layers}}
// (partial offload).
types::BackendProfile ProfileOf(const Backend& b);

// The built-in backends, plus `extra` (a user-defined backend, or a built-in one with versions
// users added, which then replaces the built-in of its name). Not owning: `extra` must outlive
// the catalog.
class BackendDefinitions final : public types::BackendCatalog {
 public:
  explicit BackendDefinitions(const Backend* extra = nullptr) : extra_(extra) {}
  // types::BackendCatalog
  Result<types::BackendProfile> Find(const std::string& name) const override;

 private:
  const Backend* extra_;
};

// Checks a deployment's backend_parameters: each one becomes one argv element as is (engines are
// exec'd directly, never through a shell). kInvalidArgument for an empty parameter, control
// characters, a `{{` (parameters are not templates), a lone shell operator (";", "|", "&&", ">",
// ...), a flag with a space before its value ("--ctx-size 4096": pass "--ctx-size=4096" or two
// parameters), or more than 4096 bytes.
Status ValidateBackendParameters(const std::vector<std::string>& params);

// Everything about the worker that rendering needs besides the deployment and the instance.
struct LaunchContext {
  std::string model_path;        // resolved local path of the model files; empty for simulated
  std::string host = "0.0.0.0";  // address the engine listens on
  int port = 0;                  // the engine's port (Supervisor::AllocatePort)
  std::map<int, int64_t> gpu_total_bytes;  // GPU index → total memory, for the memory fraction
  // GPU index → UUID ("GPU-…", "MIG-…") as the probe reports it. A MIG device's index is segma's
  // own numbering (after the whole GPUs), which CUDA does not know: MIG devices are addressed by
  // UUID in CUDA_VISIBLE_DEVICES.
  std::map<int, std::string> gpu_uuids;
  // libsegma-vgpu.so on this worker; "" = not installed (gpu_sharing "enforced" then acts as
  // "claims"). See docs/gpu-sharing.md.
  std::string vgpu_library;
  // Keeps this worker's accounting segments apart from another worker's on the same host (two
  // installs, or tests), whose instance ids are their own: see VgpuSegmentName.
  std::string vgpu_scope;
  // Directory holding the backend's executables ("" = PATH), e.g. llama.cpp's build/bin.
  std::string binary_dir;
  std::vector<std::string> rpc_servers;  // "host:port" of the instance's distributed servers
  std::string gpu_type;                  // "H100" (the simulator's --gpu); empty = unknown
  // Model weights per GPU in bytes, when the estimate knows them (TensorRT-LLM's KV fraction is
  // a fraction of the memory left after the weights). 0 = unknown.
  int64_t weight_bytes_per_gpu = 0;
  // The GPU KV cache size in bytes (for extended_kv_cache.ram_ratio with LMCache). 0 = unknown.
  int64_t kv_cache_bytes = 0;
  std::string working_dir;  // "" = the supervisor's
  // The secret the engine requires of its clients (docs/adr/0035-engine-secrets.md), and the
  // file that holds it (EngineSecretPath). "" = the engine runs without one ({{api_key}} and
  // {{api_key_file}} then have no value).
  std::string api_key;
  std::string api_key_file;
};

// What to exec for one engine process.
struct LaunchSpec {
  std::vector<std::string> argv;           // argv[0] is the executable
  std::map<std::string, std::string> env;  // overlaid on the worker's environment
  std::string health_path;                 // "" = a TCP connect is the readiness check
  std::string working_dir;
  // The secret the rendered engine requires of its clients, sent as "Authorization: Bearer" by the
  // readiness and liveness probes, the metrics scraper and the gateways, and masked wherever the
  // command line is logged. "" when the engine runs without one: no secret in the context, or a
  // built-in backend that cannot take one (TensorRT-LLM).
  std::string api_key;

  friend bool operator==(const LaunchSpec&, const LaunchSpec&) = default;
};

// Renders the engine command for `instance` of `model` with `backend` at `version` ("" = the
// backend's default). The model's backend_parameters are appended, its env overlaid on the
// backend's; CUDA_VISIBLE_DEVICES is the instance's gpu_indexes ("" for a CPU instance), or their
// UUIDs when one of them is a MIG device, with CUDA_DEVICE_ORDER=PCI_BUS_ID (NVML's index order)
// for every engine. With the model's gpu_sharing "enforced" and ctx.vgpu_library set, an engine
// whose claim on a GPU is less than the GPU's memory gets the library in LD_PRELOAD (before any
// LD_PRELOAD of the model's env), SEGMA_VGPU_LIMITS "<CUDA ordinal>=<claim bytes>,…" for those
// GPUs and SEGMA_VGPU_SHM VgpuSegmentName(ctx.vgpu_scope, instance id, …). Under the same
// conditions, a claim with a compute_percent below 100 gets the library too, with
// SEGMA_VGPU_COMPUTE "<CUDA ordinal>=<percent>,…" for each of its GPUs that is not a MIG device,
// whether or not the engine owns the GPU's memory whole.
// With ctx.api_key set, the engine requires it of its clients: the built-in templates pass it
// (llama.cpp and the simulator --api-key-file {{api_key_file}}, vLLM VLLM_API_KEY in its
// environment, SGLang --api-key {{api_key}}); a backend that is not built in gets
// SEGMA_ENGINE_API_KEY in its environment besides {{api_key}} and {{api_key_file}}.
// kNotFound for an unknown version; kInvalidArgument for bad backend parameters, a template
// variable that has no value for this instance ("template variable ctx_size has no value"),
// a parameter that overrides a flag the platform sets (--port, --host, the model path, the
// secret), or a model env entry that overrides one (SEGMA_ENGINE_API_KEY, VLLM_API_KEY).
// Pure; thread-safe.
Result<LaunchSpec> RenderLaunch(const Backend& backend, std::string_view version,
                                const types::Model& model, const types::ModelInstance& instance,
                                const LaunchContext& ctx);

// Renders the command for one subordinate worker of a multi-worker placement (llama.cpp's RPC
// server): `server`'s GPUs, listening on ctx.host:ctx.port. kFailedPrecondition when the backend
// has no distributed_server_command; otherwise errors as RenderLaunch.
Result<LaunchSpec> RenderDistributedServerLaunch(const Backend& backend, std::string_view version,
                                                 const types::Model& model,
                                                 const types::ModelInstance& instance,
                                                 const types::DistributedServer& server,
                                                 const LaunchContext& ctx);

// The "host:port" of each of `instance`'s distributed servers, in order (LaunchContext's
// rpc_servers), once every one of them has reported RUNNING with an address and a port.
// Otherwise kUnavailable naming the first that has not: "waiting for rpc server on worker-b
// (STARTING)". An instance without distributed servers has none (an empty list).
Result<std::vector<std::string>> DistributedServerEndpoints(const types::ModelInstance& instance);

// The shared-memory segment of libsegma-vgpu's accounting for `instance_id`'s engine (or, with
// `server`, its distributed server on this worker), in the worker's `scope`:
// "/segma-vgpu-<scope>-70", "/segma-vgpu-<scope>-70-rpc" ("/segma-vgpu-70" with no scope).
std::string VgpuSegmentName(std::string_view scope, int64_t instance_id, bool server);

// A worker's scope for VgpuSegmentName: 8 hex digits of a hash of its data dir, the same for
// every process of the install (so that a restarted worker finds its adopted engines' segments)
// and different for another install on the host.
std::string VgpuScope(std::string_view data_dir);

// The vLLM-style memory fraction: min over the instance's GPUs of claim / total, rounded down to
// 2 decimals. nullopt when a GPU's claim or total is unknown.
std::optional<double> GpuMemoryFraction(const types::ModelInstance& instance,
                                        const std::map<int, int64_t>& gpu_total_bytes);

}  // namespace segma::engines
