#pragma once

// safetensors headers: u64 little-endian header length N, then N bytes of JSON
//   {"__metadata__": {...}, "<tensor>": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}}
// followed by the tensor data (offsets relative to the end of the header). Only the header is
// read; it is enough to size a model.

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace segma::estimate {

// Headers larger than this are rejected (the format's own reference implementation uses 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Bytes per element of a safetensors dtype name ("F16", "BF16", "F8_E4M3", ...), or nullopt if
// unknown. Sub-byte types (F4, F6_*) are not accepted.
std::optional<uint64_t> SafetensorsDtypeBytes(std::string_view dtype);

struct SafetensorsTensor {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;  // data_offsets, relative to the data section
  uint64_t end = 0;

  uint64_t element_count() const;
};

struct SafetensorsHeader {
  uint64_t header_bytes = 0;                    // N, the JSON length
  std::map<std::string, std::string> metadata;  // "__metadata__" (string values only)
  std::vector<SafetensorsTensor> tensors;       // sorted by name
  std::map<std::string, uint64_t> bytes_per_dtype;
  uint64_t parameter_count = 0;
  uint64_t data_bytes = 0;  // sum of tensor sizes
};

// Parses a safetensors header from the first bytes of a file. `data` must hold at least the
// 8-byte length and the JSON header; tensor data may be absent. When `file_size` is given, every
// tensor's data must lie inside the file. kInvalidArgument for anything malformed: header length
// beyond the input or above kMaxSafetensorsHeaderBytes, broken JSON, unknown dtype, shape/offset
// mismatch, overflowing shapes, overlapping data. Thread-safe.
Result<SafetensorsHeader> ParseSafetensorsHeader(std::span<const uint8_t> data,
                                                 std::optional<uint64_t> file_size = std::nullopt);
// Reads just the header of the file at `path`. kNotFound if it cannot be opened.
Result<SafetensorsHeader> ReadSafetensorsFile(const std::string& path);

// model.safetensors.index.json: {"metadata": {"total_size": N}, "weight_map": {tensor: shard}}.
struct SafetensorsIndex {
  std::optional<uint64_t> total_size;
  std::map<std::string, std::string> weight_map;  // tensor name → shard file name
  std::vector<std::string> shards;                // distinct shard files, sorted

  // kInvalidArgument for a malformed index (missing weight_map, non-string shard names, shard
  // names with '/' or "..", which could escape the model directory).
  static Result<SafetensorsIndex> Parse(std::string_view json_text);
};

// Sums several headers (the shards of one model).
SafetensorsHeader MergeSafetensorsHeaders(std::span<const SafetensorsHeader> shards);

// Reads a sharded model: the index at `index_path`, then the header of every shard (resolved
// relative to the index's directory). Checks that each tensor of the weight map is in its shard.
Result<SafetensorsHeader> ReadShardedSafetensors(const std::string& index_path);

}  // namespace segma::estimate
