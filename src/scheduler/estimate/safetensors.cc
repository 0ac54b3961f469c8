#include "scheduler/estimate/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "common/json.h"

namespace segma::estimate {
namespace {

constexpr uint64_t kLimit = uint64_t{1} << 62;

Status Invalid(std::string_view what) {
  return InvalidArgumentError(fmt::format("safetensors: {}", what));
}

std::optional<uint64_t> JsonUint(const json::value& v) {
  if (v.is_uint64()) return v.as_uint64();
  if (v.is_int64() && v.as_int64() >= 0) return static_cast<uint64_t>(v.as_int64());
  return std::nullopt;
}

Result<SafetensorsTensor> ParseTensor(const std::string& name, const json::value& v) {
  if (!v.is_object()) return Invalid(fmt::format("tensor '{}' is not an object", name));
  const json::object& o = v.as_object();
  SafetensorsTensor t;
  t.name = name;
  const json::value* dtype = o.if_contains("dtype");
  const json::value* shape = o.if_contains("shape");
  const json::value* offsets = o.if_contains("data_offsets");
  if (dtype == nullptr || !dtype->is_string()) {
    return Invalid(fmt::format("tensor '{}' has no string dtype", name));
  }
  t.dtype = std::string(dtype->as_string());
  const std::optional<uint64_t> elem_bytes = SafetensorsDtypeBytes(t.dtype);
  if (!elem_bytes) return Invalid(fmt::format("tensor '{}' has unknown dtype '{}'", name, t.dtype));
  if (shape == nullptr || !shape->is_array()) {
    return Invalid(fmt::format("tensor '{}' has no shape array", name));
  }
  if (shape->as_array().size() > 16) {
    return Invalid(fmt::format("tensor '{}' has more than 16 dims", name));
  }
  uint64_t elems = 1;
  for (const json::value& d : shape->as_array()) {
    std::optional<uint64_t> dim = JsonUint(d);
    if (!dim || *dim >= kLimit) return Invalid(fmt::format("tensor '{}' has a bad dim", name));
    if (*dim != 0 && elems > kLimit / *dim) {
      return Invalid(fmt::format("tensor '{}' shape overflows", name));
    }
    elems *= *dim;
    t.shape.push_back(*dim);
  }
  if (elems > kLimit / *elem_bytes) return Invalid(fmt::format("tensor '{}' size overflows", name));
  if (offsets == nullptr || !offsets->is_array() || offsets->as_array().size() != 2) {
    return Invalid(fmt::format("tensor '{}' needs data_offsets [begin, end]", name));
  }
  std::optional<uint64_t> b = JsonUint(offsets->as_array()[0]);
  std::optional<uint64_t> e = JsonUint(offsets->as_array()[1]);
  if (!b || !e || *b > *e || *e >= kLimit) {
    return Invalid(fmt::format("tensor '{}' has bad data_offsets", name));
  }
  t.begin = *b;
  t.end = *e;
  if (t.end - t.begin != elems * *elem_bytes) {
    return Invalid(fmt::format("tensor '{}': data_offsets span {} bytes but {} x {} needs {}", name,
                               t.end - t.begin, elems, t.dtype, elems * *elem_bytes));
  }
  return t;
}

Result<std::string> ReadHeaderBytes(const std::string& path, uint64_t* file_size) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return NotFoundError(fmt::format("cannot open '{}'", path));
  const std::streamoff size = in.tellg();
  if (size < 8) return Invalid(fmt::format("'{}' is shorter than 8 bytes", path));
  *file_size = static_cast<uint64_t>(size);
  in.seekg(0);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  if (!in) return UnavailableError(fmt::format("cannot read '{}'", path));
  if (n > kMaxSafetensorsHeaderBytes || n > *file_size - 8) {
    return Invalid(fmt::format("'{}': header length {} exceeds the file or the {} byte limit", path,
                               n, kMaxSafetensorsHeaderBytes));
  }
  std::string buf(8 + n, '\0');
  std::memcpy(buf.data(), &n, 8);
  in.read(buf.data() + 8, static_cast<std::streamsize>(n));
  if (!in) return UnavailableError(fmt::format("cannot read '{}'", path));
  return buf;
}

}  // namespace

std::optional<uint64_t> SafetensorsDtypeBytes(std::string_view dtype) {
  static constexpr std::pair<std::string_view, uint64_t> kDtypes[] = {
      {"BOOL", 1},    {"U8", 1},  {"I8", 1},          {"F8_E4M3", 1},     {"F8_E5M2", 1},
      {"F8_E8M0", 1}, {"I16", 2}, {"U16", 2},         {"F16", 2},         {"BF16", 2},
      {"I32", 4},     {"U32", 4}, {"F32", 4},         {"I64", 8},         {"U64", 8},
      {"F64", 8},     {"C64", 8}, {"F8_E4M3FNUZ", 1}, {"F8_E5M2FNUZ", 1},
  };
  for (const auto& [name, bytes] : kDtypes) {
    if (name == dtype) return bytes;
  }
  return std::nullopt;
}

uint64_t SafetensorsTensor::element_count() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

Result<SafetensorsHeader> ParseSafetensorsHeader(std::span<const uint8_t> data,
                                                 std::optional<uint64_t> file_size) {
  if (data.size() < 8) return Invalid("input shorter than the 8-byte header length");
  uint64_t n = 0;
  std::memcpy(&n, data.data(), 8);
  if (n > kMaxSafetensorsHeaderBytes) {
    return Invalid(
        fmt::format("header length {} exceeds the {} byte limit", n, kMaxSafetensorsHeaderBytes));
  }
  if (n > data.size() - 8) {
    return Invalid(
        fmt::format("header length {} exceeds the {} bytes available", n, data.size() - 8));
  }
  if (file_size && *file_size < data.size()) return Invalid("file size smaller than the input");
  std::string_view text(reinterpret_cast<const char*>(data.data() + 8), n);
  auto parsed = ParseJson(text);
  if (!parsed.ok()) return Invalid(parsed.status().message());
  if (!parsed->is_object()) return Invalid("header is not a JSON object");

  SafetensorsHeader h;
  h.header_bytes = n;
  for (const auto& kv : parsed->as_object()) {
    const std::string key(kv.key());
    if (key == "__metadata__") {
      if (!kv.value().is_object()) return Invalid("__metadata__ is not an object");
      for (const auto& m : kv.value().as_object()) {
        if (m.value().is_string()) h.metadata[std::string(m.key())] = m.value().as_string();
      }
      continue;
    }
    ASSIGN_OR_RETURN(SafetensorsTensor t, ParseTensor(key, kv.value()));
    h.tensors.push_back(std::move(t));
  }
  std::sort(h.tensors.begin(), h.tensors.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  for (size_t i = 1; i < h.tensors.size(); ++i) {
    if (h.tensors[i].name == h.tensors[i - 1].name) {
      return Invalid(fmt::format("duplicate tensor '{}'", h.tensors[i].name));
    }
  }

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const SafetensorsTensor& t : h.tensors) {
    if (file_size && t.end > *file_size - 8 - n) {
      return Invalid(fmt::format("tensor '{}' data ends at {} beyond the file", t.name, t.end));
    }
    if (t.end > t.begin) ranges.emplace_back(t.begin, t.end);
    h.bytes_per_dtype[t.dtype] += t.end - t.begin;
    h.parameter_count += t.element_count();
    h.data_bytes += t.end - t.begin;
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return Invalid(fmt::format("tensor data at {} overlaps another tensor", ranges[i].first));
    }
  }
  return h;
}

Result<SafetensorsHeader> ReadSafetensorsFile(const std::string& path) {
  uint64_t file_size = 0;
  ASSIGN_OR_RETURN(std::string buf, ReadHeaderBytes(path, &file_size));
  auto h = ParseSafetensorsHeader(
      std::span(reinterpret_cast<const uint8_t*>(buf.data()), buf.size()), file_size);
  if (!h.ok()) return Status(h.status().code(), fmt::format("{}: {}", path, h.status().message()));
  return h;
}

Result<SafetensorsIndex> SafetensorsIndex::Parse(std::string_view json_text) {
  ASSIGN_OR_RETURN(json::value v, ParseJson(json_text));
  if (!v.is_object()) return Invalid("index is not a JSON object");
  SafetensorsIndex idx;
  if (const json::value* meta = v.as_object().if_contains("metadata"); meta && meta->is_object()) {
    if (const json::value* total = meta->as_object().if_contains("total_size")) {
      idx.total_size = JsonUint(*total);
      if (!idx.total_size && total->is_double() && total->as_double() >= 0 &&
          total->as_double() < 1e18) {
        idx.total_size = static_cast<uint64_t>(total->as_double());
      }
    }
  }
  const json::value* map = v.as_object().if_contains("weight_map");
  if (map == nullptr || !map->is_object()) return Invalid("index has no weight_map object");
  std::set<std::string> shards;
  for (const auto& kv : map->as_object()) {
    if (!kv.value().is_string()) {
      return Invalid(fmt::format("weight_map entry '{}' is not a string", std::string(kv.key())));
    }
    std::string shard(kv.value().as_string());
    if (shard.empty() || shard.find('/') != std::string::npos ||
        shard.find('\\') != std::string::npos || shard == "." || shard == "..") {
      return Invalid(fmt::format("weight_map shard name '{}' is not a plain file name", shard));
    }
    shards.insert(shard);
    idx.weight_map[std::string(kv.key())] = std::move(shard);
  }
  idx.shards.assign(shards.begin(), shards.end());
  return idx;
}

SafetensorsHeader MergeSafetensorsHeaders(std::span<const SafetensorsHeader> shards) {
  SafetensorsHeader all;
  for (const SafetensorsHeader& h : shards) {
    all.header_bytes += h.header_bytes;
    all.metadata.insert(h.metadata.begin(), h.metadata.end());
    all.tensors.insert(all.tensors.end(), h.tensors.begin(), h.tensors.end());
    for (const auto& [dtype, bytes] : h.bytes_per_dtype) all.bytes_per_dtype[dtype] += bytes;
    all.parameter_count += h.parameter_count;
    all.data_bytes += h.data_bytes;
  }
  std::sort(all.tensors.begin(), all.tensors.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  return all;
}

Result<SafetensorsHeader> ReadShardedSafetensors(const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary | std::ios::ate);
  if (!in) return NotFoundError(fmt::format("cannot open '{}'", index_path));
  const std::streamoff size = in.tellg();
  if (size < 0 || static_cast<uint64_t>(size) > kMaxSafetensorsHeaderBytes) {
    return Invalid(fmt::format("'{}' is too large for an index", index_path));
  }
  std::string text(static_cast<size_t>(size), '\0');
  in.seekg(0);
  in.read(text.data(), size);
  if (!in) return UnavailableError(fmt::format("cannot read '{}'", index_path));
  ASSIGN_OR_RETURN(SafetensorsIndex idx, SafetensorsIndex::Parse(text));

  const std::filesystem::path dir = std::filesystem::path(index_path).parent_path();
  std::vector<SafetensorsHeader> headers;
  for (const std::string& shard : idx.shards) {
    ASSIGN_OR_RETURN(SafetensorsHeader h, ReadSafetensorsFile((dir / shard).string()));
    for (const auto& [tensor, file] : idx.weight_map) {
      if (file != shard) continue;
      const bool found =
          std::ranges::binary_search(h.tensors, tensor, {}, &SafetensorsTensor::name);
      if (!found) {
        return Invalid(
            fmt::format("tensor '{}' of the weight map is not in shard '{}'", tensor, shard));
      }
    }
    headers.push_back(std::move(h));
  }
  return MergeSafetensorsHeaders(headers);
}

}  // namespace segma::estimate
