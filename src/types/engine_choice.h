#pragma once

// Engine choice as one decision: which backend (and version) serves a model, from the model's
// source, the format of its files, the hardware it is given and the user's own choice. The
// scheduler (through controllers::DecideForModel), the server's estimator, the worker that
// launches the engine and POST /v2/model-evaluations all call ChooseEngine, so that they agree.
// Backends themselves are defined in worker/engines (engines::Backend); what the choice and the
// scheduler need of one is its BackendProfile. See docs/engines.md ("Engine choice").

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "types/model.h"
#include "types/worker.h"

namespace segma::types {

// The format of a model's files.
//  - kGguf: one .gguf file (llama.cpp's format);
//  - kSafetensors: a Hugging Face checkpoint directory (config.json with *.safetensors, or
//    PyTorch *.bin weights);
//  - kTensorRtEngine: a directory of compiled TensorRT engines (rank0.engine, ...);
//  - kUnknown: not known yet (a hub repository before its files are listed, a path the server
//    cannot read) or not files at all (simulated models).
enum class ModelFormat { kUnknown, kGguf, kSafetensors, kTensorRtEngine };
// "unknown", "gguf", "safetensors", "tensorrt-engine" (the names of Backend::model_formats).
std::string_view ModelFormatName(ModelFormat f);
// The three known formats by name; nullopt otherwise ("unknown" included).
std::optional<ModelFormat> ParseModelFormat(std::string_view s);

// The format `source` names without reading any file: kGguf for a local path or hub file glob
// ending in ".gguf" and for a hub repository whose name says GGUF ("org/Model-GGUF"); kSafetensors
// for a hub file glob of anything else. Other hub repositories (the worker downloads what the
// backend reads), local paths that are not .gguf and simulated sources are kUnknown:
// FormatOfLocalFiles reads what local files are.
ModelFormat FormatFromSource(const ModelSource& source);

// The format of the files at `path` (a file or a directory), from names only: a regular file
// "*.gguf"; a directory with "*.engine" files (TensorRT engines); a directory with config.json
// (a checkpoint); otherwise kUnknown (missing or unreadable included). Stats and lists one
// directory: call it off the request path's event loop.
ModelFormat FormatOfLocalFiles(const std::string& path);

// The format of a model: what its files at `local_files` are (FormatOfLocalFiles; "" = not on
// this machine), or else what its source names (FormatFromSource). The server passes the
// source's own path for a local_path source, a worker where it keeps the files.
ModelFormat FormatOf(const ModelSource& source, const std::string& local_files);

// What engine choice and placement need to know about one backend (engines::ProfileOf builds it
// from an engines::Backend, so there is one definition of each backend).
struct BackendProfile {
  std::string name;
  std::string default_version;
  std::vector<std::string> versions;
  // Versions with a distributed_server_command: the only ones that may span several workers.
  std::vector<std::string> distributed_versions;
  std::vector<std::string> model_formats;  // ModelFormatName values; empty = any
  std::vector<std::string> gpu_vendors;    // "nvidia", "amd", ...; empty = any
  std::string min_compute_capability;      // "8.0"; empty = none (NVIDIA only)
  bool cpu_supported = false;
  // Whether the command renders {{n_gpu_layers}}, i.e. can keep some layers in RAM
  // (llama.cpp's -ngl): only such backends get a partial offload placement.
  bool partial_offload = false;

  friend bool operator==(const BackendProfile&, const BackendProfile&) = default;
};

// Where the profiles of backends come from: the built-in backends and, on the server, those
// users defined (POST /v2/backends); on a worker, the definition the server sent with the model.
class BackendCatalog {
 public:
  virtual ~BackendCatalog() = default;
  // kNotFound for an unknown backend; other errors (the store) as they are.
  virtual Result<BackendProfile> Find(const std::string& name) const = 0;
};

// The decision.
struct EngineChoice {
  std::string backend;  // a backend name of the catalog
  std::string version;  // resolved: never empty
  ModelFormat format = ModelFormat::kUnknown;
  bool automatic = false;  // the model left `backend` empty
  // Why, in one sentence a user reads in POST /v2/model-evaluations: "automatic: the source is a
  // GGUF file, which llama.cpp reads and serves on GPUs and CPUs".
  std::string reason;
  BackendProfile profile;  // of `backend`

  friend bool operator==(const EngineChoice&, const EngineChoice&) = default;
};

// The devices an engine is given, when they are known (the worker launching an instance);
// nullopt before placement.
struct EngineHardware {
  std::vector<GpuDevice> gpus;  // empty: CPU only
};

// Chooses the backend and version for `model`, whose files are in `format`:
//  - model.backend set: that backend at model.backend_version (its default when empty). The
//    user's choice is kept even when it cannot serve `format`: CheckEngineFits says why, and the
//    scheduler's filter gives that reason for every worker.
//  - model.backend empty (automatic): simulated source -> "simulator"; GGUF -> "llama.cpp";
//    safetensors or unknown -> "vllm" (a hub repository that does not name GGUF is taken for a
//    safetensors checkpoint, which the worker downloads when the repository has one); a TensorRT
//    engine directory -> kInvalidArgument (no built-in backend serves compiled engines:
//    TensorRT-LLM serves the checkpoint).
//  - `hardware` (when known): the chosen backend must run on it: a CPU-only instance needs
//    cpu_supported, each GPU an allowed vendor and compute capability; kFailedPrecondition
//    saying why otherwise.
// kInvalidArgument for an unknown backend or version; catalog errors as they are.
Result<EngineChoice> ChooseEngine(const Model& model, ModelFormat format,
                                  const BackendCatalog& catalog,
                                  const std::optional<EngineHardware>& hardware = std::nullopt);

// Whether the profile's backend reads files in `format` (unknown formats: yes, they are checked
// once known). On failure, why: "sglang reads safetensors, not gguf".
Status ReadsFormat(const BackendProfile& profile, ModelFormat format);
// Whether `version` of the profile's backend can run across several workers.
bool RunsAcrossWorkers(const BackendProfile& profile, std::string_view version);

// The model's settings against its engine, as POST/PATCH /v2/models check them:
// kInvalidArgument naming the field for a source whose format the backend does not read
// ("source: backend sglang reads safetensors, not gguf (...)") and for
// distributed_inference_across_workers with a backend version that has no distributed command.
Status CheckEngineFits(const Model& model, const EngineChoice& choice);

// "an NVIDIA GPU with compute capability >= 7.0 or an AMD GPU", "a GPU or an x86_64/aarch64
// CPU": what the profile's backend runs on, for reasons.
std::string HardwareNeeds(const BackendProfile& profile);

// A compute capability "8.6" as 86; -1 when it is empty or malformed.
int ComputeCapability10(std::string_view cc);

}  // namespace segma::types
