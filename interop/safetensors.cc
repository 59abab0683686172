// safetensors reader and writer (safetensors.h). The JSON header is parsed with data/json.h and
// written with json_text.h.
#include "interop/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string_view>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "checkpoint/durable_io.h"
#include "core/checked_math.h"
#include "core/json.h"
#include "core/json_text.h"
#include "core/status_macros.h"

namespace tessera::checkpoint {
namespace {

// The reference implementation refuses headers above 100 MB.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct Name {
  DType dtype;
  const char* name;
};
constexpr Name kNames[] = {{DType::kFloat32, "F32"}, {DType::kBFloat16, "BF16"}, {DType::kFloat16, "F16"},
                           {DType::kFloat64, "F64"}, {DType::kInt64, "I64"},     {DType::kInt32, "I32"},
                           {DType::kInt16, "I16"},   {DType::kInt8, "I8"},       {DType::kUInt8, "U8"},
                           {DType::kBool, "BOOL"}};

// A JSON number that must be a non-negative integer exactly representable in a double.
absl::StatusOr<uint64_t> NonNegativeInteger(const JsonValue& v, const std::string& what) {
  if (v.type != JsonValue::Type::kNumber || v.number < 0 || v.number > 9007199254740992.0 ||
      std::floor(v.number) != v.number) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not a non-negative integer"));
  }
  return static_cast<uint64_t>(v.number);
}

}  // namespace

const char* SafetensorsDTypeName(DType dtype) {
  for (const Name& n : kNames) {
    if (n.dtype == dtype) return n.name;
  }
  return "?";
}

absl::StatusOr<DType> DTypeFromSafetensors(const std::string& name) {
  for (const Name& n : kNames) {
    if (name == n.name) return n.dtype;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported safetensors dtype '", name,
                   "' (supported: F32, BF16, F16, F64, I64, I32, I16, I8, U8, BOOL)"));
}

namespace {

// One tensor's entry of the header; errors say what is wrong with it.
absl::StatusOr<SafetensorsTensor> ParseTensorEntry(const std::string& name, const JsonValue& v,
                                                   uint64_t data_len) {
  auto invalid = [](const std::string& why) { return absl::InvalidArgumentError(why); };
  const std::string what = absl::StrCat("tensor '", name, "'");
  if (v.type != JsonValue::Type::kObject) return invalid(absl::StrCat(what, " is not an object"));
  const JsonValue* dtype = v.Find("dtype");
  const JsonValue* shape = v.Find("shape");
  const JsonValue* offsets = v.Find("data_offsets");
  if (!dtype || dtype->type != JsonValue::Type::kString || !shape || shape->type != JsonValue::Type::kArray ||
      !offsets || offsets->type != JsonValue::Type::kArray || offsets->array.size() != 2) {
    return invalid(absl::StrCat(
        what, " needs \"dtype\" (string), \"shape\" (array) and \"data_offsets\" ([begin, end])"));
  }
  SafetensorsTensor t;
  t.name = name;
  auto dt = DTypeFromSafetensors(dtype->string);
  if (!dt.ok()) return invalid(absl::StrCat(what, ": ", dt.status().message()));
  t.dtype = *dt;
  for (const JsonValue& d : shape->array) {
    auto n = NonNegativeInteger(d, absl::StrCat(what, ": a shape entry"));
    if (!n.ok()) return invalid(std::string(n.status().message()));
    t.shape.push_back(static_cast<int64_t>(*n));
  }
  // A wrapped product could make an absurd shape match a small byte range; the shape would then
  // reach the allocator intact.
  const std::optional<int64_t> elements = CheckedNumElements(t.shape);
  const std::optional<int64_t> needed =
      elements ? CheckedByteSize(*elements, DTypeSize(t.dtype)) : std::nullopt;
  if (!needed) {
    return invalid(absl::StrCat(what, " has shape ", ShapeToString(t.shape), ": its ", dtype->string,
                                " bytes do not fit in 64 bits"));
  }
  const uint64_t numel = static_cast<uint64_t>(*elements);
  auto begin = NonNegativeInteger(offsets->array[0], absl::StrCat(what, ": data_offsets[0]"));
  auto end = NonNegativeInteger(offsets->array[1], absl::StrCat(what, ": data_offsets[1]"));
  if (!begin.ok()) return invalid(std::string(begin.status().message()));
  if (!end.ok()) return invalid(std::string(end.status().message()));
  t.begin = *begin;
  t.end = *end;
  if (t.end < t.begin || t.end > data_len) {
    return invalid(absl::StrCat(what, " has data_offsets [", t.begin, ", ", t.end, "] outside the ", data_len,
                                " data bytes (truncated file?)"));
  }
  if (t.end - t.begin != static_cast<uint64_t>(*needed)) {
    return invalid(absl::StrCat(what, " has ", t.end - t.begin, " bytes; ", numel, " ", dtype->string,
                                " elements need ", *needed));
  }
  return t;
}

// Sorts the tensors by offset and checks that they tile the data exactly.
absl::Status CheckTiling(std::vector<SafetensorsTensor>& tensors, uint64_t data_len) {
  std::sort(tensors.begin(), tensors.end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  uint64_t expected = 0;
  for (const SafetensorsTensor& t : tensors) {
    if (t.begin != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", t.name, "' starts at data byte ", t.begin, " but the previous tensor ends at ",
          expected, " (tensors must tile the data without gaps or overlaps)"));
    }
    expected = t.end;
  }
  if (expected != data_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("the tensors cover ", expected, " of the ", data_len, " data bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::Open(const std::string& path) {
  std::unique_ptr<SafetensorsReader> r(new SafetensorsReader());
  r->path_ = path;
  r->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (r->fd_ < 0) return ErrnoError(errno, "opening safetensors file", path);
  struct stat st;
  if (::fstat(r->fd_, &st) != 0) return ErrnoError(errno, "stat of", path);
  const uint64_t length = static_cast<uint64_t>(st.st_size);
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a valid safetensors file: ", why));
  };
  if (length < 8) return bad(absl::StrCat("it has ", length, " bytes, fewer than the 8-byte header length"));
  unsigned char len_bytes[8];
  TS_RETURN_IF_ERROR(ReadAt(r->fd_, len_bytes, 8, 0, path));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  // Checked before anything is allocated for the header.
  if (header_len > kMaxHeaderBytes) {
    return bad(absl::StrCat("header length ", header_len, " (the 8 bytes at offset 0) exceeds the ",
                            kMaxHeaderBytes, "-byte limit of the format"));
  }
  if (header_len > length - 8) {
    return bad(absl::StrCat("header length ", header_len, " (the 8 bytes at offset 0) exceeds the file's ",
                            length - 8, " remaining bytes"));
  }
  std::string header(header_len, '\0');
  TS_RETURN_IF_ERROR(ReadAt(r->fd_, header.data(), header_len, 8, path));
  auto json = ParseJson(header);
  if (!json.ok()) return bad(absl::StrCat("header: ", json.status().message()));
  if (json->type != JsonValue::Type::kObject) return bad("the header is not a JSON object");
  r->data_start_ = 8 + header_len;
  const uint64_t data_len = length - r->data_start_;
  std::unordered_set<std::string_view> names;
  for (const auto& [name, v] : json->object) {
    if (name == "__metadata__") {
      if (v.type != JsonValue::Type::kObject) return bad("__metadata__ is not an object");
      for (const auto& [k, s] : v.object) {
        if (s.type != JsonValue::Type::kString)
          return bad(absl::StrCat("__metadata__.", k, " is not a string"));
        r->metadata_.emplace_back(k, s.string);
      }
      continue;
    }
    // The reference implementation reads the header into a map: one entry per name.
    if (!names.insert(name).second) {
      return bad(absl::StrCat("tensor '", name, "' appears twice in the header"));
    }
    auto t = ParseTensorEntry(name, v, data_len);
    if (!t.ok()) return bad(std::string(t.status().message()));
    r->tensors_.push_back(*std::move(t));
  }
  if (absl::Status tiled = CheckTiling(r->tensors_, data_len); !tiled.ok()) {
    return bad(std::string(tiled.message()));
  }
  return r;
}

const SafetensorsTensor* SafetensorsReader::Find(const std::string& name) const {
  for (const SafetensorsTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::Status SafetensorsReader::Read(const SafetensorsTensor& t, void* dst, size_t dst_bytes) const {
  if (dst_bytes != t.byte_size()) {
    return absl::InvalidArgumentError(absl::StrCat("reading tensor '", t.name, "' of '", path_,
                                                   "': buffer of ", dst_bytes, " bytes for ", t.byte_size()));
  }
  return ReadAt(fd_, dst, dst_bytes, data_start_ + t.begin, path_);
}

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<SafetensorsTensor> tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata) {
  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter());
  w->path_ = path;
  w->tmp_ = absl::StrCat(path, ".tmp.", ::getpid());
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (size_t i = 0; i < metadata.size(); ++i) {
      absl::StrAppend(&header, i ? "," : "", JsonQuote(metadata[i].first), ":",
                      JsonQuote(metadata[i].second));
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (SafetensorsTensor& t : tensors) {
    uint64_t numel = 1;
    std::string shape;
    for (size_t i = 0; i < t.shape.size(); ++i) {
      numel *= static_cast<uint64_t>(t.shape[i]);
      absl::StrAppend(&shape, i ? "," : "", t.shape[i]);
    }
    t.begin = offset;
    t.end = offset + numel * DTypeSize(t.dtype);
    offset = t.end;
    absl::StrAppend(&header, header.size() > 1 ? "," : "", JsonQuote(t.name), ":{\"dtype\":\"",
                    SafetensorsDTypeName(t.dtype), "\",\"shape\":[", shape, "],\"data_offsets\":[", t.begin,
                    ",", t.end, "]}");
  }
  header += "}";
  // Spaces up to a multiple of 8, so the data (and each tensor of 8-byte-multiple size) is aligned.
  header.append((8 - header.size() % 8) % 8, ' ');
  w->tensors_ = std::move(tensors);
  w->fd_ = ::open(w->tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w->fd_ < 0) return ErrnoError(errno, "creating", w->tmp_);
  unsigned char len_bytes[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i, n >>= 8) len_bytes[i] = static_cast<unsigned char>(n & 0xFF);
  TS_RETURN_IF_ERROR(WriteAll(w->fd_, len_bytes, 8, w->tmp_));
  TS_RETURN_IF_ERROR(WriteAll(w->fd_, header.data(), header.size(), w->tmp_));
  return w;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!finished_) ::unlink(tmp_.c_str());
}

absl::Status SafetensorsWriter::Append(const void* data, size_t size) {
  if (next_ >= tensors_.size()) {
    return absl::FailedPreconditionError(absl::StrCat("'", path_, "': more tensors appended than declared"));
  }
  const SafetensorsTensor& t = tensors_[next_];
  if (size != t.byte_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path_, "': tensor '", t.name, "' declared ", t.byte_size(), " bytes, got ", size));
  }
  TS_RETURN_IF_ERROR(WriteAll(fd_, data, size, tmp_));
  ++next_;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  if (next_ != tensors_.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", path_, "': ", next_, " of ", tensors_.size(), " declared tensors were written"));
  }
  if (::fsync(fd_) != 0) return ErrnoError(errno, "fsync of", tmp_);
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) return ErrnoError(errno, "closing", tmp_);
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) return ErrnoError(errno, "renaming to", path_);
  finished_ = true;
  return absl::OkStatus();
}

}  // namespace tessera::checkpoint
