#pragma once

// The model files a worker holds in its cache for a hub source (one row per worker and file
// selection), with their download state. REST: GET /v2/model-files, DELETE /v2/model-files/{id};
// workers report them through /v2/worker/model-files. See docs/model-files.md.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "types/model.h"

namespace segma::types {

enum class ModelFileState {
  kDownloading,
  kReady,
  kError,
  kDeleting,  // an admin asked for removal; the worker deletes the files, then the row
};
std::string_view ModelFileStateName(ModelFileState s);  // "downloading", "ready", ...
std::optional<ModelFileState> ParseModelFileState(std::string_view s);

struct ModelFile {
  int64_t id = 0;
  int64_t worker_id = 0;
  std::string worker_name;  // derived on read
  ModelSource source;       // a Hugging Face or ModelScope source
  std::string source_key;   // SourceKey(source)
  std::string backend;      // the file choice depends on it ("" = automatic)
  std::string local_path;   // what the engine loads (a file or the snapshot directory)
  ModelFileState state = ModelFileState::kDownloading;
  std::string state_message;
  int64_t size_bytes = 0;        // total of the chosen files; 0 while unknown
  int64_t downloaded_bytes = 0;  // of size_bytes
  Timestamp created_at{};
  Timestamp updated_at{};

  friend bool operator==(const ModelFile&, const ModelFile&) = default;
};

// {"id","worker_id","worker_name","source","source_key","backend","local_path","state",
//  "state_message","size_bytes","downloaded_bytes","progress" (0-100, one decimal),
//  "created_at","updated_at"}
json::object ToJson(const ModelFile& f);

}  // namespace segma::types
