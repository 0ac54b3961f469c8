#pragma once

// GGUF (llama.cpp's model file format), versions 2 and 3: the ggml type table, a bounds-checked
// reader and a streaming writer.
//
// Layout (all integers little-endian):
//   "GGUF" u32 version u64 n_tensors u64 n_kv
//   n_kv × { string key, u32 value_type, value }
//   n_tensors × { string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset }
//   padding to `general.alignment` (default 32), then tensor data; each tensor's offset is
//   relative to the start of the data section and a multiple of the alignment.
// A string is u64 length + bytes (no terminator); an array is u32 element type, u64 count,
// elements. Dims are in ggml order: dims[0] is the contiguous (row) dimension, so token_embd is
// [n_embd, n_vocab].

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace segma::estimate {

// ggml tensor element types, numbered as in ggml.h (gaps are types removed from ggml).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
  kNVFP4 = 40,
  kQ1_0 = 41,
  kQ2_0 = 42,
};

// Storage of one ggml type: `block_size` elements take `type_size` bytes.
struct GgmlTypeTraits {
  GgmlType type;
  std::string_view name;  // "f16", "q8_0", "q4_K", ... as ggml_type_name() prints it
  uint32_t block_size;
  uint32_t type_size;
};

// Returns the traits of ggml type number `type`; kInvalidArgument for numbers ggml does not know
// (or no longer supports, such as the removed Q4_2 and Q4_0_4_4).
Result<GgmlTypeTraits> GgmlTypeInfo(uint32_t type);
// Looks a type up by its ggml name ("f16", "Q8_0"; case-insensitive). kInvalidArgument if unknown.
Result<GgmlType> ParseGgmlType(std::string_view name);
std::string_view GgmlTypeName(GgmlType type);

// Bytes taken by a tensor of `type` with ggml dims `dims`. kInvalidArgument if dims[0] is not a
// multiple of the type's block size or the size overflows 63 bits.
Result<uint64_t> GgmlTensorBytes(GgmlType type, std::span<const uint64_t> dims);

// Encodes `n` floats (`n` a multiple of the block size) as ggml `type` into `out`, which must hold
// exactly the encoded size. Supports F32, F16, BF16 and Q8_0; kUnimplemented for other types,
// kInvalidArgument on size mismatch.
Status EncodeRow(std::span<const float> in, GgmlType type, std::span<uint8_t> out);
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);

enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
std::string_view GgufValueTypeName(GgufValueType type);

// One metadata value. Scalars keep their exact GGUF type so a value read from one file is written
// back bit-identically (the test-model writer copies `tokenizer.*` keys this way). Arrays of
// fixed-size elements keep their raw little-endian bytes, which bounds memory by the file size.
class GgufValue {
 public:
  GgufValue() = default;  // uint8 0

  static GgufValue Uint8(uint8_t v);
  static GgufValue Int8(int8_t v);
  static GgufValue Uint16(uint16_t v);
  static GgufValue Int16(int16_t v);
  static GgufValue Uint32(uint32_t v);
  static GgufValue Int32(int32_t v);
  static GgufValue Uint64(uint64_t v);
  static GgufValue Int64(int64_t v);
  static GgufValue Float32(float v);
  static GgufValue Float64(double v);
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  static GgufValue StringArray(std::vector<std::string> v);
  static GgufValue Int32Array(std::span<const int32_t> v);
  static GgufValue Float32Array(std::span<const float> v);
  // An array of fixed-size elements from their little-endian bytes. Precondition: `elem` is not
  // kString or kArray and `raw.size()` is a multiple of the element size.
  static GgufValue RawArray(GgufValueType elem, std::vector<uint8_t> raw);
  static GgufValue NestedArray(std::vector<GgufValue> elems);  // array of arrays

  GgufValueType type() const { return type_; }
  bool is_array() const { return type_ == GgufValueType::kArray; }

  // Integer value of any integer or bool scalar; nullopt for other types or, for AsUint, negatives.
  std::optional<int64_t> AsInt() const;
  std::optional<uint64_t> AsUint() const;
  // Any numeric scalar as double.
  std::optional<double> AsDouble() const;
  // nullptr unless a string.
  const std::string* AsString() const;

  // Arrays: the element type, the element count, and the elements in their stored form.
  GgufValueType array_type() const { return array_type_; }
  uint64_t array_size() const;
  const std::vector<uint8_t>& array_raw() const { return raw_; }
  const std::vector<std::string>& array_strings() const { return strings_; }
  const std::vector<GgufValue>& array_values() const { return nested_; }
  // Element `i` of an integer array (nullopt if out of range or not an integer array).
  std::optional<int64_t> ArrayInt(uint64_t i) const;

  friend bool operator==(const GgufValue&, const GgufValue&) = default;

 private:
  GgufValueType type_ = GgufValueType::kUint8;
  uint64_t bits_ = 0;  // integers (two's complement), bool, or the IEEE bits of a float
  std::string str_;
  GgufValueType array_type_ = GgufValueType::kUint8;
  std::vector<uint8_t> raw_;
  std::vector<std::string> strings_;
  std::vector<GgufValue> nested_;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order, at most 4
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;  // relative to the data section
  uint64_t size_bytes = 0;

  uint64_t element_count() const;
};

struct GgufFile {
  uint32_t version = 3;
  std::vector<std::pair<std::string, GgufValue>> metadata;  // file order, keys unique
  std::vector<GgufTensorInfo> tensors;                      // file order, names unique
  uint64_t alignment = 32;
  uint64_t data_offset = 0;  // absolute offset of the data section
  uint64_t file_size = 0;    // bytes of the whole file (or buffer) parsed

  // nullptr if `key` is absent.
  const GgufValue* Find(std::string_view key) const;
  std::optional<uint64_t> FindUint(std::string_view key) const;
  const std::string* FindString(std::string_view key) const;
  // Sum of all tensor sizes.
  uint64_t TensorDataBytes() const;
};

struct GgufParseOptions {
  // When true, every tensor's data must lie inside the input; turn off to parse only the header
  // prefix of a file (e.g. from an HTTP range read).
  bool require_tensor_data = true;
  // Arrays may nest this deep (llama.cpp itself writes no nested arrays).
  int max_array_depth = 3;
};

// Parses a GGUF file held in `data`. Never reads outside `data`, never allocates more than a
// small multiple of `data.size()`. kInvalidArgument, with the byte offset and what was wrong, for
// anything malformed: bad magic, unsupported version, counts or lengths beyond the input, unknown
// value or ggml types, duplicate keys or tensor names, too many dims, size overflow, misaligned or
// overlapping tensor data. Thread-safe (no shared state).
Result<GgufFile> ParseGguf(std::span<const uint8_t> data, const GgufParseOptions& options = {});
// Reads and parses the header of the GGUF file at `path`, reading only the header bytes (tensor
// data is checked against the file size, not read). kNotFound if the file cannot be opened,
// otherwise as ParseGguf.
Result<GgufFile> ReadGgufFile(const std::string& path, const GgufParseOptions& options = {});

// Fills `out` with the encoded data of rows [first_row, first_row + n_rows) of `tensor`. A row is
// dims[0] elements; 0- and 1-dimensional tensors have one row.
using TensorFiller = std::function<Status(const GgufTensorInfo& tensor, uint64_t first_row,
                                          uint64_t n_rows, std::span<uint8_t> out)>;
// Receives the file bytes in order.
using ByteSink = std::function<Status(std::span<const uint8_t> bytes)>;

// Builds a GGUF v3 file: metadata and tensor descriptions first, then streams tensor data in
// chunks of whole rows (a few MiB) from a TensorFiller, so multi-GB files need little memory.
// Not thread-safe.
class GgufWriter {
 public:
  GgufWriter() = default;

  // Adds or replaces `key`. Setting `general.alignment` (uint32, power of two) changes the
  // alignment used for tensor data.
  void SetMetadata(std::string key, GgufValue value);
  // Adds a tensor. kInvalidArgument for an empty or >63-byte or duplicate name, more than 4 dims,
  // or dims[0] not a multiple of the type's block size.
  Status AddTensor(std::string name, std::vector<uint64_t> dims, GgmlType type);

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  // Writes the whole file to `sink`. Errors from `sink` or `fill` are returned as they are.
  Status Write(const TensorFiller& fill, const ByteSink& sink) const;
  // Writes to `path` (truncating it). kUnavailable if the file cannot be written.
  Status WriteFile(const std::string& path, const TensorFiller& fill) const;
  Result<std::vector<uint8_t>> WriteToBuffer(const TensorFiller& fill) const;

 private:
  uint64_t Alignment() const;

  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace segma::estimate
