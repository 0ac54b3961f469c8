#include "types/model.h"

#include <algorithm>
#include <charconv>
#include <climits>
#include <set>

#include <fmt/format.h>

#include "types/json_codec.h"

namespace segma::types {

namespace {

constexpr int kMaxNameLength = 64;
constexpr int kMaxReplicas = 1000;
constexpr int64_t kMaxContextLength = 10'000'000;
constexpr int kMaxConcurrentSequences = 65'536;
constexpr int kMaxGpusPerReplica = 1024;
constexpr double kMaxParamsB = 100'000;

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// "<n>g.<m>gb" or "<c>c.<n>g.<m>gb", optionally with "+me" (media extensions), as NVML's
// profiles are named (worker/gpu/nvml_gpu_probe.cc).
bool IsMigProfile(std::string_view s) {
  if (s.size() > 32) return false;
  if (s.ends_with("+me")) s.remove_suffix(3);
  const auto number = [&s](std::string_view unit) {
    size_t n = 0;
    while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
    if (n == 0 || n > 4 || !s.substr(n).starts_with(unit)) return false;
    s.remove_prefix(n + unit.size());
    return true;
  };
  const std::string_view rest = s;
  if (!number("c.")) s = rest;
  return number("g.") && number("gb") && s.empty();
}

bool IsValidName(std::string_view s) {
  return !s.empty() && s.size() <= kMaxNameLength && std::all_of(s.begin(), s.end(), IsNameChar);
}

bool IsEnvKey(std::string_view s) {
  if (s.empty() || (s[0] >= '0' && s[0] <= '9')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

bool HasDotDotComponent(std::string_view path) {
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    if (path.substr(start, end - start) == "..") return true;
    start = end + 1;
  }
  return false;
}

bool IsRepoName(std::string_view repo) {
  size_t slash = repo.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == repo.size()) return false;
  if (repo.find('/', slash + 1) != std::string_view::npos) return false;
  return std::all_of(repo.begin(), repo.end(), [](char c) { return IsNameChar(c) || c == '/'; });
}

json::array StringArray(const std::vector<std::string>& v) {
  json::array a;
  for (const std::string& s : v) a.emplace_back(s);
  return a;
}

json::object StringMap(const std::map<std::string, std::string>& m) {
  json::object o;
  for (const auto& [k, v] : m) o[k] = v;
  return o;
}

json::array IntArray(const std::vector<int>& v) {
  json::array a;
  for (int i : v) a.emplace_back(i);
  return a;
}

Result<ModelSource> SourceFromJson(const json::object& o, const std::string& path) {
  JsonReader r(o, path);
  ModelSource s;
  std::string type = r.String("type");
  if (!r.ok()) return r.Finish();
  std::optional<SourceType> t = ParseSourceType(type);
  if (!t) {
    r.Fail("type", "must be one of local_path, huggingface, modelscope, simulated");
    return r.Finish();
  }
  s.type = *t;
  switch (s.type) {
    case SourceType::kLocalPath:
      s.path = r.String("path");
      if (r.ok() && (s.path.empty() || s.path[0] != '/')) r.Fail("path", "must be absolute");
      if (r.ok() && HasDotDotComponent(s.path)) r.Fail("path", "must not contain '..'");
      if (r.ok() && s.path.find('\0') != std::string::npos) r.Fail("path", "must not contain NUL");
      break;
    case SourceType::kHuggingFace:
    case SourceType::kModelScope:
      s.repo = r.String("repo");
      if (r.ok() && !IsRepoName(s.repo)) r.Fail("repo", "must look like \"org/name\"");
      s.revision = r.OptionalString("revision")
                       .value_or(s.type == SourceType::kHuggingFace ? "main" : "master");
      if (r.ok() && (s.revision.empty() || s.revision.size() > 256)) {
        r.Fail("revision", "must be 1-256 characters");
      }
      s.file = r.OptionalString("file").value_or("");
      if (r.ok() && (s.file.find("..") != std::string::npos || s.file.size() > 1024)) {
        r.Fail("file", "must be a file name or glob without '..'");
      }
      // The scheduler's size hint until the files are on a worker (docs/scheduler.md).
      if (std::optional<double> p = r.OptionalDouble("params_b")) {
        if (!(*p > 0 && *p <= kMaxParamsB)) {
          r.Fail("params_b", fmt::format("must be in (0, {}]", kMaxParamsB));
        }
        s.params_b = *p;
      }
      break;
    case SourceType::kSimulated: {
      std::optional<double> p = r.OptionalDouble("params_b");
      if (!p && r.ok()) r.Fail("params_b", "is required");
      if (p && !(*p > 0 && *p <= kMaxParamsB)) {
        r.Fail("params_b", fmt::format("must be in (0, {}]", kMaxParamsB));
      }
      s.params_b = p.value_or(0);
      s.size_profile = r.OptionalString("size_profile").value_or("");
      break;
    }
  }
  RETURN_IF_ERROR(r.Finish());
  return s;
}

Result<GpuSelector> GpuSelectorFromJson(const json::object& o, const std::string& path) {
  JsonReader r(o, path);
  GpuSelector g;
  g.gpu_ids = r.OptionalStringArray("gpu_ids").value_or(std::vector<std::string>{});
  std::optional<int64_t> n = r.OptionalInt("gpus_per_replica");
  if (n && (*n < 0 || *n > kMaxGpusPerReplica)) {
    r.Fail("gpus_per_replica", fmt::format("must be in 0..{}", kMaxGpusPerReplica));
  }
  g.gpus_per_replica = static_cast<int>(n.value_or(0));
  RETURN_IF_ERROR(r.Finish());
  return g;
}

Result<ExtendedKvCache> KvCacheFromJson(const json::object& o, const std::string& path) {
  JsonReader r(o, path);
  ExtendedKvCache k;
  k.enabled = r.OptionalBool("enabled").value_or(false);
  k.ram_gib = r.OptionalDouble("ram_gib");
  k.ram_ratio = r.OptionalDouble("ram_ratio");
  std::optional<int64_t> chunk = r.OptionalInt("chunk_size");
  if (k.ram_gib && !(*k.ram_gib > 0 && *k.ram_gib <= 1e6)) r.Fail("ram_gib", "must be positive");
  if (k.ram_ratio && !(*k.ram_ratio > 0 && *k.ram_ratio <= 100)) {
    r.Fail("ram_ratio", "must be in (0, 100]");
  }
  if (k.ram_gib && k.ram_ratio) r.Fail("ram_ratio", "cannot be set together with ram_gib");
  if (chunk && (*chunk < 1 || *chunk > 1'000'000)) r.Fail("chunk_size", "must be in 1..1000000");
  k.chunk_size = chunk.value_or(0);
  RETURN_IF_ERROR(r.Finish());
  return k;
}

// Reads every field present in `r` into `m`. Absent fields keep their value, which is what both the
// create parser (starting from defaults) and the patch parser (starting from the stored model)
// need.
void ReadModelFields(JsonReader& r, Model& m, bool is_patch) {
  if (auto v = r.OptionalString("name")) m.name = *v;
  if (is_patch) {
    if (r.OptionalValue("project_id") != nullptr) r.Fail("project_id", "cannot be changed");
  } else if (auto v = r.OptionalInt("project_id")) {
    if (*v < 1) r.Fail("project_id", "must be positive");
    m.project_id = *v;
  }
  if (auto v = r.OptionalInt("cluster_id")) {
    if (*v < 0) r.Fail("cluster_id", "must not be negative");
    m.cluster_id = *v;
  }
  if (const json::object* s = r.OptionalObject("source")) {
    Result<ModelSource> src = SourceFromJson(*s, r.Path("source"));
    if (src.ok()) {
      m.source = *std::move(src);
    } else {
      r.FailStatus(src.status());
    }
  }
  if (auto v = r.OptionalString("backend")) m.backend = *v;
  if (auto v = r.OptionalString("backend_version")) m.backend_version = *v;
  if (auto v = r.OptionalInt("replicas")) {
    if (*v < 0 || *v > kMaxReplicas)
      r.Fail("replicas", fmt::format("must be in 0..{}", kMaxReplicas));
    m.replicas = static_cast<int>(std::clamp<int64_t>(*v, 0, kMaxReplicas));
  }
  if (auto v = r.OptionalStringArray("categories")) {
    m.categories.clear();
    for (const std::string& c : *v) {
      std::optional<ModelCategory> cat = ParseModelCategory(c);
      if (!cat) {
        r.Fail(
            "categories",
            fmt::format("has unknown category '{}' (llm, embedding, reranker, speech-to-text)", c));
        break;
      }
      if (std::find(m.categories.begin(), m.categories.end(), *cat) != m.categories.end()) {
        r.Fail("categories", fmt::format("lists '{}' twice", c));
        break;
      }
      m.categories.push_back(*cat);
    }
  }
  if (auto v = r.OptionalString("placement_strategy")) {
    std::optional<PlacementStrategy> p = ParsePlacementStrategy(*v);
    if (!p) {
      r.Fail("placement_strategy", "must be spread, binpack or fragmentation");
    } else {
      m.placement_strategy = *p;
    }
  }
  if (auto v = r.OptionalString("replica_spread")) {
    std::optional<ReplicaSpread> p = ParseReplicaSpread(*v);
    if (!p) {
      r.Fail("replica_spread", "must be worker, gpu or none");
    } else {
      m.replica_spread = *p;
    }
  }
  // "cluster" (or leaving it out of a new model): the cluster's default; ToJson writes null.
  if (auto v = r.OptionalString("gpu_sharing")) {
    std::optional<GpuSharing> g = ParseGpuSharing(*v);
    if (*v == "cluster") {
      m.gpu_sharing.reset();
    } else if (!g) {
      r.Fail("gpu_sharing", "must be claims, enforced or cluster (the cluster's default)");
    } else {
      m.gpu_sharing = *g;
    }
  }
  if (auto v = r.OptionalStringMap("worker_selector")) m.worker_selector = std::move(*v);
  if (const json::object* g = r.OptionalObject("gpu_selector")) {
    Result<GpuSelector> sel = GpuSelectorFromJson(*g, r.Path("gpu_selector"));
    if (sel.ok()) {
      m.gpu_selector = *std::move(sel);
    } else {
      r.FailStatus(sel.status());
    }
  }
  if (auto v = r.OptionalString("gpu_type")) m.gpu_type = *v;
  if (auto v = r.OptionalString("mig_profile")) m.mig_profile = *v;
  // null (in a patch: remove the share) or absent: unlimited.
  if (r.IsNull("gpu_compute_percent")) {
    m.gpu_compute_percent.reset();
  } else if (auto v = r.OptionalInt("gpu_compute_percent")) {
    if (*v < 1 || *v > 100) {
      r.Fail("gpu_compute_percent",
             "must be a whole percent from 1 to 100 (the share of each of its GPUs' compute; "
             "leave it out for no limit)");
    }
    m.gpu_compute_percent = static_cast<int>(std::clamp<int64_t>(*v, 1, 100));
  }
  if (auto v = r.OptionalBool("cpu_offloading")) m.cpu_offloading = *v;
  if (auto v = r.OptionalBool("distributed_inference_across_workers")) {
    m.distributed_inference_across_workers = *v;
  }
  if (auto v = r.OptionalStringArray("backend_parameters")) m.backend_parameters = std::move(*v);
  if (auto v = r.OptionalStringMap("env")) m.env = std::move(*v);
  if (auto v = r.OptionalInt("context_length")) {
    if (*v < 1 || *v > kMaxContextLength) {
      r.Fail("context_length", fmt::format("must be in 1..{}", kMaxContextLength));
    }
    m.context_length = *v;
  }
  if (auto v = r.OptionalInt("max_concurrent_sequences")) {
    if (*v < 1 || *v > kMaxConcurrentSequences) {
      r.Fail("max_concurrent_sequences", fmt::format("must be in 1..{}", kMaxConcurrentSequences));
    }
    m.max_concurrent_sequences =
        static_cast<int>(std::clamp<int64_t>(*v, 0, kMaxConcurrentSequences));
  }
  if (const json::object* k = r.OptionalObject("extended_kv_cache")) {
    Result<ExtendedKvCache> kv = KvCacheFromJson(*k, r.Path("extended_kv_cache"));
    if (kv.ok()) {
      m.extended_kv_cache = *std::move(kv);
    } else {
      r.FailStatus(kv.status());
    }
  }
  if (auto v = r.OptionalBool("restart_on_error")) m.restart_on_error = *v;
}

}  // namespace

Result<ModelSource> ModelSourceFromJson(const json::object& o, const std::string& path) {
  return SourceFromJson(o, path);
}

std::string_view SourceTypeName(SourceType t) {
  switch (t) {
    case SourceType::kLocalPath:
      return "local_path";
    case SourceType::kHuggingFace:
      return "huggingface";
    case SourceType::kModelScope:
      return "modelscope";
    case SourceType::kSimulated:
      return "simulated";
  }
  return "simulated";
}

std::optional<SourceType> ParseSourceType(std::string_view s) {
  return ParseByName(s,
                     {SourceType::kLocalPath, SourceType::kHuggingFace, SourceType::kModelScope,
                      SourceType::kSimulated},
                     SourceTypeName);
}

std::string SourceKey(const ModelSource& s) {
  switch (s.type) {
    case SourceType::kLocalPath:
      return fmt::format("local_path:{}", s.path);
    case SourceType::kHuggingFace:
    case SourceType::kModelScope:
      return fmt::format("{}:{}@{}:{}", SourceTypeName(s.type), s.repo, s.revision, s.file);
    case SourceType::kSimulated:
      return fmt::format("simulated:{}:{}", s.params_b, s.size_profile);
  }
  return {};
}

std::string_view ModelCategoryName(ModelCategory c) {
  switch (c) {
    case ModelCategory::kLlm:
      return "llm";
    case ModelCategory::kEmbedding:
      return "embedding";
    case ModelCategory::kReranker:
      return "reranker";
    case ModelCategory::kSpeechToText:
      return "speech-to-text";
  }
  return "llm";
}

std::optional<ModelCategory> ParseModelCategory(std::string_view s) {
  return ParseByName(s,
                     {ModelCategory::kLlm, ModelCategory::kEmbedding, ModelCategory::kReranker,
                      ModelCategory::kSpeechToText},
                     ModelCategoryName);
}

std::string_view PlacementStrategyName(PlacementStrategy p) {
  switch (p) {
    case PlacementStrategy::kSpread:
      return "spread";
    case PlacementStrategy::kBinpack:
      return "binpack";
    case PlacementStrategy::kFragmentation:
      return "fragmentation";
  }
  return "spread";
}

std::optional<PlacementStrategy> ParsePlacementStrategy(std::string_view s) {
  return ParseByName(
      s,
      {PlacementStrategy::kSpread, PlacementStrategy::kBinpack, PlacementStrategy::kFragmentation},
      PlacementStrategyName);
}

std::string_view ReplicaSpreadName(ReplicaSpread r) {
  switch (r) {
    case ReplicaSpread::kWorker:
      return "worker";
    case ReplicaSpread::kGpu:
      return "gpu";
    case ReplicaSpread::kNone:
      return "none";
  }
  return "worker";
}

std::optional<ReplicaSpread> ParseReplicaSpread(std::string_view s) {
  return ParseByName(s, {ReplicaSpread::kWorker, ReplicaSpread::kGpu, ReplicaSpread::kNone},
                     ReplicaSpreadName);
}

std::string_view GpuSharingName(GpuSharing g) {
  switch (g) {
    case GpuSharing::kClaims:
      return "claims";
    case GpuSharing::kEnforced:
      return "enforced";
  }
  return "enforced";
}

std::optional<GpuSharing> ParseGpuSharing(std::string_view s) {
  return ParseByName(s, {GpuSharing::kClaims, GpuSharing::kEnforced}, GpuSharingName);
}

std::string_view InstanceStateName(InstanceState s) {
  switch (s) {
    case InstanceState::kPending:
      return "PENDING";
    case InstanceState::kScheduled:
      return "SCHEDULED";
    case InstanceState::kDownloading:
      return "DOWNLOADING";
    case InstanceState::kStarting:
      return "STARTING";
    case InstanceState::kRunning:
      return "RUNNING";
    case InstanceState::kError:
      return "ERROR";
    case InstanceState::kUnschedulable:
      return "UNSCHEDULABLE";
    case InstanceState::kStopping:
      return "STOPPING";
  }
  return "PENDING";
}

std::optional<InstanceState> ParseInstanceState(std::string_view s) {
  return ParseByName(
      s,
      {InstanceState::kPending, InstanceState::kScheduled, InstanceState::kDownloading,
       InstanceState::kStarting, InstanceState::kRunning, InstanceState::kError,
       InstanceState::kUnschedulable, InstanceState::kStopping},
      InstanceStateName);
}

bool IsWorkerReportedState(InstanceState s) {
  switch (s) {
    case InstanceState::kDownloading:
    case InstanceState::kStarting:
    case InstanceState::kRunning:
    case InstanceState::kError:
      return true;
    default:
      return false;
  }
}

json::object ToJson(const ModelSource& s) {
  json::object o;
  o["type"] = SourceTypeName(s.type);
  switch (s.type) {
    case SourceType::kLocalPath:
      o["path"] = s.path;
      break;
    case SourceType::kHuggingFace:
    case SourceType::kModelScope:
      o["repo"] = s.repo;
      o["revision"] = s.revision;
      if (!s.file.empty()) o["file"] = s.file;
      if (s.params_b > 0) o["params_b"] = s.params_b;
      break;
    case SourceType::kSimulated:
      o["params_b"] = s.params_b;
      if (!s.size_profile.empty()) o["size_profile"] = s.size_profile;
      break;
  }
  return o;
}

json::object ToJson(const Model& m) {
  json::object o;
  o["id"] = m.id;
  o["name"] = m.name;
  o["project_id"] = m.project_id;
  o["cluster_id"] = m.cluster_id;
  o["source"] = ToJson(m.source);
  o["backend"] = m.backend;
  o["backend_version"] = m.backend_version;
  o["replicas"] = m.replicas;
  o["ready_replicas"] = m.ready_replicas;
  json::array cats;
  for (ModelCategory c : m.categories) cats.emplace_back(ModelCategoryName(c));
  o["categories"] = std::move(cats);
  o["placement_strategy"] = PlacementStrategyName(m.placement_strategy);
  o["replica_spread"] = ReplicaSpreadName(m.replica_spread);
  if (m.gpu_sharing) {
    o["gpu_sharing"] = GpuSharingName(*m.gpu_sharing);
  } else {
    o["gpu_sharing"] = nullptr;
  }
  o["worker_selector"] = StringMap(m.worker_selector);
  o["gpu_selector"] = json::object{{"gpu_ids", StringArray(m.gpu_selector.gpu_ids)},
                                   {"gpus_per_replica", m.gpu_selector.gpus_per_replica}};
  o["gpu_type"] = m.gpu_type;
  o["mig_profile"] = m.mig_profile;
  if (m.gpu_compute_percent) {
    o["gpu_compute_percent"] = *m.gpu_compute_percent;
  } else {
    o["gpu_compute_percent"] = nullptr;
  }
  o["cpu_offloading"] = m.cpu_offloading;
  o["distributed_inference_across_workers"] = m.distributed_inference_across_workers;
  o["backend_parameters"] = StringArray(m.backend_parameters);
  o["env"] = StringMap(m.env);
  // 0 means "the default" in the model and null on the wire, so that ToJson output parses back.
  if (m.context_length > 0) {
    o["context_length"] = m.context_length;
  } else {
    o["context_length"] = nullptr;
  }
  if (m.max_concurrent_sequences > 0) {
    o["max_concurrent_sequences"] = m.max_concurrent_sequences;
  } else {
    o["max_concurrent_sequences"] = nullptr;
  }
  json::object kv;
  kv["enabled"] = m.extended_kv_cache.enabled;
  if (m.extended_kv_cache.ram_gib) kv["ram_gib"] = *m.extended_kv_cache.ram_gib;
  if (m.extended_kv_cache.ram_ratio) kv["ram_ratio"] = *m.extended_kv_cache.ram_ratio;
  if (m.extended_kv_cache.chunk_size > 0) {
    kv["chunk_size"] = m.extended_kv_cache.chunk_size;
  } else {
    kv["chunk_size"] = nullptr;
  }
  o["extended_kv_cache"] = std::move(kv);
  o["restart_on_error"] = m.restart_on_error;
  o["created_at"] = FormatRfc3339(m.created_at);
  o["updated_at"] = FormatRfc3339(m.updated_at);
  return o;
}

json::object ToJson(const ResourceClaim& c) {
  json::object vram;
  for (const auto& [index, bytes] : c.vram) vram[std::to_string(index)] = bytes;
  json::array split;
  for (double d : c.tensor_split) split.emplace_back(d);
  return json::object{{"vram", std::move(vram)},
                      {"ram", c.ram},
                      {"offload_layers", c.offload_layers},
                      {"total_layers", c.total_layers},
                      {"tensor_split", std::move(split)},
                      {"kv_cache_bytes", c.kv_cache_bytes},
                      {"weight_bytes_per_gpu", c.weight_bytes_per_gpu},
                      {"sequences", c.sequences},
                      {"context_length", c.context_length},
                      {"compute_percent", c.compute_percent}};
}

Result<ResourceClaim> ResourceClaimFromJson(const json::object& o, const std::string& path) {
  ResourceClaim c;
  auto bad = [&](std::string_view key, std::string_view want) {
    return InvalidArgumentError(fmt::format("{}.{} must be {}", path, key, want));
  };
  auto size = [&](std::string_view key, int64_t& out) -> Status {
    const json::value* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return OkStatus();
    if (!v->is_int64() || v->as_int64() < 0) return bad(key, "an integer >= 0");
    out = v->as_int64();
    return OkStatus();
  };
  if (const json::value* vram = o.if_contains("vram"); vram != nullptr) {
    if (!vram->is_object()) return bad("vram", "an object of GPU index -> bytes");
    for (const auto& [k, bytes] : vram->as_object()) {
      int index = -1;
      const auto [end, ec] = std::from_chars(k.data(), k.data() + k.size(), index);
      if (ec != std::errc() || end != k.data() + k.size() || index < 0 || !bytes.is_int64() ||
          bytes.as_int64() < 0) {
        return bad("vram", "an object of GPU index -> bytes");
      }
      c.vram[index] = bytes.as_int64();
    }
  }
  int64_t offload = 0;
  int64_t total = 0;
  RETURN_IF_ERROR(size("ram", c.ram));
  RETURN_IF_ERROR(size("offload_layers", offload));
  RETURN_IF_ERROR(size("total_layers", total));
  RETURN_IF_ERROR(size("kv_cache_bytes", c.kv_cache_bytes));
  RETURN_IF_ERROR(size("weight_bytes_per_gpu", c.weight_bytes_per_gpu));
  int64_t sequences = 0;
  RETURN_IF_ERROR(size("sequences", sequences));
  RETURN_IF_ERROR(size("context_length", c.context_length));
  int64_t compute = 0;
  RETURN_IF_ERROR(size("compute_percent", compute));
  if (compute > 100) return bad("compute_percent", "a percent from 0 to 100");
  c.compute_percent = static_cast<int>(compute);
  if (offload > INT32_MAX || total > INT32_MAX) return bad("offload_layers", "a layer count");
  if (sequences > INT32_MAX) return bad("sequences", "a sequence count");
  c.sequences = static_cast<int>(sequences);
  c.offload_layers = static_cast<int>(offload);
  c.total_layers = static_cast<int>(total);
  if (const json::value* split = o.if_contains("tensor_split"); split != nullptr) {
    if (!split->is_array()) return bad("tensor_split", "an array of numbers");
    for (const json::value& d : split->as_array()) {
      if (!d.is_number()) return bad("tensor_split", "an array of numbers");
      c.tensor_split.push_back(d.to_number<double>());
    }
  }
  return c;
}

json::object ToJson(const ModelInstance& i) {
  json::object o;
  o["id"] = i.id;
  o["model_id"] = i.model_id;
  o["project_id"] = i.project_id;
  o["name"] = i.name;
  o["state"] = InstanceStateName(i.state);
  o["state_message"] = i.state_message;
  if (i.worker_id != 0) {
    o["worker_id"] = i.worker_id;
  } else {
    o["worker_id"] = nullptr;
  }
  o["worker_name"] = i.worker_name;
  o["gpu_indexes"] = IntArray(i.gpu_indexes);
  o["port"] = i.port;
  o["claim"] = ToJson(i.claim);
  json::array servers;
  for (const DistributedServer& d : i.distributed_servers) {
    servers.emplace_back(json::object{{"worker_id", d.worker_id},
                                      {"worker_name", d.worker_name},
                                      {"gpu_indexes", IntArray(d.gpu_indexes)},
                                      {"claim", ToJson(d.claim)},
                                      {"address", d.address},
                                      {"port", d.port},
                                      {"state", d.state},
                                      {"state_message", d.state_message},
                                      {"restart_count", d.restart_count}});
  }
  o["distributed_servers"] = std::move(servers);
  o["restart_count"] = i.restart_count;
  if (i.last_restart_at) {
    o["last_restart_at"] = FormatRfc3339(*i.last_restart_at);
  } else {
    o["last_restart_at"] = nullptr;
  }
  o["unschedulable_reasons"] = StringMap(i.unschedulable_reasons);
  o["created_at"] = FormatRfc3339(i.created_at);
  o["updated_at"] = FormatRfc3339(i.updated_at);
  return o;
}

Status ValidateModel(const Model& m) {
  if (!IsValidName(m.name)) {
    return InvalidArgumentError("name must be 1-64 characters of [A-Za-z0-9._-]");
  }
  if (m.replicas < 0 || m.replicas > kMaxReplicas) {
    return InvalidArgumentError(fmt::format("replicas must be in 0..{}", kMaxReplicas));
  }
  if (m.context_length < 0 || m.context_length > kMaxContextLength) {
    return InvalidArgumentError(fmt::format("context_length must be in 1..{}", kMaxContextLength));
  }
  if (!m.backend.empty() &&
      (m.backend.size() > 64 || !std::all_of(m.backend.begin(), m.backend.end(), IsNameChar))) {
    return InvalidArgumentError("backend must be 1-64 characters of [A-Za-z0-9._-]");
  }
  if (m.backend_version.size() > 64 ||
      !std::all_of(m.backend_version.begin(), m.backend_version.end(),
                   [](char c) { return IsNameChar(c) || c == '+'; })) {
    return InvalidArgumentError("backend_version must be up to 64 characters of [A-Za-z0-9._+-]");
  }
  if (m.gpu_type.size() > 128) return InvalidArgumentError("gpu_type must be up to 128 characters");
  if (!m.mig_profile.empty() && !IsMigProfile(m.mig_profile)) {
    return InvalidArgumentError(
        "mig_profile must be a MIG profile as NVML names it, such as 1g.18gb, 3g.71gb or "
        "1c.3g.71gb");
  }
  if (m.gpu_compute_percent && (*m.gpu_compute_percent < 1 || *m.gpu_compute_percent > 100)) {
    return InvalidArgumentError(
        "gpu_compute_percent must be a whole percent from 1 to 100 (the share of each of its GPUs' "
        "compute; leave it out for no limit)");
  }
  for (const std::string& id : m.gpu_selector.gpu_ids) {
    size_t colon = id.rfind(':');
    std::string_view index =
        colon == std::string::npos ? std::string_view() : std::string_view(id).substr(colon + 1);
    if (colon == std::string::npos || colon == 0 || index.empty() || index.size() > 4 ||
        !std::all_of(index.begin(), index.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return InvalidArgumentError(fmt::format(
          "gpu_selector.gpu_ids entry '{}' must look like \"<worker_name>:<index>\"", id));
    }
  }
  std::set<std::string> ids(m.gpu_selector.gpu_ids.begin(), m.gpu_selector.gpu_ids.end());
  if (ids.size() != m.gpu_selector.gpu_ids.size()) {
    return InvalidArgumentError("gpu_selector.gpu_ids lists a GPU twice");
  }
  for (const auto& [k, v] : m.env) {
    if (!IsEnvKey(k)) {
      return InvalidArgumentError(fmt::format("env key '{}' must match [A-Za-z_][A-Za-z0-9_]*", k));
    }
  }
  for (const auto& [k, v] : m.worker_selector) {
    if (k.empty()) return InvalidArgumentError("worker_selector keys must not be empty");
  }
  if (m.source.type == SourceType::kLocalPath &&
      (m.source.path.empty() || m.source.path[0] != '/' || HasDotDotComponent(m.source.path))) {
    return InvalidArgumentError("source.path must be absolute and without '..'");
  }
  return OkStatus();
}

Result<Model> ModelFromJson(const json::object& o) {
  return NewFromJson<Model>(o, {"name", "source"}, ReadModelFields, ValidateModel);
}

Result<Model> PatchModelFromJson(const Model& current, const json::object& patch) {
  return PatchedFromJson(current, patch, ReadModelFields, ValidateModel);
}

}  // namespace segma::types
