#include "types/model_file.h"

#include <cmath>

#include "types/json_codec.h"

namespace segma::types {

std::string_view ModelFileStateName(ModelFileState s) {
  switch (s) {
    case ModelFileState::kDownloading:
      return "downloading";
    case ModelFileState::kReady:
      return "ready";
    case ModelFileState::kError:
      return "error";
    case ModelFileState::kDeleting:
      return "deleting";
  }
  return "?";
}

std::optional<ModelFileState> ParseModelFileState(std::string_view s) {
  return ParseByName(s,
                     {ModelFileState::kDownloading, ModelFileState::kReady, ModelFileState::kError,
                      ModelFileState::kDeleting},
                     ModelFileStateName);
}

json::object ToJson(const ModelFile& f) {
  json::object o;
  o["id"] = f.id;
  o["worker_id"] = f.worker_id;
  o["worker_name"] = f.worker_name;
  o["source"] = ToJson(f.source);
  o["source_key"] = f.source_key;
  o["backend"] = f.backend;
  o["local_path"] = f.local_path;
  o["state"] = ModelFileStateName(f.state);
  o["state_message"] = f.state_message;
  o["size_bytes"] = f.size_bytes;
  o["downloaded_bytes"] = f.downloaded_bytes;
  double progress = 0;
  if (f.state == ModelFileState::kReady) {
    progress = 100;
  } else if (f.size_bytes > 0) {
    progress = std::floor(1000.0 * static_cast<double>(f.downloaded_bytes) /
                          static_cast<double>(f.size_bytes)) /
               10.0;
  }
  o["progress"] = std::min(progress, 100.0);
  o["created_at"] = FormatRfc3339(f.created_at);
  o["updated_at"] = FormatRfc3339(f.updated_at);
  return o;
}

}  // namespace segma::types
