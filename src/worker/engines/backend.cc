#include "worker/engines/backend.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include <fmt/format.h>

namespace segma::engines {
namespace {

constexpr std::string_view kGpuVendors[] = {
    "nvidia", "amd", "intel", "ascend", "hygon", "moorethreads", "iluvatar", "metax", "cambricon"};
constexpr std::string_view kShellOperators[] = {";", "|",  "||", "&",    "&&", ">", ">>",
                                                "<", "<<", "2>", "2>&1", "`",  "$("};
constexpr size_t kMaxParameterBytes = 4096;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Variables that carry a platform-owned value; a backend parameter may not override the flag
// that a template binds to one of them (the port is what the supervisor probes, the model path
// what was downloaded, the secret what the gateways send).
constexpr std::string_view kPlatformVariables[] = {"port", "host", "model_path", "api_key",
                                                   "api_key_file"};
// The variables that carry the engine's secret: an engine whose rendered command names one
// requires the secret of its clients, and the model's env may not replace a variable bound to
// one.
constexpr std::string_view kSecretVariables[] = {"api_key", "api_key_file"};
// Where a backend that is not built in finds its secret, whatever its template says.
constexpr std::string_view kEngineApiKeyEnv = "SEGMA_ENGINE_API_KEY";

using Vars = std::map<std::string, std::string, std::less<>>;

bool IsKnownVariable(std::string_view name) {
  const auto& vars = TemplateVariables();
  return std::find(vars.begin(), vars.end(), name) != vars.end();
}

// Calls `on_var` for each `{{name}}` of `text` and `on_literal` for the text between them.
// kInvalidArgument for an unterminated `{{` or an empty / malformed name.
template <typename OnLiteral, typename OnVar>
Status ScanTemplate(std::string_view text, OnLiteral on_literal, OnVar on_var) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t open = text.find("{{", pos);
    if (open == std::string_view::npos) {
      on_literal(text.substr(pos));
      break;
    }
    on_literal(text.substr(pos, open - pos));
    size_t close = text.find("}}", open + 2);
    if (close == std::string_view::npos) {
      return InvalidArgumentError(fmt::format("unterminated '{{{{' in template \"{}\"", text));
    }
    std::string_view name = text.substr(open + 2, close - open - 2);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        })) {
      return InvalidArgumentError(fmt::format("bad variable name in template \"{}\"", text));
    }
    RETURN_IF_ERROR(on_var(name));
    pos = close + 2;
  }
  return OkStatus();
}

Status CheckTemplate(std::string_view text) {
  return ScanTemplate(
      text, [](std::string_view) {},
      [&](std::string_view name) -> Status {
        if (!IsKnownVariable(name)) {
          return InvalidArgumentError(
              fmt::format("unknown template variable '{}' in \"{}\"", name, text));
        }
        return OkStatus();
      });
}

bool MentionsVariable(std::string_view text, std::string_view var) {
  bool found = false;
  (void)ScanTemplate(
      text, [](std::string_view) {},
      [&](std::string_view name) {
        if (name == var) found = true;
        return OkStatus();
      });
  return found;
}

Result<std::string> Expand(std::string_view text, const Vars& vars) {
  std::string out;
  RETURN_IF_ERROR(ScanTemplate(
      text, [&](std::string_view lit) { out.append(lit); },
      [&](std::string_view name) -> Status {
        auto it = vars.find(name);
        if (it == vars.end()) {
          return InvalidArgumentError(fmt::format(
              "template variable {} has no value for this instance (in \"{}\")", name, text));
        }
        out.append(it->second);
        return OkStatus();
      }));
  return out;
}

Status CheckGroups(const std::vector<TemplateGroup>& groups, std::string_view field) {
  for (size_t i = 0; i < groups.size(); ++i) {
    const TemplateGroup& g = groups[i];
    const std::string where = fmt::format("{}[{}]", field, i);
    if (!g.when.empty() && !IsKnownVariable(g.when)) {
      return InvalidArgumentError(
          fmt::format("{}.when names unknown template variable '{}'", where, g.when));
    }
    if (g.args.empty() && g.env.empty()) {
      return InvalidArgumentError(fmt::format("{} is empty", where));
    }
    for (const std::string& a : g.args) {
      if (a.find('\0') != std::string::npos) {
        return InvalidArgumentError(fmt::format("{} contains a NUL byte", where));
      }
      if (Status s = CheckTemplate(a); !s.ok()) {
        return InvalidArgumentError(fmt::format("{}: {}", where, s.message()));
      }
    }
    for (const auto& [k, v] : g.env) {
      if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos) {
        return InvalidArgumentError(fmt::format("{}.env has a bad name '{}'", where, k));
      }
      if (Status s = CheckTemplate(v); !s.ok()) {
        return InvalidArgumentError(fmt::format("{}.env.{}: {}", where, k, s.message()));
      }
    }
  }
  return OkStatus();
}

bool ValidName(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

template <size_t N>
bool OneOf(std::string_view s, const std::string_view (&list)[N]) {
  return std::find(std::begin(list), std::end(list), s) != std::end(list);
}

// Rounds down to 2 decimals, so that an engine never takes more than it was given.
double FloorHundredths(double x) { return std::floor(x * 100.0 + 1e-9) / 100.0; }

std::string FormatFraction(double x) { return fmt::format("{:.2f}", x); }

// "20", "12.5", "0.75": up to 2 decimals, no trailing zeros.
std::string FormatNumber(double x) {
  std::string s = fmt::format("{:.2f}", FloorHundredths(x));
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

std::string Join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out.append(sep);
    out.append(parts[i]);
  }
  return out;
}

std::string JoinInts(const std::vector<int>& v) {
  std::vector<std::string> parts;
  for (int i : v) parts.push_back(std::to_string(i));
  return Join(parts, ",");
}

// llama.cpp's -ngl for `claim` on `gpus` GPUs. A whole offload is 999, which llama.cpp caps at
// its own count of n_layer + 1 (the output layer counts as a layer: -ngl n_layer leaves a block
// on the CPU, and every decoding step crosses to it). A partial offload is the claim's count,
// which the estimator keeps in llama.cpp's terms (ResourceEstimate::VramWithGpuLayers). With no
// layer count the claim is whole too.
std::string LlamaCppGpuLayers(const types::ResourceClaim& claim, int gpus) {
  if (gpus == 0) return "0";
  if (claim.total_layers > 0 && claim.offload_layers < claim.total_layers) {
    return std::to_string(claim.offload_layers);
  }
  return "999";
}

Vars MakeVars(const types::Model& model, const types::ModelInstance& instance,
              const std::vector<int>& gpu_indexes, const types::ResourceClaim& claim,
              const LaunchContext& ctx) {
  Vars v;
  if (!ctx.model_path.empty()) v["model_path"] = ctx.model_path;
  v["model_name"] = model.name;
  v["instance_name"] = instance.name;
  v["host"] = ctx.host;
  if (ctx.port > 0) v["port"] = std::to_string(ctx.port);
  const int gpus = static_cast<int>(gpu_indexes.size());
  if (gpus > 0) v["gpu_ids"] = JoinInts(gpu_indexes);
  v["gpu_count"] = std::to_string(gpus);
  v["tensor_parallel_size"] = std::to_string(std::max(1, gpus));
  // Unset concurrency comes from the claim, which the scheduler sized for it (docs/scheduler.md
  // "Concurrency"); a claim's context does not become ctx_size, so that engines keep their own
  // longest context (vLLM's max_model_len).
  const int sequences =
      model.max_concurrent_sequences > 0 ? model.max_concurrent_sequences : claim.sequences;
  const int64_t context = model.context_length > 0
                              ? model.context_length
                              : (model.max_concurrent_sequences > 0 ? 0 : claim.context_length);
  if (model.context_length > 0) v["ctx_size"] = std::to_string(model.context_length);
  if (context > 0) {
    // context_length is per sequence (as the estimator counts the KV cache); llama.cpp's -c is
    // the whole cache, split between its --parallel slots.
    v["total_ctx_size"] = std::to_string(context * std::max(1, sequences));
  }
  if (sequences > 0) v["parallel"] = std::to_string(sequences);
  types::ModelInstance view = instance;
  view.gpu_indexes = gpu_indexes;
  view.claim = claim;
  std::optional<double> fraction = GpuMemoryFraction(view, ctx.gpu_total_bytes);
  if (fraction) {
    v["gpu_memory_utilization"] = FormatFraction(*fraction);
    std::optional<double> kv_fraction = fraction;
    if (ctx.weight_bytes_per_gpu > 0) {
      double f = 1.0;
      for (int gpu : gpu_indexes) {
        const double total = static_cast<double>(ctx.gpu_total_bytes.at(gpu));
        const double claimed = static_cast<double>(claim.vram.at(gpu));
        const double w = static_cast<double>(ctx.weight_bytes_per_gpu);
        f = std::min(f, total > w ? (claimed - w) / (total - w) : 0.0);
      }
      f = FloorHundredths(f);
      kv_fraction = f > 0 ? std::optional<double>(f) : std::nullopt;
    }
    if (kv_fraction) v["kv_cache_free_gpu_memory_fraction"] = FormatFraction(*kv_fraction);
  }
  v["n_gpu_layers"] = LlamaCppGpuLayers(claim, gpus);
  if (gpus > 0) {
    // Flash attention on every GPU engine: the estimator sizes compute buffers for it. Batch
    // sizes stay llama.cpp's (-b 2048 -ub 512): -b/-ub 1024 was slower at 32 users on an H200
    // (docs/benchmarks.md "Engine choices on one H200").
    v["flash_attn"] = "on";
  }
  if (gpus > 1 && claim.tensor_split.size() == gpu_indexes.size()) {
    std::vector<std::string> parts;
    for (double d : claim.tensor_split) parts.push_back(FormatNumber(d));
    v["tensor_split"] = Join(parts, ",");
  }
  if (!ctx.rpc_servers.empty()) v["rpc_servers"] = Join(ctx.rpc_servers, ",");
  const types::ExtendedKvCache& kv = model.extended_kv_cache;
  if (kv.enabled) {
    v["extended_kv_cache"] = "true";
    std::optional<double> gib;
    if (kv.ram_gib) {
      gib = *kv.ram_gib;
      v["hicache_size"] = FormatNumber(*kv.ram_gib);
    } else if (kv.ram_ratio) {
      v["hicache_ratio"] = FormatNumber(*kv.ram_ratio);
      if (ctx.kv_cache_bytes > 0) {
        gib = *kv.ram_ratio * static_cast<double>(ctx.kv_cache_bytes) / kGiB;
      }
    }
    if (gib) v["kv_cache_ram_gib"] = FormatNumber(*gib);
    if (kv.chunk_size > 0) v["kv_cache_chunk_size"] = std::to_string(kv.chunk_size);
  }
  if (model.source.type == types::SourceType::kSimulated && model.source.params_b > 0) {
    v["params_b"] = FormatNumber(model.source.params_b);
  }
  if (!ctx.gpu_type.empty()) v["gpu_type"] = ctx.gpu_type;
  if (!ctx.api_key.empty()) v["api_key"] = ctx.api_key;
  if (!ctx.api_key_file.empty()) v["api_key_file"] = ctx.api_key_file;
  return v;
}

// What rendering noticed about the platform's values besides argv and env.
struct PlatformUse {
  // Flags whose value is a platform variable ("--port" of "--port {{port}}", "--host" of
  // "--host={{host}}"): backend parameters may not set them.
  std::set<std::string> flags;
  // Environment variables whose value names the engine's secret (VLLM_API_KEY): the model's env
  // may not set them.
  std::set<std::string> env;
  bool secret = false;  // a rendered template names the engine's secret
};

bool MentionsAny(std::string_view text, const auto& vars) {
  return std::any_of(std::begin(vars), std::end(vars),
                     [&](std::string_view v) { return MentionsVariable(text, v); });
}

// Renders the environment template `t` of variable `k` into `env`, noting its platform use.
Status RenderEnv(const std::string& k, const std::string& t, const Vars& vars,
                 std::map<std::string, std::string>& env, PlatformUse& use) {
  ASSIGN_OR_RETURN(env[k], Expand(t, vars));
  if (MentionsAny(t, kSecretVariables)) {
    use.env.insert(k);
    use.secret = true;
  }
  return OkStatus();
}

// Renders `groups` into argv/env, noting in `use` the flags and variables bound to platform
// values.
Status RenderGroups(const std::vector<TemplateGroup>& groups, const Vars& vars,
                    std::vector<std::string>& argv, std::map<std::string, std::string>& env,
                    PlatformUse& use) {
  std::string previous;  // the template before the current one, across groups
  for (const TemplateGroup& g : groups) {
    if (!g.when.empty() && vars.find(g.when) == vars.end()) continue;
    for (const std::string& t : g.args) {
      ASSIGN_OR_RETURN(std::string arg, Expand(t, vars));
      for (std::string_view pv : kPlatformVariables) {
        if (!MentionsVariable(t, pv)) continue;
        if (t.starts_with("-") && t.find('=') != std::string::npos) {
          use.flags.insert(t.substr(0, t.find('=')));
        } else if (previous.starts_with("-")) {
          use.flags.insert(previous);
        }
      }
      if (MentionsAny(t, kSecretVariables)) use.secret = true;
      argv.push_back(std::move(arg));
      previous = t;
    }
    for (const auto& [k, t] : g.env) RETURN_IF_ERROR(RenderEnv(k, t, vars, env, use));
  }
  return OkStatus();
}

Result<const BackendVersion*> FindVersion(const Backend& backend, std::string_view version) {
  const std::string want = version.empty() ? backend.default_version : std::string(version);
  auto it = backend.versions.find(want);
  if (it == backend.versions.end()) {
    std::vector<std::string> known;
    for (const auto& [k, unused] : backend.versions) known.push_back(k);
    return NotFoundError(fmt::format("backend {} has no version '{}' (known: {})", backend.name,
                                     want, Join(known, ", ")));
  }
  return &it->second;
}

Status CheckEnvName(const std::string& k) {
  if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos) {
    return InvalidArgumentError(fmt::format("bad environment variable name '{}'", k));
  }
  return OkStatus();
}

// CUDA_VISIBLE_DEVICES for `gpus`: their indexes (NVML's, i.e. CUDA's under PCI_BUS_ID order), or
// their UUIDs when one is a MIG device (CUDA does not number MIG devices as segma does).
std::string VisibleDevices(const std::vector<int>& gpus, const LaunchContext& ctx) {
  const auto uuid = [&](int g) -> std::string {
    auto it = ctx.gpu_uuids.find(g);
    return it == ctx.gpu_uuids.end() ? "" : it->second;
  };
  const bool mig =
      std::any_of(gpus.begin(), gpus.end(), [&](int g) { return uuid(g).starts_with("MIG-"); });
  if (!mig) return JoinInts(gpus);
  std::vector<std::string> ids;
  for (int g : gpus) ids.push_back(uuid(g).empty() ? std::to_string(g) : uuid(g));
  return Join(ids, ",");
}

// libsegma-vgpu for an engine held to its claim on the GPUs it shares (docs/gpu-sharing.md).
void AddVgpu(const types::Model& model, const types::ModelInstance& instance,
             const std::vector<int>& gpus, const types::ResourceClaim& claim,
             const LaunchContext& ctx, bool server, std::map<std::string, std::string>& env) {
  // The worker's copy of the model has its cluster's default filled in; a model without one is
  // held as every cluster is by default.
  if (model.gpu_sharing.value_or(types::GpuSharing::kEnforced) != types::GpuSharing::kEnforced ||
      ctx.vgpu_library.empty()) {
    return;
  }
  std::vector<std::string> limits;
  for (size_t ordinal = 0; ordinal < gpus.size(); ++ordinal) {
    auto c = claim.vram.find(gpus[ordinal]);
    auto t = ctx.gpu_total_bytes.find(gpus[ordinal]);
    // A GPU the engine owns whole (its claim is all of it) or whose size is unknown: no limit.
    if (c == claim.vram.end() || c->second <= 0 || t == ctx.gpu_total_bytes.end() ||
        c->second >= t->second) {
      continue;
    }
    limits.push_back(fmt::format("{}={}", ordinal, c->second));
  }
  // The compute share holds on every GPU of the engine, owned whole or not: the model asked for
  // it. Not on MIG devices, whose per-process utilisation NVML does not report (the library
  // could not hold them; docs/gpu-sharing.md). 100 % is no limit.
  std::vector<std::string> compute;
  if (claim.compute_percent > 0 && claim.compute_percent < 100) {
    for (size_t ordinal = 0; ordinal < gpus.size(); ++ordinal) {
      auto uuid = ctx.gpu_uuids.find(gpus[ordinal]);
      if (uuid != ctx.gpu_uuids.end() && uuid->second.starts_with("MIG-")) continue;
      compute.push_back(fmt::format("{}={}", ordinal, claim.compute_percent));
    }
  }
  if (limits.empty() && compute.empty()) return;
  auto preload = env.find("LD_PRELOAD");
  env["LD_PRELOAD"] = preload == env.end() || preload->second.empty()
                          ? ctx.vgpu_library
                          : ctx.vgpu_library + ":" + preload->second;
  if (!limits.empty()) env["SEGMA_VGPU_LIMITS"] = Join(limits, ",");
  if (!compute.empty()) env["SEGMA_VGPU_COMPUTE"] = Join(compute, ",");
  env["SEGMA_VGPU_SHM"] = VgpuSegmentName(ctx.vgpu_scope, instance.id, server);
}

Result<LaunchSpec> Render(const Backend& backend, const BackendVersion& ver,
                          const std::vector<TemplateGroup>& command, const types::Model& model,
                          const types::ModelInstance& instance, const std::vector<int>& gpus,
                          const types::ResourceClaim& claim, const LaunchContext& ctx,
                          bool append_parameters) {
  if (append_parameters) RETURN_IF_ERROR(ValidateBackendParameters(model.backend_parameters));
  // The secret is the engine's HTTP API's: a distributed server (llama.cpp's rpc-server) has none.
  LaunchContext own = ctx;
  if (!append_parameters) own.api_key = own.api_key_file = "";
  const Vars vars = MakeVars(model, instance, gpus, claim, own);
  LaunchSpec spec;
  PlatformUse use;
  std::map<std::string, std::string> env;
  for (const auto& [k, t] : ver.env) RETURN_IF_ERROR(RenderEnv(k, t, vars, env, use));
  RETURN_IF_ERROR(RenderGroups(command, vars, spec.argv, env, use));
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return InvalidArgumentError(fmt::format("backend {} renders an empty command", backend.name));
  }
  if (!ctx.binary_dir.empty() && spec.argv[0].find('/') == std::string::npos) {
    spec.argv[0] = ctx.binary_dir + (ctx.binary_dir.ends_with("/") ? "" : "/") + spec.argv[0];
  }
  if (append_parameters) {
    for (const std::string& p : model.backend_parameters) {
      const std::string flag = p.substr(0, p.find('='));
      if (use.flags.count(flag) > 0) {
        return InvalidArgumentError(
            fmt::format("backend parameter '{}' overrides {}, which the platform sets", p, flag));
      }
      spec.argv.push_back(p);
    }
    for (const auto& [k, v] : model.env) {
      RETURN_IF_ERROR(CheckEnvName(k));
      if (use.env.count(k) > 0 || k == kEngineApiKeyEnv) {
        return InvalidArgumentError(
            fmt::format("env {} overrides what the platform sets for the engine", k));
      }
      env[k] = v;
    }
    if (!backend.built_in && !own.api_key.empty()) {
      // A user-defined engine finds its secret here whatever its template says; segma cannot
      // know whether it enforces it, so its clients send it in any case.
      env[std::string(kEngineApiKeyEnv)] = own.api_key;
      use.secret = true;
    }
  }
  env["CUDA_VISIBLE_DEVICES"] = VisibleDevices(gpus, ctx);
  env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID";
  AddVgpu(model, instance, gpus, claim, ctx, /*server=*/!append_parameters, env);
  spec.env = std::move(env);
  spec.health_path = append_parameters ? backend.health_path : "";
  spec.working_dir = ctx.working_dir;
  if (use.secret) spec.api_key = own.api_key;
  return spec;
}

TemplateGroup Arg(std::string a) { return TemplateGroup{"", {std::move(a)}, {}}; }
TemplateGroup When(std::string var, std::vector<std::string> args,
                   std::map<std::string, std::string> env = {}) {
  return TemplateGroup{std::move(var), std::move(args), std::move(env)};
}
std::vector<TemplateGroup> Args(std::initializer_list<const char*> list) {
  std::vector<TemplateGroup> out;
  for (const char* a : list) out.push_back(Arg(a));
  return out;
}
std::vector<TemplateGroup> Concat(std::vector<TemplateGroup> a, std::vector<TemplateGroup> b) {
  for (TemplateGroup& g : b) a.push_back(std::move(g));
  return a;
}

std::vector<Backend> MakeBuiltIns() {
  std::vector<Backend> out;
  {
    Backend b;
    b.name = "llama.cpp";
    BackendVersion v;
    v.command = Concat(
        Args({"llama-server", "-m", "{{model_path}}", "--host", "{{host}}", "--port", "{{port}}",
              "--alias", "{{model_name}}"}),
        {When("total_ctx_size", {"-c", "{{total_ctx_size}}"}),
         When("parallel", {"--parallel", "{{parallel}}"}), Arg("-ngl"), Arg("{{n_gpu_layers}}"),
         When("tensor_split", {"-ts", "{{tensor_split}}"}),
         When("flash_attn", {"-fa", "{{flash_attn}}"}),
         When("rpc_servers", {"--rpc", "{{rpc_servers}}"}),
         // The engine's secret from a file (0600), so that it is not on the command line:
         // llama-server then requires it on every endpoint but /health and /v1/health (the
         // model list and /metrics included: the probes and the scraper send it). At -lv 4 it
         // logs the key's last 4 characters, never the key.
         When("api_key_file", {"--api-key-file", "{{api_key_file}}"}), Arg("--metrics"),
         Arg("--no-webui"),
         // Verbosity 4 ("trace") lets the library's own lines through: the devices it used and
         // "offloaded N/N layers to GPU", which the tests and bench/gpu read from its log.
         Arg("-lv"), Arg("4")});
    v.distributed_server_command = Args({"ggml-rpc-server", "-H", "{{host}}", "-p", "{{port}}"});
    v.notes = "llama.cpp built from the source in node-llama-cpp 3.21.1 (scripts/build-llama)";
    b.versions["3.21.1"] = std::move(v);
    b.default_version = "3.21.1";
    b.model_formats = {"gguf"};
    b.cpu_supported = true;
    b.metrics_format = MetricsFormat::kLlamaCpp;
    out.push_back(std::move(b));
  }
  {
    Backend b;
    b.name = "vllm";
    BackendVersion v;
    v.command = Concat(
        Args({"vllm", "serve", "{{model_path}}", "--host", "{{host}}", "--port", "{{port}}",
              "--served-model-name", "{{model_name}}", "--tensor-parallel-size",
              "{{tensor_parallel_size}}"}),
        {When("gpu_memory_utilization", {"--gpu-memory-utilization", "{{gpu_memory_utilization}}"}),
         When("ctx_size", {"--max-model-len", "{{ctx_size}}"}),
         When("parallel", {"--max-num-seqs", "{{parallel}}"}),
         When("extended_kv_cache",
              {"--kv-transfer-config",
               R"({"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"})"},
              {{"LMCACHE_LOCAL_CPU", "True"},
               {"LMCACHE_MAX_LOCAL_CPU_SIZE", "{{kv_cache_ram_gib}}"}}),
         When("kv_cache_chunk_size", {}, {{"LMCACHE_CHUNK_SIZE", "{{kv_cache_chunk_size}}"}}),
         // In the environment, not on the command line (ps) nor among the arguments vLLM logs at
         // start: it then requires the secret on /v1/*, not on /health or /metrics.
         When("api_key", {}, {{"VLLM_API_KEY", "{{api_key}}"}})});
    v.image = "vllm/vllm-openai:v0.11.0";
    b.versions["0.11.0"] = std::move(v);
    b.default_version = "0.11.0";
    b.model_formats = {"safetensors", "gguf"};
    b.gpu_vendors = {"nvidia", "amd"};
    b.min_compute_capability = "7.0";
    b.metrics_format = MetricsFormat::kVllm;
    out.push_back(std::move(b));
  }
  {
    Backend b;
    b.name = "sglang";
    BackendVersion v;
    v.command = Concat(
        Args({"python3", "-m", "sglang.launch_server", "--model-path", "{{model_path}}",
              "--served-model-name", "{{model_name}}", "--host", "{{host}}", "--port", "{{port}}",
              "--tp-size", "{{tensor_parallel_size}}"}),
        {When("gpu_memory_utilization", {"--mem-fraction-static", "{{gpu_memory_utilization}}"}),
         When("ctx_size", {"--context-length", "{{ctx_size}}"}),
         When("parallel", {"--max-running-requests", "{{parallel}}"}),
         When("hicache_size",
              {"--enable-hierarchical-cache", "--hicache-size", "{{hicache_size}}"}),
         When("hicache_ratio",
              {"--enable-hierarchical-cache", "--hicache-ratio", "{{hicache_ratio}}"}),
         // SGLang takes its secret on the command line only (and prints its server_args at start,
         // the secret included): docs/security.md. It exempts /health and /metrics.
         When("api_key", {"--api-key", "{{api_key}}"}), Arg("--enable-metrics")});
    v.image = "lmsysorg/sglang:v0.5.4";
    b.versions["0.5.4"] = std::move(v);
    b.default_version = "0.5.4";
    b.model_formats = {"safetensors"};
    b.gpu_vendors = {"nvidia", "amd"};
    b.min_compute_capability = "7.5";
    b.metrics_format = MetricsFormat::kSglang;
    out.push_back(std::move(b));
  }
  {
    Backend b;
    b.name = "tensorrt-llm";
    BackendVersion v;
    v.command = Concat(
        Args({"trtllm-serve", "{{model_path}}", "--host", "{{host}}", "--port", "{{port}}",
              "--served_model_name", "{{model_name}}", "--backend", "pytorch", "--tp_size",
              "{{tensor_parallel_size}}"}),
        {When("ctx_size", {"--max_seq_len", "{{ctx_size}}"}),
         When("parallel", {"--max_batch_size", "{{parallel}}"}),
         When("kv_cache_free_gpu_memory_fraction",
              {"--kv_cache_free_gpu_memory_fraction", "{{kv_cache_free_gpu_memory_fraction}}"})});
    v.image = "nvcr.io/nvidia/tensorrt-llm/release:1.0.0";
    b.versions["1.0.0"] = std::move(v);
    b.default_version = "1.0.0";
    b.model_formats = {"safetensors"};
    b.gpu_vendors = {"nvidia"};
    b.min_compute_capability = "8.0";
    b.metrics_format = MetricsFormat::kNone;
    out.push_back(std::move(b));
  }
  {
    Backend b;
    b.name = "simulator";
    BackendVersion v;
    v.command = Concat(Args({"segma", "engine-sim", "--host", "{{host}}", "--port", "{{port}}",
                             "--model", "{{model_name}}", "--tp", "{{tensor_parallel_size}}"}),
                       {When("params_b", {"--params-b", "{{params_b}}"}),
                        When("gpu_type", {"--gpu", "{{gpu_type}}"}),
                        When("ctx_size", {"--max-model-len", "{{ctx_size}}"}),
                        When("parallel", {"--max-num-seqs", "{{parallel}}"}),
                        When("api_key_file", {"--api-key-file", "{{api_key_file}}"})});
    v.notes = "segma's own simulated engine (src/sim)";
    b.versions["builtin"] = std::move(v);
    b.default_version = "builtin";
    b.cpu_supported = true;
    b.metrics_format = MetricsFormat::kVllm;
    out.push_back(std::move(b));
  }
  for (Backend& b : out) b.built_in = true;
  return out;
}

Status ReadGroups(JsonReader& r, std::string_view key, std::vector<TemplateGroup>& out) {
  const json::value* v = r.OptionalValue(key);
  if (v == nullptr) return OkStatus();
  if (!v->is_array()) return InvalidArgumentError(r.Path(key) + " must be an array");
  const json::array& arr = v->as_array();
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string path = fmt::format("{}[{}]", r.Path(key), i);
    if (arr[i].is_string()) {
      out.push_back(Arg(std::string(arr[i].as_string())));
      continue;
    }
    if (!arr[i].is_object()) {
      return InvalidArgumentError(path + " must be a string or an object");
    }
    JsonReader er(arr[i].as_object(), path);
    TemplateGroup g;
    g.when = er.OptionalString("when").value_or("");
    g.args = er.OptionalStringArray("args").value_or(std::vector<std::string>{});
    g.env = er.OptionalStringMap("env").value_or(std::map<std::string, std::string>{});
    RETURN_IF_ERROR(er.Finish());
    out.push_back(std::move(g));
  }
  return OkStatus();
}

json::array GroupsToJson(const std::vector<TemplateGroup>& groups) {
  json::array a;
  for (const TemplateGroup& g : groups) a.push_back(ToJsonValue(g));
  return a;
}

json::object MapToJson(const std::map<std::string, std::string>& m) {
  json::object o;
  for (const auto& [k, v] : m) o[k] = v;
  return o;
}

json::array StringsToJson(const std::vector<std::string>& v) {
  json::array a;
  for (const std::string& s : v) a.push_back(json::value(s));
  return a;
}

}  // namespace

std::string_view MetricsFormatName(MetricsFormat f) {
  switch (f) {
    case MetricsFormat::kNone:
      return "none";
    case MetricsFormat::kVllm:
      return "vllm";
    case MetricsFormat::kLlamaCpp:
      return "llama.cpp";
    case MetricsFormat::kSglang:
      return "sglang";
  }
  return "none";
}

std::optional<MetricsFormat> ParseMetricsFormat(std::string_view s) {
  for (MetricsFormat f : {MetricsFormat::kNone, MetricsFormat::kVllm, MetricsFormat::kLlamaCpp,
                          MetricsFormat::kSglang}) {
    if (MetricsFormatName(f) == s) return f;
  }
  return std::nullopt;
}

const std::vector<std::string>& TemplateVariables() {
  static const std::vector<std::string> kVars = {"model_path",
                                                 "model_name",
                                                 "instance_name",
                                                 "host",
                                                 "port",
                                                 "gpu_ids",
                                                 "gpu_count",
                                                 "tensor_parallel_size",
                                                 "ctx_size",
                                                 "total_ctx_size",
                                                 "parallel",
                                                 "gpu_memory_utilization",
                                                 "kv_cache_free_gpu_memory_fraction",
                                                 "n_gpu_layers",
                                                 "tensor_split",
                                                 "flash_attn",
                                                 "rpc_servers",
                                                 "extended_kv_cache",
                                                 "kv_cache_ram_gib",
                                                 "kv_cache_chunk_size",
                                                 "hicache_size",
                                                 "hicache_ratio",
                                                 "params_b",
                                                 "gpu_type",
                                                 "api_key",
                                                 "api_key_file"};
  return kVars;
}

const std::vector<Backend>& BuiltInBackends() {
  static const std::vector<Backend> kBuiltIns = MakeBuiltIns();
  return kBuiltIns;
}

const Backend* FindBuiltInBackend(std::string_view name) {
  for (const Backend& b : BuiltInBackends()) {
    if (b.name == name) return &b;
  }
  return nullptr;
}

json::value ToJsonValue(const TemplateGroup& g) {
  if (g.when.empty() && g.env.empty() && g.args.size() == 1) return json::value(g.args[0]);
  return ToJson(g);
}

json::object ToJson(const TemplateGroup& g) {
  json::object o;
  if (!g.when.empty()) o["when"] = g.when;
  o["args"] = StringsToJson(g.args);
  if (!g.env.empty()) o["env"] = MapToJson(g.env);
  return o;
}

json::object ToJson(const BackendVersion& v) {
  json::object o;
  o["command"] = GroupsToJson(v.command);
  o["env"] = MapToJson(v.env);
  if (!v.distributed_server_command.empty()) {
    o["distributed_server_command"] = GroupsToJson(v.distributed_server_command);
  }
  o["image"] = v.image;
  o["notes"] = v.notes;
  return o;
}

json::object ToJson(const Backend& b) {
  json::object o;
  o["name"] = b.name;
  json::object versions;
  for (const auto& [k, v] : b.versions) versions[k] = ToJson(v);
  o["versions"] = std::move(versions);
  o["default_version"] = b.default_version;
  o["health_path"] = b.health_path;
  o["model_formats"] = StringsToJson(b.model_formats);
  o["gpu_vendors"] = StringsToJson(b.gpu_vendors);
  o["min_compute_capability"] = b.min_compute_capability;
  o["cpu_supported"] = b.cpu_supported;
  o["metrics_format"] = std::string(MetricsFormatName(b.metrics_format));
  o["built_in"] = b.built_in;
  return o;
}

Result<Backend> BackendFromJson(const json::object& o) {
  JsonReader r(o);
  Backend b;
  b.name = r.String("name");
  const json::object* versions = r.OptionalObject("versions");
  b.default_version = r.OptionalString("default_version").value_or("");
  b.health_path = r.OptionalString("health_path").value_or("/health");
  b.model_formats = r.OptionalStringArray("model_formats").value_or(std::vector<std::string>{});
  b.gpu_vendors = r.OptionalStringArray("gpu_vendors").value_or(std::vector<std::string>{});
  b.min_compute_capability = r.OptionalString("min_compute_capability").value_or("");
  b.cpu_supported = r.OptionalBool("cpu_supported").value_or(false);
  std::optional<std::string> metrics = r.OptionalString("metrics_format");
  if (std::optional<bool> built_in = r.OptionalBool("built_in"); built_in && *built_in) {
    r.Fail("built_in", "cannot be set: only segma's own backends are built in");
  }
  if (metrics) {
    std::optional<MetricsFormat> f = ParseMetricsFormat(*metrics);
    if (!f) {
      r.Fail("metrics_format", "must be one of none, vllm, llama.cpp, sglang");
    } else {
      b.metrics_format = *f;
    }
  }
  if (versions == nullptr) {
    r.Fail("versions", "is required");
  } else {
    for (const auto& kv : *versions) {
      const std::string vpath = r.Path("versions") + "." + std::string(kv.key());
      if (!kv.value().is_object()) {
        r.FailStatus(InvalidArgumentError(vpath + " must be an object"));
        break;
      }
      JsonReader vr(kv.value().as_object(), vpath);
      BackendVersion v;
      r.FailStatus(ReadGroups(vr, "command", v.command));
      v.env = vr.OptionalStringMap("env").value_or(std::map<std::string, std::string>{});
      r.FailStatus(ReadGroups(vr, "distributed_server_command", v.distributed_server_command));
      v.image = vr.OptionalString("image").value_or("");
      v.notes = vr.OptionalString("notes").value_or("");
      r.FailStatus(vr.Finish());
      b.versions[std::string(kv.key())] = std::move(v);
    }
  }
  RETURN_IF_ERROR(r.Finish());
  if (b.default_version.empty() && b.versions.size() == 1) {
    b.default_version = b.versions.begin()->first;
  }
  RETURN_IF_ERROR(ValidateBackend(b));
  return b;
}

Status ValidateBackend(const Backend& b) {
  if (!ValidName(b.name)) {
    return InvalidArgumentError("name must be 1-64 of [A-Za-z0-9._-]");
  }
  if (b.versions.empty()) return InvalidArgumentError("versions must not be empty");
  if (b.versions.find(b.default_version) == b.versions.end()) {
    return InvalidArgumentError(
        fmt::format("default_version '{}' is not among the versions", b.default_version));
  }
  for (const auto& [name, v] : b.versions) {
    const std::string path = "versions." + name;
    if (!ValidName(name)) return InvalidArgumentError(path + ": bad version name");
    if (v.command.empty() || !v.command[0].when.empty() || v.command[0].args.empty() ||
        v.command[0].args[0].empty()) {
      return InvalidArgumentError(path +
                                  ".command must start with the executable (a plain string)");
    }
    RETURN_IF_ERROR(CheckGroups(v.command, path + ".command"));
    RETURN_IF_ERROR(
        CheckGroups(v.distributed_server_command, path + ".distributed_server_command"));
    for (const auto& [k, t] : v.env) {
      if (Status s = CheckEnvName(k); !s.ok()) {
        return InvalidArgumentError(path + ".env: " + s.message());
      }
      if (Status s = CheckTemplate(t); !s.ok()) {
        return InvalidArgumentError(path + ".env." + k + ": " + s.message());
      }
    }
  }
  if (b.health_path.empty() || b.health_path[0] != '/') {
    return InvalidArgumentError("health_path must start with '/'");
  }
  for (const std::string& f : b.model_formats) {
    if (!types::ParseModelFormat(f)) {
      return InvalidArgumentError(fmt::format(
          "model_formats: unknown format '{}' (gguf, safetensors, tensorrt-engine)", f));
    }
  }
  for (const std::string& vendor : b.gpu_vendors) {
    if (!OneOf(vendor, kGpuVendors)) {
      return InvalidArgumentError(fmt::format("gpu_vendors: unknown vendor '{}'", vendor));
    }
  }
  if (!b.min_compute_capability.empty()) {
    const std::string& cc = b.min_compute_capability;
    const size_t dot = cc.find('.');
    const bool digits_ok = dot != std::string::npos && dot > 0 && dot + 1 < cc.size() &&
                           std::all_of(cc.begin(), cc.end(),
                                       [](char c) { return (c >= '0' && c <= '9') || c == '.'; }) &&
                           cc.find('.', dot + 1) == std::string::npos;
    if (!digits_ok) return InvalidArgumentError("min_compute_capability must look like \"8.0\"");
  }
  return OkStatus();
}

Status ValidateBackendParameters(const std::vector<std::string>& params) {
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string& p = params[i];
    const std::string where = fmt::format("backend_parameters[{}]", i);
    if (p.empty()) return InvalidArgumentError(where + " is empty");
    if (p.size() > kMaxParameterBytes) {
      return InvalidArgumentError(
          fmt::format("{} is longer than {} bytes", where, kMaxParameterBytes));
    }
    if (std::any_of(p.begin(), p.end(), [](char c) {
          return (static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f;
        })) {
      return InvalidArgumentError(where + " contains a control character");
    }
    if (p.find("{{") != std::string::npos) {
      return InvalidArgumentError(where + " contains '{{': parameters are not templates");
    }
    if (OneOf(p, kShellOperators)) {
      return InvalidArgumentError(fmt::format(
          "{} is the shell operator '{}': parameters are passed to the engine as they are, "
          "never through a shell",
          where, p));
    }
    if (p.starts_with("-")) {
      const size_t space = p.find(' ');
      if (space != std::string::npos && space < p.find('=')) {
        return InvalidArgumentError(fmt::format(
            "{} '{}' has a space after the flag: write \"{}={}\" or pass two parameters", where, p,
            p.substr(0, space), p.substr(space + 1)));
      }
    }
  }
  return OkStatus();
}

std::string VgpuSegmentName(std::string_view scope, int64_t instance_id, bool server) {
  return fmt::format("/segma-vgpu-{}{}{}{}", scope, scope.empty() ? "" : "-", instance_id,
                     server ? "-rpc" : "");
}

std::string VgpuScope(std::string_view data_dir) {
  // FNV-1a: stable across builds and versions, unlike std::hash.
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : data_dir) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return fmt::format("{:08x}", static_cast<uint32_t>(h ^ (h >> 32)));
}

std::optional<double> GpuMemoryFraction(const types::ModelInstance& instance,
                                        const std::map<int, int64_t>& gpu_total_bytes) {
  if (instance.gpu_indexes.empty()) return std::nullopt;
  double f = 1.0;
  for (int gpu : instance.gpu_indexes) {
    auto total = gpu_total_bytes.find(gpu);
    auto claim = instance.claim.vram.find(gpu);
    if (total == gpu_total_bytes.end() || total->second <= 0 ||
        claim == instance.claim.vram.end() || claim->second <= 0) {
      return std::nullopt;
    }
    f = std::min(f, static_cast<double>(claim->second) / static_cast<double>(total->second));
  }
  f = FloorHundredths(f);
  if (f <= 0) return std::nullopt;
  return f;
}

Result<LaunchSpec> RenderLaunch(const Backend& backend, std::string_view version,
                                const types::Model& model, const types::ModelInstance& instance,
                                const LaunchContext& ctx) {
  ASSIGN_OR_RETURN(const BackendVersion* ver, FindVersion(backend, version));
  return Render(backend, *ver, ver->command, model, instance, instance.gpu_indexes, instance.claim,
                ctx, /*append_parameters=*/true);
}

Result<std::vector<std::string>> DistributedServerEndpoints(const types::ModelInstance& instance) {
  std::vector<std::string> out;
  for (const types::DistributedServer& d : instance.distributed_servers) {
    if (d.state != "RUNNING" || d.port <= 0 || d.address.empty()) {
      std::string why = d.state.empty() ? "not started yet" : d.state;
      if (d.state == "ERROR" && !d.state_message.empty()) why += ": " + d.state_message;
      return UnavailableError(fmt::format(
          "waiting for rpc server on {} ({})",
          d.worker_name.empty() ? fmt::format("worker {}", d.worker_id) : d.worker_name, why));
    }
    out.push_back(fmt::format("{}:{}", d.address, d.port));
  }
  return out;
}

Result<LaunchSpec> RenderDistributedServerLaunch(const Backend& backend, std::string_view version,
                                                 const types::Model& model,
                                                 const types::ModelInstance& instance,
                                                 const types::DistributedServer& server,
                                                 const LaunchContext& ctx) {
  ASSIGN_OR_RETURN(const BackendVersion* ver, FindVersion(backend, version));
  if (ver->distributed_server_command.empty()) {
    return FailedPreconditionError(
        fmt::format("backend {} cannot run on several workers", backend.name));
  }
  return Render(backend, *ver, ver->distributed_server_command, model, instance, server.gpu_indexes,
                server.claim, ctx, /*append_parameters=*/false);
}

types::BackendProfile ProfileOf(const Backend& b) {
  types::BackendProfile p;
  p.name = b.name;
  p.default_version = b.default_version;
  for (const auto& [name, v] : b.versions) {
    p.versions.push_back(name);
    if (!v.distributed_server_command.empty()) p.distributed_versions.push_back(name);
    for (const TemplateGroup& g : v.command) {
      for (const std::string& a : g.args) {
        if (MentionsVariable(a, "n_gpu_layers")) p.partial_offload = true;
      }
    }
  }
  p.model_formats = b.model_formats;
  p.gpu_vendors = b.gpu_vendors;
  p.min_compute_capability = b.min_compute_capability;
  p.cpu_supported = b.cpu_supported;
  return p;
}

Result<types::BackendProfile> BackendDefinitions::Find(const std::string& name) const {
  if (extra_ != nullptr && extra_->name == name) return ProfileOf(*extra_);
  if (const Backend* b = FindBuiltInBackend(name)) return ProfileOf(*b);
  return NotFoundError(fmt::format("unknown backend '{}'", name));
}

}  // namespace segma::engines
