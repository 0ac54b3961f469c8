#include "scheduler/estimate/gguf.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <set>

#include <fmt/format.h>

namespace segma::estimate {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF I/O assumes a little-endian host");

constexpr uint32_t kQK_K = 256;
constexpr uint64_t kMaxDims = 4;
constexpr uint64_t kMaxTensorName = 63;  // GGML_MAX_NAME (64) including the terminator
constexpr uint64_t kDefaultAlignment = 32;

constexpr std::array<GgmlTypeTraits, 35> kTypes = {{
    {GgmlType::kF32, "f32", 1, 4},
    {GgmlType::kF16, "f16", 1, 2},
    {GgmlType::kQ4_0, "q4_0", 32, 2 + 16},
    {GgmlType::kQ4_1, "q4_1", 32, 2 + 2 + 16},
    {GgmlType::kQ5_0, "q5_0", 32, 2 + 4 + 16},
    {GgmlType::kQ5_1, "q5_1", 32, 2 + 2 + 4 + 16},
    {GgmlType::kQ8_0, "q8_0", 32, 2 + 32},
    {GgmlType::kQ8_1, "q8_1", 32, 4 + 4 + 32},
    {GgmlType::kQ2_K, "q2_K", kQK_K, 2 + 2 + kQK_K / 16 + kQK_K / 4},
    {GgmlType::kQ3_K, "q3_K", kQK_K, 2 + kQK_K / 4 + kQK_K / 8 + 12},
    {GgmlType::kQ4_K, "q4_K", kQK_K, 2 + 2 + kQK_K / 2 + 12},
    {GgmlType::kQ5_K, "q5_K", kQK_K, 2 + 2 + kQK_K / 2 + kQK_K / 8 + 12},
    {GgmlType::kQ6_K, "q6_K", kQK_K, 2 + kQK_K / 2 + kQK_K / 4 + kQK_K / 16},
    {GgmlType::kQ8_K, "q8_K", kQK_K, 4 + kQK_K + kQK_K / 8},
    {GgmlType::kIQ2_XXS, "iq2_xxs", kQK_K, 2 + kQK_K / 4},
    {GgmlType::kIQ2_XS, "iq2_xs", kQK_K, 2 + kQK_K / 4 + kQK_K / 32},
    {GgmlType::kIQ3_XXS, "iq3_xxs", kQK_K, 2 + kQK_K / 4 + kQK_K / 8},
    {GgmlType::kIQ1_S, "iq1_s", kQK_K, 2 + kQK_K / 8 + kQK_K / 16},
    {GgmlType::kIQ4_NL, "iq4_nl", 32, 2 + 16},
    {GgmlType::kIQ3_S, "iq3_s", kQK_K, 2 + kQK_K / 4 + kQK_K / 8 + kQK_K / 32 + 4},
    {GgmlType::kIQ2_S, "iq2_s", kQK_K, 2 + kQK_K / 4 + kQK_K / 16},
    {GgmlType::kIQ4_XS, "iq4_xs", kQK_K, 2 + 2 + kQK_K / 2 + kQK_K / 64},
    {GgmlType::kI8, "i8", 1, 1},
    {GgmlType::kI16, "i16", 1, 2},
    {GgmlType::kI32, "i32", 1, 4},
    {GgmlType::kI64, "i64", 1, 8},
    {GgmlType::kF64, "f64", 1, 8},
    {GgmlType::kIQ1_M, "iq1_m", kQK_K, kQK_K / 8 + kQK_K / 16 + kQK_K / 32},
    {GgmlType::kBF16, "bf16", 1, 2},
    {GgmlType::kTQ1_0, "tq1_0", kQK_K, 2 + 4 * 13},
    {GgmlType::kTQ2_0, "tq2_0", kQK_K, 2 + 64},
    {GgmlType::kMXFP4, "mxfp4", 32, 1 + 16},
    {GgmlType::kNVFP4, "nvfp4", 64, 4 + 32},
    {GgmlType::kQ1_0, "q1_0", 128, 2 + 16},
    {GgmlType::kQ2_0, "q2_0", 64, 2 + 16},
}};

// Size in bytes of a fixed-size GGUF value type; 0 for string and array.
uint64_t FixedSize(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
      return 8;
    case GgufValueType::kString:
    case GgufValueType::kArray:
      return 0;
  }
  return 0;
}

bool ValidValueType(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kFloat64); }

bool IsSigned(GgufValueType t) {
  return t == GgufValueType::kInt8 || t == GgufValueType::kInt16 || t == GgufValueType::kInt32 ||
         t == GgufValueType::kInt64;
}

bool IsInteger(GgufValueType t) {
  return t == GgufValueType::kUint8 || t == GgufValueType::kUint16 || t == GgufValueType::kUint32 ||
         t == GgufValueType::kUint64 || t == GgufValueType::kBool || IsSigned(t);
}

// Sign- or zero-extends the `size`-byte little-endian integer at `p`.
uint64_t LoadInt(const uint8_t* p, uint64_t size, bool is_signed) {
  uint64_t v = 0;
  std::memcpy(&v, p, size);
  if (is_signed && size < 8) {
    const uint64_t sign = uint64_t{1} << (size * 8 - 1);
    if (v & sign) v |= ~((sign << 1) - 1);
  }
  return v;
}

// --- Reading ------------------------------------------------------------------------------------

// A random-access byte source of known size.
class Source {
 public:
  virtual ~Source() = default;
  virtual uint64_t size() const = 0;
  // Precondition: [offset, offset + out.size()) lies within size().
  virtual Status ReadAt(uint64_t offset, std::span<uint8_t> out) = 0;
};

class MemorySource : public Source {
 public:
  explicit MemorySource(std::span<const uint8_t> data) : data_(data) {}
  uint64_t size() const override { return data_.size(); }
  Status ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    if (!out.empty()) std::memcpy(out.data(), data_.data() + offset, out.size());
    return OkStatus();
  }

 private:
  std::span<const uint8_t> data_;
};

class FileSource : public Source {
 public:
  FileSource(std::ifstream in, uint64_t size) : in_(std::move(in)), size_(size) {}
  uint64_t size() const override { return size_; }
  Status ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(out.size()));
    if (!in_)
      return UnavailableError(fmt::format("read of {} bytes at {} failed", out.size(), offset));
    return OkStatus();
  }

 private:
  std::ifstream in_;
  uint64_t size_;
};

// Sequential reader over a Source, buffered, with every read checked against the source size.
class Cursor {
 public:
  explicit Cursor(Source& src) : src_(src) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return src_.size() - pos_; }

  Status Error(std::string_view what) const {
    return InvalidArgumentError(fmt::format("gguf: {} at offset {}", what, pos_));
  }

  Status Read(std::span<uint8_t> out, std::string_view what) {
    if (out.size() > remaining()) {
      return Error(fmt::format("{} ({} bytes) runs past the end of the file ({} bytes)", what,
                               out.size(), src_.size()));
    }
    uint64_t done = 0;
    while (done < out.size()) {
      if (pos_ >= buf_start_ + buf_.size() || pos_ < buf_start_) RETURN_IF_ERROR(Fill());
      const uint64_t in_buf = buf_start_ + buf_.size() - pos_;
      const uint64_t n = std::min<uint64_t>(in_buf, out.size() - done);
      std::memcpy(out.data() + done, buf_.data() + (pos_ - buf_start_), n);
      done += n;
      pos_ += n;
    }
    return OkStatus();
  }

  template <typename T>
  Result<T> Scalar(std::string_view what) {
    T v{};
    RETURN_IF_ERROR(Read(std::span(reinterpret_cast<uint8_t*>(&v), sizeof(T)), what));
    return v;
  }

  Result<std::string> String(std::string_view what) {
    ASSIGN_OR_RETURN(uint64_t len, Scalar<uint64_t>(what));
    if (len > remaining()) {
      return Error(fmt::format("{} length {} exceeds the {} bytes left", what, len, remaining()));
    }
    std::string s(len, '\0');
    RETURN_IF_ERROR(Read(std::span(reinterpret_cast<uint8_t*>(s.data()), len), what));
    return s;
  }

 private:
  Status Fill() {
    constexpr uint64_t kChunk = 1 << 16;
    buf_start_ = pos_;
    buf_.resize(std::min<uint64_t>(kChunk, remaining()));
    return src_.ReadAt(buf_start_, buf_);
  }

  Source& src_;
  uint64_t pos_ = 0;
  uint64_t buf_start_ = 0;
  std::vector<uint8_t> buf_;
};

Result<GgufValue> ReadValue(Cursor& c, GgufValueType type, int depth, const GgufParseOptions& opt);

Result<GgufValue> ReadArray(Cursor& c, int depth, const GgufParseOptions& opt) {
  if (depth >= opt.max_array_depth) {
    return c.Error(fmt::format("arrays nested deeper than {}", opt.max_array_depth));
  }
  ASSIGN_OR_RETURN(uint32_t raw_type, c.Scalar<uint32_t>("array element type"));
  if (!ValidValueType(raw_type))
    return c.Error(fmt::format("unknown array element type {}", raw_type));
  const auto elem = static_cast<GgufValueType>(raw_type);
  ASSIGN_OR_RETURN(uint64_t count, c.Scalar<uint64_t>("array length"));
  // The smallest encoding of one element: its bytes, a string's length, a nested array's header.
  const uint64_t min_elem = elem == GgufValueType::kString  ? 8
                            : elem == GgufValueType::kArray ? 12
                                                            : FixedSize(elem);
  if (count > c.remaining() / min_elem) {
    return c.Error(fmt::format("array of {} {} elements does not fit in the {} bytes left", count,
                               GgufValueTypeName(elem), c.remaining()));
  }
  if (elem == GgufValueType::kString) {
    std::vector<std::string> strings;
    strings.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      ASSIGN_OR_RETURN(std::string s, c.String("array string"));
      strings.push_back(std::move(s));
    }
    return GgufValue::StringArray(std::move(strings));
  }
  if (elem == GgufValueType::kArray) {
    std::vector<GgufValue> nested;
    nested.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      ASSIGN_OR_RETURN(GgufValue v, ReadArray(c, depth + 1, opt));
      nested.push_back(std::move(v));
    }
    return GgufValue::NestedArray(std::move(nested));
  }
  std::vector<uint8_t> raw(count * min_elem);
  RETURN_IF_ERROR(c.Read(raw, "array data"));
  if (elem == GgufValueType::kBool) {
    for (uint8_t b : raw) {
      if (b > 1) return c.Error(fmt::format("bool array element {} is not 0 or 1", b));
    }
  }
  return GgufValue::RawArray(elem, std::move(raw));
}

Result<GgufValue> ReadValue(Cursor& c, GgufValueType type, int depth, const GgufParseOptions& opt) {
  switch (type) {
    case GgufValueType::kString: {
      ASSIGN_OR_RETURN(std::string s, c.String("string value"));
      return GgufValue::String(std::move(s));
    }
    case GgufValueType::kArray:
      return ReadArray(c, depth, opt);
    case GgufValueType::kBool: {
      ASSIGN_OR_RETURN(uint8_t b, c.Scalar<uint8_t>("bool"));
      if (b > 1) return c.Error(fmt::format("bool value {} is not 0 or 1", b));
      return GgufValue::Bool(b != 0);
    }
    case GgufValueType::kFloat32: {
      ASSIGN_OR_RETURN(float f, c.Scalar<float>("float32"));
      return GgufValue::Float32(f);
    }
    case GgufValueType::kFloat64: {
      ASSIGN_OR_RETURN(double f, c.Scalar<double>("float64"));
      return GgufValue::Float64(f);
    }
    default:
      break;
  }
  std::array<uint8_t, 8> bytes{};
  const uint64_t size = FixedSize(type);
  RETURN_IF_ERROR(c.Read(std::span(bytes.data(), size), "integer value"));
  const uint64_t v = LoadInt(bytes.data(), size, IsSigned(type));
  switch (type) {
    case GgufValueType::kUint8:
      return GgufValue::Uint8(static_cast<uint8_t>(v));
    case GgufValueType::kInt8:
      return GgufValue::Int8(static_cast<int8_t>(v));
    case GgufValueType::kUint16:
      return GgufValue::Uint16(static_cast<uint16_t>(v));
    case GgufValueType::kInt16:
      return GgufValue::Int16(static_cast<int16_t>(v));
    case GgufValueType::kUint32:
      return GgufValue::Uint32(static_cast<uint32_t>(v));
    case GgufValueType::kInt32:
      return GgufValue::Int32(static_cast<int32_t>(v));
    case GgufValueType::kUint64:
      return GgufValue::Uint64(v);
    default:
      return GgufValue::Int64(static_cast<int64_t>(v));
  }
}

Result<GgufFile> Parse(Source& src, const GgufParseOptions& opt) {
  Cursor c(src);
  GgufFile f;
  f.file_size = src.size();

  std::array<uint8_t, 4> magic{};
  RETURN_IF_ERROR(c.Read(magic, "magic"));
  if (std::memcmp(magic.data(), "GGUF", 4) != 0) return c.Error("bad magic (not a GGUF file)");
  ASSIGN_OR_RETURN(f.version, c.Scalar<uint32_t>("version"));
  if (f.version == 1) return c.Error("GGUF version 1 is not supported (32-bit counts)");
  if (f.version != 2 && f.version != 3) {
    return c.Error(fmt::format("unsupported GGUF version {}", f.version));
  }
  ASSIGN_OR_RETURN(uint64_t n_tensors, c.Scalar<uint64_t>("tensor count"));
  ASSIGN_OR_RETURN(uint64_t n_kv, c.Scalar<uint64_t>("metadata count"));
  // Lower bounds on the encoded size: key (8) + type (4) + smallest value (1); name (8) + n_dims
  // (4) + type (4) + offset (8).
  if (n_kv > c.remaining() / 13) {
    return c.Error(fmt::format("metadata count {} does not fit in the file", n_kv));
  }
  if (n_tensors > c.remaining() / 24) {
    return c.Error(fmt::format("tensor count {} does not fit in the file", n_tensors));
  }

  std::set<std::string, std::less<>> keys;
  f.metadata.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    ASSIGN_OR_RETURN(std::string key, c.String("metadata key"));
    if (keys.contains(key)) return c.Error(fmt::format("duplicate metadata key '{}'", key));
    ASSIGN_OR_RETURN(uint32_t raw_type, c.Scalar<uint32_t>("value type"));
    if (!ValidValueType(raw_type)) {
      return c.Error(fmt::format("unknown value type {} for key '{}'", raw_type, key));
    }
    ASSIGN_OR_RETURN(GgufValue value, ReadValue(c, static_cast<GgufValueType>(raw_type), 0, opt));
    keys.insert(key);
    f.metadata.emplace_back(std::move(key), std::move(value));
  }

  f.alignment = kDefaultAlignment;
  if (const GgufValue* a = f.Find("general.alignment")) {
    if (a->type() != GgufValueType::kUint32) {
      return InvalidArgumentError("gguf: general.alignment must be a uint32");
    }
    const uint64_t align = *a->AsUint();
    if (align == 0 || !std::has_single_bit(align)) {
      return InvalidArgumentError(
          fmt::format("gguf: general.alignment {} is not a power of two", align));
    }
    f.alignment = align;
  }

  std::set<std::string, std::less<>> names;
  f.tensors.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    ASSIGN_OR_RETURN(t.name, c.String("tensor name"));
    if (t.name.size() > kMaxTensorName) {
      return c.Error(
          fmt::format("tensor name of {} bytes is longer than {}", t.name.size(), kMaxTensorName));
    }
    if (names.contains(t.name)) return c.Error(fmt::format("duplicate tensor '{}'", t.name));
    ASSIGN_OR_RETURN(uint32_t n_dims, c.Scalar<uint32_t>("tensor n_dims"));
    if (n_dims > kMaxDims) {
      return c.Error(fmt::format("tensor '{}' has {} dims (max {})", t.name, n_dims, kMaxDims));
    }
    t.dims.resize(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      ASSIGN_OR_RETURN(t.dims[d], c.Scalar<uint64_t>("tensor dim"));
    }
    ASSIGN_OR_RETURN(uint32_t raw_type, c.Scalar<uint32_t>("tensor type"));
    auto traits = GgmlTypeInfo(raw_type);
    if (!traits.ok()) {
      return c.Error(fmt::format("tensor '{}': {}", t.name, traits.status().message()));
    }
    t.type = traits->type;
    ASSIGN_OR_RETURN(t.offset, c.Scalar<uint64_t>("tensor offset"));
    auto bytes = GgmlTensorBytes(t.type, t.dims);
    if (!bytes.ok())
      return c.Error(fmt::format("tensor '{}': {}", t.name, bytes.status().message()));
    t.size_bytes = *bytes;
    if (t.offset % f.alignment != 0) {
      return c.Error(fmt::format("tensor '{}' offset {} is not a multiple of the alignment {}",
                                 t.name, t.offset, f.alignment));
    }
    names.insert(t.name);
    f.tensors.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t pad = (f.alignment - c.pos() % f.alignment) % f.alignment;
  f.data_offset = c.pos() + pad;

  // Tensor data must not overlap and, when required, must lie within the input.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  ranges.reserve(f.tensors.size());
  for (const GgufTensorInfo& t : f.tensors) {
    if (t.offset > std::numeric_limits<uint64_t>::max() - t.size_bytes - f.data_offset) {
      return InvalidArgumentError(fmt::format("gguf: tensor '{}' data offset overflows", t.name));
    }
    if (opt.require_tensor_data && f.data_offset + t.offset + t.size_bytes > f.file_size) {
      return InvalidArgumentError(fmt::format(
          "gguf: tensor '{}' data [{}, {}) lies beyond the end of the file ({} bytes)", t.name,
          f.data_offset + t.offset, f.data_offset + t.offset + t.size_bytes, f.file_size));
    }
    ranges.emplace_back(t.offset, t.offset + t.size_bytes);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return InvalidArgumentError(
          fmt::format("gguf: tensor data at offset {} overlaps another tensor", ranges[i].first));
    }
  }
  return f;
}

// --- Writing ------------------------------------------------------------------------------------

class Encoder {
 public:
  std::vector<uint8_t>& bytes() { return out_; }

  template <typename T>
  void Scalar(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void String(std::string_view s) {
    Scalar<uint64_t>(s.size());
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void Value(const GgufValue& v, bool with_type) {
    if (with_type) Scalar<uint32_t>(static_cast<uint32_t>(v.type()));
    switch (v.type()) {
      case GgufValueType::kString:
        String(*v.AsString());
        return;
      case GgufValueType::kArray:
        Scalar<uint32_t>(static_cast<uint32_t>(v.array_type()));
        Scalar<uint64_t>(v.array_size());
        if (v.array_type() == GgufValueType::kString) {
          for (const std::string& s : v.array_strings()) String(s);
        } else if (v.array_type() == GgufValueType::kArray) {
          for (const GgufValue& e : v.array_values()) Value(e, /*with_type=*/false);
        } else {
          out_.insert(out_.end(), v.array_raw().begin(), v.array_raw().end());
        }
        return;
      case GgufValueType::kFloat32:
        Scalar<float>(static_cast<float>(*v.AsDouble()));
        return;
      case GgufValueType::kFloat64:
        Scalar<double>(*v.AsDouble());
        return;
      default: {
        // Integers: the low bytes of the two's complement value.
        const uint64_t bits = static_cast<uint64_t>(*v.AsInt());
        const auto* p = reinterpret_cast<const uint8_t*>(&bits);
        out_.insert(out_.end(), p, p + FixedSize(v.type()));
        return;
      }
    }
  }

 private:
  std::vector<uint8_t> out_;
};

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

// --- Types --------------------------------------------------------------------------------------

Result<GgmlTypeTraits> GgmlTypeInfo(uint32_t type) {
  for (const GgmlTypeTraits& t : kTypes) {
    if (static_cast<uint32_t>(t.type) == type) return t;
  }
  return InvalidArgumentError(fmt::format("unknown ggml type {}", type));
}

Result<GgmlType> ParseGgmlType(std::string_view name) {
  for (const GgmlTypeTraits& t : kTypes) {
    if (t.name.size() == name.size() &&
        std::equal(name.begin(), name.end(), t.name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return t.type;
    }
  }
  return InvalidArgumentError(fmt::format("unknown ggml type '{}'", name));
}

std::string_view GgmlTypeName(GgmlType type) {
  auto info = GgmlTypeInfo(static_cast<uint32_t>(type));
  return info.ok() ? info->name : "unknown";
}

Result<uint64_t> GgmlTensorBytes(GgmlType type, std::span<const uint64_t> dims) {
  ASSIGN_OR_RETURN(GgmlTypeTraits traits, GgmlTypeInfo(static_cast<uint32_t>(type)));
  constexpr uint64_t kLimit = uint64_t{1} << 62;
  uint64_t elems = 1;
  for (uint64_t d : dims) {
    if (d >= kLimit) return InvalidArgumentError(fmt::format("dimension {} is too large", d));
    if (d != 0 && elems > kLimit / d) {
      return InvalidArgumentError("element count overflows");
    }
    elems *= d;
  }
  const uint64_t ne0 = dims.empty() ? 1 : dims[0];
  if (ne0 % traits.block_size != 0) {
    return InvalidArgumentError(
        fmt::format("dims[0] = {} is not a multiple of the {} block size {}", ne0, traits.name,
                    traits.block_size));
  }
  const uint64_t blocks = elems / traits.block_size;
  if (blocks > kLimit / traits.type_size) return InvalidArgumentError("tensor size overflows");
  return blocks * traits.type_size;
}

uint16_t FloatToHalf(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t exp = (x >> 23) & 0xff;
  uint32_t mant = x & 0x7fffff;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00 | (mant ? 0x200 : 0));  // inf/nan
  int32_t e = static_cast<int32_t>(exp) - 127 + 15;
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00);  // overflow → inf
  if (e <= 0) {
    if (e < -10) return static_cast<uint16_t>(sign);  // underflow → ±0
    mant |= 0x800000;
    const uint32_t shift = static_cast<uint32_t>(14 - e);
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half;  // may carry into the exponent: ok
  return static_cast<uint16_t>(sign | half);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000 | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

Status EncodeRow(std::span<const float> in, GgmlType type, std::span<uint8_t> out) {
  ASSIGN_OR_RETURN(GgmlTypeTraits traits, GgmlTypeInfo(static_cast<uint32_t>(type)));
  if (in.size() % traits.block_size != 0 ||
      out.size() != in.size() / traits.block_size * traits.type_size) {
    return InvalidArgumentError("EncodeRow: input and output sizes do not match");
  }
  uint8_t* o = out.data();
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(o, in.data(), out.size());
      return OkStatus();
    case GgmlType::kF16:
      for (float f : in) {
        const uint16_t h = FloatToHalf(f);
        std::memcpy(o, &h, 2);
        o += 2;
      }
      return OkStatus();
    case GgmlType::kBF16:
      for (float f : in) {
        uint32_t x = std::bit_cast<uint32_t>(f);
        x += 0x7fff + ((x >> 16) & 1);  // round to nearest even; inputs here are finite
        const uint16_t b = static_cast<uint16_t>(x >> 16);
        std::memcpy(o, &b, 2);
        o += 2;
      }
      return OkStatus();
    case GgmlType::kQ8_0:
      for (size_t blk = 0; blk < in.size(); blk += 32) {
        float amax = 0;
        for (size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(in[blk + j]));
        const float d = amax / 127.0f;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        const uint16_t dh = FloatToHalf(d);
        std::memcpy(o, &dh, 2);
        for (size_t j = 0; j < 32; ++j) {
          o[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::lround(in[blk + j] * id)));
        }
        o += 34;
      }
      return OkStatus();
    default:
      return UnimplementedError(fmt::format("EncodeRow: no encoder for {}", traits.name));
  }
}

std::string_view GgufValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
      return "uint8";
    case GgufValueType::kInt8:
      return "int8";
    case GgufValueType::kUint16:
      return "uint16";
    case GgufValueType::kInt16:
      return "int16";
    case GgufValueType::kUint32:
      return "uint32";
    case GgufValueType::kInt32:
      return "int32";
    case GgufValueType::kFloat32:
      return "float32";
    case GgufValueType::kBool:
      return "bool";
    case GgufValueType::kString:
      return "string";
    case GgufValueType::kArray:
      return "array";
    case GgufValueType::kUint64:
      return "uint64";
    case GgufValueType::kInt64:
      return "int64";
    case GgufValueType::kFloat64:
      return "float64";
  }
  return "unknown";
}

// --- GgufValue ----------------------------------------------------------------------------------

#define SEGMA_GGUF_INT_FACTORY_(Name, Ctype, Tag)             \
  GgufValue GgufValue::Name(Ctype x) {                        \
    GgufValue v;                                              \
    v.type_ = GgufValueType::Tag;                             \
    v.bits_ = static_cast<uint64_t>(static_cast<int64_t>(x)); \
    return v;                                                 \
  }
SEGMA_GGUF_INT_FACTORY_(Uint8, uint8_t, kUint8)
SEGMA_GGUF_INT_FACTORY_(Int8, int8_t, kInt8)
SEGMA_GGUF_INT_FACTORY_(Uint16, uint16_t, kUint16)
SEGMA_GGUF_INT_FACTORY_(Int16, int16_t, kInt16)
SEGMA_GGUF_INT_FACTORY_(Uint32, uint32_t, kUint32)
SEGMA_GGUF_INT_FACTORY_(Int32, int32_t, kInt32)
SEGMA_GGUF_INT_FACTORY_(Int64, int64_t, kInt64)
#undef SEGMA_GGUF_INT_FACTORY_

GgufValue GgufValue::Uint64(uint64_t x) {
  GgufValue v;
  v.type_ = GgufValueType::kUint64;
  v.bits_ = x;
  return v;
}
GgufValue GgufValue::Bool(bool x) {
  GgufValue v;
  v.type_ = GgufValueType::kBool;
  v.bits_ = x ? 1 : 0;
  return v;
}
GgufValue GgufValue::Float32(float x) {
  GgufValue v;
  v.type_ = GgufValueType::kFloat32;
  v.bits_ = std::bit_cast<uint64_t>(static_cast<double>(x));
  return v;
}
GgufValue GgufValue::Float64(double x) {
  GgufValue v;
  v.type_ = GgufValueType::kFloat64;
  v.bits_ = std::bit_cast<uint64_t>(x);
  return v;
}
GgufValue GgufValue::String(std::string x) {
  GgufValue v;
  v.type_ = GgufValueType::kString;
  v.str_ = std::move(x);
  return v;
}
GgufValue GgufValue::StringArray(std::vector<std::string> x) {
  GgufValue v;
  v.type_ = GgufValueType::kArray;
  v.array_type_ = GgufValueType::kString;
  v.strings_ = std::move(x);
  return v;
}
GgufValue GgufValue::Int32Array(std::span<const int32_t> x) {
  std::vector<uint8_t> raw(x.size() * 4);
  if (!x.empty()) std::memcpy(raw.data(), x.data(), raw.size());
  return RawArray(GgufValueType::kInt32, std::move(raw));
}
GgufValue GgufValue::Float32Array(std::span<const float> x) {
  std::vector<uint8_t> raw(x.size() * 4);
  if (!x.empty()) std::memcpy(raw.data(), x.data(), raw.size());
  return RawArray(GgufValueType::kFloat32, std::move(raw));
}
GgufValue GgufValue::RawArray(GgufValueType elem, std::vector<uint8_t> raw) {
  SEGMA_DCHECK(FixedSize(elem) != 0 && raw.size() % FixedSize(elem) == 0);
  GgufValue v;
  v.type_ = GgufValueType::kArray;
  v.array_type_ = elem;
  v.raw_ = std::move(raw);
  return v;
}
GgufValue GgufValue::NestedArray(std::vector<GgufValue> elems) {
  GgufValue v;
  v.type_ = GgufValueType::kArray;
  v.array_type_ = GgufValueType::kArray;
  v.nested_ = std::move(elems);
  return v;
}

std::optional<int64_t> GgufValue::AsInt() const {
  if (!IsInteger(type_)) return std::nullopt;
  return static_cast<int64_t>(bits_);
}

std::optional<uint64_t> GgufValue::AsUint() const {
  if (!IsInteger(type_)) return std::nullopt;
  if (IsSigned(type_) && static_cast<int64_t>(bits_) < 0) return std::nullopt;
  return bits_;
}

std::optional<double> GgufValue::AsDouble() const {
  if (type_ == GgufValueType::kFloat32 || type_ == GgufValueType::kFloat64) {
    return std::bit_cast<double>(bits_);
  }
  if (type_ == GgufValueType::kUint64) return static_cast<double>(bits_);
  if (IsInteger(type_)) return static_cast<double>(static_cast<int64_t>(bits_));
  return std::nullopt;
}

const std::string* GgufValue::AsString() const {
  return type_ == GgufValueType::kString ? &str_ : nullptr;
}

uint64_t GgufValue::array_size() const {
  if (type_ != GgufValueType::kArray) return 0;
  if (array_type_ == GgufValueType::kString) return strings_.size();
  if (array_type_ == GgufValueType::kArray) return nested_.size();
  return raw_.size() / FixedSize(array_type_);
}

std::optional<int64_t> GgufValue::ArrayInt(uint64_t i) const {
  if (type_ != GgufValueType::kArray || !IsInteger(array_type_) || i >= array_size()) {
    return std::nullopt;
  }
  const uint64_t size = FixedSize(array_type_);
  return static_cast<int64_t>(LoadInt(raw_.data() + i * size, size, IsSigned(array_type_)));
}

// --- GgufFile -----------------------------------------------------------------------------------

uint64_t GgufTensorInfo::element_count() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;  // bounded when parsed or added
  return n;
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  for (const auto& [k, v] : metadata) {
    if (k == key) return &v;
  }
  return nullptr;
}

std::optional<uint64_t> GgufFile::FindUint(std::string_view key) const {
  const GgufValue* v = Find(key);
  return v ? v->AsUint() : std::nullopt;
}

const std::string* GgufFile::FindString(std::string_view key) const {
  const GgufValue* v = Find(key);
  return v ? v->AsString() : nullptr;
}

uint64_t GgufFile::TensorDataBytes() const {
  uint64_t n = 0;
  for (const GgufTensorInfo& t : tensors) n += t.size_bytes;
  return n;
}

Result<GgufFile> ParseGguf(std::span<const uint8_t> data, const GgufParseOptions& options) {
  MemorySource src(data);
  return Parse(src, options);
}

Result<GgufFile> ReadGgufFile(const std::string& path, const GgufParseOptions& options) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return NotFoundError(fmt::format("cannot open '{}'", path));
  const std::streamoff size = in.tellg();
  if (size < 0) return UnavailableError(fmt::format("cannot size '{}'", path));
  FileSource src(std::move(in), static_cast<uint64_t>(size));
  auto f = Parse(src, options);
  if (!f.ok()) return Status(f.status().code(), fmt::format("{}: {}", path, f.status().message()));
  return f;
}

// --- GgufWriter ---------------------------------------------------------------------------------

void GgufWriter::SetMetadata(std::string key, GgufValue value) {
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(std::move(key), std::move(value));
}

Status GgufWriter::AddTensor(std::string name, std::vector<uint64_t> dims, GgmlType type) {
  if (name.empty() || name.size() > kMaxTensorName) {
    return InvalidArgumentError(
        fmt::format("tensor name '{}' must have 1 to {} bytes", name, kMaxTensorName));
  }
  if (dims.size() > kMaxDims) {
    return InvalidArgumentError(fmt::format("tensor '{}' has more than {} dims", name, kMaxDims));
  }
  for (const GgufTensorInfo& t : tensors_) {
    if (t.name == name) return InvalidArgumentError(fmt::format("duplicate tensor '{}'", name));
  }
  ASSIGN_OR_RETURN(uint64_t bytes, GgmlTensorBytes(type, dims));
  GgufTensorInfo t;
  t.name = std::move(name);
  t.dims = std::move(dims);
  t.type = type;
  t.size_bytes = bytes;
  // Offsets are assigned in order, each aligned, as llama.cpp's writer does.
  const uint64_t align = Alignment();
  t.offset =
      tensors_.empty() ? 0 : AlignUp(tensors_.back().offset + tensors_.back().size_bytes, align);
  tensors_.push_back(std::move(t));
  return OkStatus();
}

uint64_t GgufWriter::Alignment() const {
  for (const auto& [k, v] : metadata_) {
    if (k == "general.alignment") {
      auto a = v.AsUint();
      if (a && *a != 0 && std::has_single_bit(*a)) return *a;
    }
  }
  return kDefaultAlignment;
}

Status GgufWriter::Write(const TensorFiller& fill, const ByteSink& sink) const {
  const uint64_t align = Alignment();
  Encoder e;
  e.bytes().insert(e.bytes().end(), {'G', 'G', 'U', 'F'});
  e.Scalar<uint32_t>(3);
  e.Scalar<uint64_t>(tensors_.size());
  e.Scalar<uint64_t>(metadata_.size());
  for (const auto& [k, v] : metadata_) {
    e.String(k);
    e.Value(v, /*with_type=*/true);
  }
  // Offsets were computed by AddTensor with the alignment current at that time; recompute here so
  // that setting general.alignment after adding tensors is still correct.
  std::vector<uint64_t> offsets;
  uint64_t next = 0;
  for (const GgufTensorInfo& t : tensors_) {
    offsets.push_back(next);
    e.String(t.name);
    e.Scalar<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) e.Scalar<uint64_t>(d);
    e.Scalar<uint32_t>(static_cast<uint32_t>(t.type));
    e.Scalar<uint64_t>(next);
    next = AlignUp(next + t.size_bytes, align);
  }
  e.bytes().resize(AlignUp(e.bytes().size(), align), 0);
  RETURN_IF_ERROR(sink(e.bytes()));

  constexpr uint64_t kChunkBytes = 4 << 20;
  std::vector<uint8_t> buf;
  uint64_t written = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    GgufTensorInfo t = tensors_[i];
    t.offset = offsets[i];
    if (written < t.offset) {
      buf.assign(t.offset - written, 0);
      RETURN_IF_ERROR(sink(buf));
      written = t.offset;
    }
    const uint64_t n_rows = t.dims.size() <= 1 ? 1 : t.element_count() / t.dims[0];
    const uint64_t row_bytes = n_rows == 0 ? 0 : t.size_bytes / n_rows;
    const uint64_t rows_per_chunk = std::max<uint64_t>(1, row_bytes ? kChunkBytes / row_bytes : 1);
    for (uint64_t row = 0; row < n_rows; row += rows_per_chunk) {
      const uint64_t rows = std::min(rows_per_chunk, n_rows - row);
      buf.assign(rows * row_bytes, 0);
      RETURN_IF_ERROR(fill(t, row, rows, buf));
      RETURN_IF_ERROR(sink(buf));
    }
    written += t.size_bytes;
  }
  return OkStatus();
}

Status GgufWriter::WriteFile(const std::string& path, const TensorFiller& fill) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return UnavailableError(fmt::format("cannot create '{}'", path));
  RETURN_IF_ERROR(Write(fill, [&](std::span<const uint8_t> bytes) -> Status {
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out) return UnavailableError(fmt::format("write to '{}' failed", path));
    return OkStatus();
  }));
  out.close();
  if (!out) return UnavailableError(fmt::format("closing '{}' failed", path));
  return OkStatus();
}

Result<std::vector<uint8_t>> GgufWriter::WriteToBuffer(const TensorFiller& fill) const {
  std::vector<uint8_t> out;
  RETURN_IF_ERROR(Write(fill, [&](std::span<const uint8_t> bytes) -> Status {
    out.insert(out.end(), bytes.begin(), bytes.end());
    return OkStatus();
  }));
  return out;
}

}  // namespace segma::estimate
