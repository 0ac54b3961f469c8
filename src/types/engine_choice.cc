#include "types/engine_choice.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "types/json_codec.h"

namespace segma::types {

namespace {

bool Contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

bool EndsWithNoCase(std::string_view s, std::string_view suffix) {
  if (s.size() < suffix.size()) return false;
  s = s.substr(s.size() - suffix.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) != suffix[i]) return false;
  }
  return true;
}

bool ContainsNoCase(std::string_view s, std::string_view needle) {
  std::string lower(s);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower.find(needle) != std::string::npos;
}

std::string VendorName(std::string_view vendor) {
  if (vendor == "nvidia") return "NVIDIA";
  if (vendor == "amd") return "AMD";
  if (vendor == "intel") return "Intel";
  std::string s(vendor);
  if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s;
}

// "a GGUF file", for reasons.
std::string_view Described(ModelFormat f) {
  switch (f) {
    case ModelFormat::kGguf:
      return "a GGUF file";
    case ModelFormat::kSafetensors:
      return "a safetensors checkpoint";
    case ModelFormat::kTensorRtEngine:
      return "a TensorRT engine directory";
    case ModelFormat::kUnknown:
      break;
  }
  return "files of a format not known yet";
}

// Why `profile` cannot run on `hw`, or "" when it can.
std::string HardwareProblem(const BackendProfile& profile, const EngineHardware& hw) {
  if (hw.gpus.empty()) {
    if (profile.cpu_supported) return "";
    return fmt::format("{} cannot run on a CPU only: it needs {}", profile.name,
                       HardwareNeeds(profile));
  }
  const int min_cc10 = ComputeCapability10(profile.min_compute_capability);
  for (const GpuDevice& g : hw.gpus) {
    const bool vendor_ok = profile.gpu_vendors.empty() || Contains(profile.gpu_vendors, g.vendor);
    const int cc10 = ComputeCapability10(g.compute_capability);
    const bool cc_ok = g.vendor != "nvidia" || min_cc10 < 0 || cc10 < 0 || cc10 >= min_cc10;
    if (!vendor_ok || !cc_ok) {
      return fmt::format("{} cannot run on GPU {} ({} {}, compute capability {}): it needs {}",
                         profile.name, g.index, VendorName(g.vendor), g.name,
                         g.compute_capability.empty() ? "unknown" : g.compute_capability,
                         HardwareNeeds(profile));
    }
  }
  return "";
}

}  // namespace

std::string_view ModelFormatName(ModelFormat f) {
  switch (f) {
    case ModelFormat::kGguf:
      return "gguf";
    case ModelFormat::kSafetensors:
      return "safetensors";
    case ModelFormat::kTensorRtEngine:
      return "tensorrt-engine";
    case ModelFormat::kUnknown:
      break;
  }
  return "unknown";
}

std::optional<ModelFormat> ParseModelFormat(std::string_view s) {
  return ParseByName(s,
                     {ModelFormat::kGguf, ModelFormat::kSafetensors, ModelFormat::kTensorRtEngine},
                     ModelFormatName);
}

int ComputeCapability10(std::string_view cc) {
  size_t dot = cc.find('.');
  if (cc.empty() || dot == 0 || dot == std::string_view::npos || dot + 1 >= cc.size()) return -1;
  int major = 0;
  for (char c : cc.substr(0, dot)) {
    if (c < '0' || c > '9') return -1;
    major = major * 10 + (c - '0');
    if (major > 99) return -1;
  }
  char minor = cc[dot + 1];
  if (minor < '0' || minor > '9') return -1;
  return major * 10 + (minor - '0');
}

ModelFormat FormatFromSource(const ModelSource& source) {
  switch (source.type) {
    case SourceType::kSimulated:
      return ModelFormat::kUnknown;
    case SourceType::kLocalPath:
      return EndsWithNoCase(source.path, ".gguf") ? ModelFormat::kGguf : ModelFormat::kUnknown;
    case SourceType::kHuggingFace:
    case SourceType::kModelScope:
      if (!source.file.empty()) {
        return EndsWithNoCase(source.file, ".gguf") ? ModelFormat::kGguf
                                                    : ModelFormat::kSafetensors;
      }
      return ContainsNoCase(source.repo, "gguf") ? ModelFormat::kGguf : ModelFormat::kUnknown;
  }
  return ModelFormat::kUnknown;
}

ModelFormat FormatOfLocalFiles(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (path.empty()) return ModelFormat::kUnknown;
  if (fs::is_regular_file(path, ec)) {
    return EndsWithNoCase(path, ".gguf") ? ModelFormat::kGguf : ModelFormat::kUnknown;
  }
  if (!fs::is_directory(path, ec)) return ModelFormat::kUnknown;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".engine") return ModelFormat::kTensorRtEngine;
  }
  if (fs::exists(fs::path(path) / "config.json", ec)) return ModelFormat::kSafetensors;
  return ModelFormat::kUnknown;
}

ModelFormat FormatOf(const ModelSource& source, const std::string& local_files) {
  const ModelFormat local = FormatOfLocalFiles(local_files);
  return local != ModelFormat::kUnknown ? local : FormatFromSource(source);
}

std::string HardwareNeeds(const BackendProfile& p) {
  std::vector<std::string> parts;
  const std::string cc = p.min_compute_capability;
  if (p.gpu_vendors.empty()) {
    parts.push_back(cc.empty() ? "a GPU"
                               : fmt::format("a GPU (NVIDIA: compute capability >= {})", cc));
  } else {
    for (const std::string& v : p.gpu_vendors) {
      const std::string name = VendorName(v);
      const bool vowel_sound =
          std::string_view("AEIOU").find(name[0]) != std::string_view::npos || v == "nvidia";
      const std::string article = vowel_sound ? "an" : "a";
      if (v == "nvidia" && !cc.empty()) {
        parts.push_back(fmt::format("{} {} GPU with compute capability >= {}", article, name, cc));
      } else {
        parts.push_back(fmt::format("{} {} GPU", article, name));
      }
    }
  }
  if (p.cpu_supported) parts.emplace_back("an x86_64/aarch64 CPU");
  return fmt::format("{}", fmt::join(parts, " or "));
}

Status ReadsFormat(const BackendProfile& profile, ModelFormat format) {
  if (format == ModelFormat::kUnknown || profile.model_formats.empty() ||
      Contains(profile.model_formats, ModelFormatName(format))) {
    return OkStatus();
  }
  return FailedPreconditionError(fmt::format("{} reads {}, not {}", profile.name,
                                             fmt::join(profile.model_formats, " or "),
                                             ModelFormatName(format)));
}

bool RunsAcrossWorkers(const BackendProfile& profile, std::string_view version) {
  return Contains(profile.distributed_versions, version);
}

Result<EngineChoice> ChooseEngine(const Model& model, ModelFormat format,
                                  const BackendCatalog& catalog,
                                  const std::optional<EngineHardware>& hardware) {
  EngineChoice c;
  c.format = format;
  c.backend = model.backend;
  if (c.backend.empty()) {
    c.automatic = true;
    if (model.source.type == SourceType::kSimulated) {
      c.backend = "simulator";
      c.reason = "automatic: a simulated model runs on segma's simulated engine";
    } else if (format == ModelFormat::kGguf) {
      c.backend = "llama.cpp";
      c.reason =
          "automatic: the model is a GGUF file, which llama.cpp reads; it serves on GPUs and on "
          "CPUs, and can keep layers in RAM when the GPU is too small";
    } else if (format == ModelFormat::kSafetensors) {
      c.backend = "vllm";
      c.reason =
          "automatic: the model is a safetensors checkpoint, which vLLM serves with continuous "
          "batching and paged KV cache on NVIDIA and AMD GPUs";
    } else if (format == ModelFormat::kUnknown) {
      c.backend = "vllm";
      c.reason =
          "automatic: the files cannot be read here, so they are taken for a safetensors "
          "checkpoint (served by vLLM); a .gguf path or a repository that names GGUF would go "
          "to llama.cpp";
    } else {
      return InvalidArgumentError(
          "source: no built-in backend serves a TensorRT engine directory (TensorRT-LLM "
          "serves the Hugging Face checkpoint): point source at the checkpoint, or define a "
          "backend whose model_formats include tensorrt-engine");
    }
  } else {
    c.reason = fmt::format("backend {} as the model asks", c.backend);
  }
  Result<BackendProfile> profile = catalog.Find(c.backend);
  if (!profile.ok()) {
    if (profile.status().code() != StatusCode::kNotFound) return profile.status();
    return InvalidArgumentError(fmt::format(
        "backend '{}' does not exist (GET /v2/backends lists the backends)", c.backend));
  }
  c.profile = std::move(profile).value();
  c.version = model.backend_version.empty() ? c.profile.default_version : model.backend_version;
  if (!Contains(c.profile.versions, c.version)) {
    return InvalidArgumentError(fmt::format("backend '{}' has no version '{}' (versions: {})",
                                            c.backend, c.version,
                                            fmt::join(c.profile.versions, ", ")));
  }
  if (hardware) {
    if (std::string problem = HardwareProblem(c.profile, *hardware); !problem.empty()) {
      return FailedPreconditionError(problem);
    }
  }
  return c;
}

Status CheckEngineFits(const Model& model, const EngineChoice& choice) {
  if (Status s = ReadsFormat(choice.profile, choice.format); !s.ok()) {
    return InvalidArgumentError(fmt::format("source: backend {} cannot serve {} ({}){}",
                                            choice.backend, Described(choice.format), s.message(),
                                            choice.format == ModelFormat::kGguf
                                                ? ": use backend llama.cpp, or leave backend empty"
                                                : ""));
  }
  if (model.distributed_inference_across_workers &&
      !RunsAcrossWorkers(choice.profile, choice.version)) {
    return InvalidArgumentError(fmt::format(
        "distributed_inference_across_workers: backend {} (version {}{}) cannot run across "
        "workers: it has no distributed_server_command",
        choice.backend, choice.version, choice.automatic ? ", chosen automatically" : ""));
  }
  return OkStatus();
}

}  // namespace segma::types
