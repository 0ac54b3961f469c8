#pragma once

// The URL layouts and file listings of the model hubs the worker downloads from (Hugging Face and
// ModelScope, or an internal mirror of either that speaks the same layout), and the choice of the
// files a backend needs. Pure: no I/O.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "types/model.h"

namespace segma::worker::models {

enum class Hub { kHuggingFace, kModelScope };
std::string_view HubName(Hub h);  // "huggingface", "modelscope"

// Where one hub is reached. `endpoint` has no trailing slash ("https://huggingface.co", or a
// mirror such as "https://hf-mirror.internal"); `token`, when set, is sent as a Bearer token.
struct HubEndpoint {
  std::string endpoint;
  std::string token;
};

// A file of a repository as the hub lists it. `size` is -1 and `sha256` empty when the hub does
// not say (Hugging Face lists sha256 only for LFS files).
struct RemoteFile {
  std::string path;  // relative to the repository root, '/'-separated
  int64_t size = -1;
  std::string sha256;  // lowercase hex
};

// Hugging Face: GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true
// ModelScope:   GET {endpoint}/api/v1/models/{repo}/repo/files?Revision={revision}&Recursive=true
std::string ListingUrl(Hub hub, std::string_view endpoint, std::string_view repo,
                       std::string_view revision);
// Hugging Face: {endpoint}/{repo}/resolve/{revision}/{path}
// ModelScope:   {endpoint}/api/v1/models/{repo}/repo?Revision={revision}&FilePath={path}
std::string FileUrl(Hub hub, std::string_view endpoint, std::string_view repo,
                    std::string_view revision, std::string_view path);

// Parses a listing response body. kInvalidArgument when it is not the hub's shape, or names a
// path that is absolute or has a ".." component (never written outside the cache).
Result<std::vector<RemoteFile>> ParseListing(Hub hub, std::string_view body);

// Shell-style glob (`*`, `?`, `[...]`) against a whole path or, when the pattern has no '/',
// against the file name.
bool GlobMatches(std::string_view pattern, std::string_view path);

// What to download for a deployment and what to hand the engine.
struct FileSelection {
  std::vector<RemoteFile> files;
  std::string model_file;  // the path the engine loads: a .gguf file, or "" for the directory
  std::string format;      // "gguf" or "safetensors" (also for PyTorch .bin checkpoints)
};

// Picks the files `backend` needs from `listing` ("" = decide from the files: GGUF goes to
// llama.cpp, the rest to a directory engine such as vLLM).
//  - `glob` set: the files matching it; if they are GGUF, the engine loads the first in order
//    (the first shard of a split model). Sidecar config/tokenizer files come along for the rest.
//  - GGUF (llama.cpp, or a repository of only GGUF files): the single .gguf file; several
//    candidates are kInvalidArgument naming them, so the user sets `source.file`.
//  - otherwise: *.safetensors (or *.bin when there are none) plus the JSON config, tokenizer and
//    vocabulary files.
// kNotFound when nothing fits, with what the repository holds.
Result<FileSelection> SelectFiles(const std::vector<RemoteFile>& listing, std::string_view glob,
                                  std::string_view backend);

}  // namespace segma::worker::models
