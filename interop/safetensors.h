// The safetensors file format (Hugging Face's weight files): an 8-byte little-endian header
// length N, N bytes of JSON mapping each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end]} (offsets relative to the data that follows the header) plus an optional
// "__metadata__" object of strings, then the tensors' raw little-endian bytes. The writer pads
// the header with spaces to a multiple of 8 bytes, as the format allows, so every tensor starts
// 8-byte aligned. The reader checks the header length against the file, every offset against
// the data length, each byte range against dtype x shape, and that the ranges tile the data
// without gaps or overlaps (as the reference implementation demands).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/manifest.h"

namespace tessera::checkpoint {

// "F32", "BF16", "F16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL".
const char* SafetensorsDTypeName(DType dtype);
absl::StatusOr<DType> DTypeFromSafetensors(const std::string& name);

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte range in the data section
  uint64_t end = 0;

  uint64_t byte_size() const { return end - begin; }
};

class SafetensorsReader {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsReader>> Open(const std::string& path);
  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return path_; }
  // In file order (ascending offsets).
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
  const SafetensorsTensor* Find(const std::string& name) const;
  // Reads the tensor's bytes into `dst` (exactly its byte size).
  absl::Status Read(const SafetensorsTensor& tensor, void* dst, size_t dst_bytes) const;

 private:
  SafetensorsReader() = default;
  std::string path_;
  int fd_ = -1;
  uint64_t data_start_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

// Streams one safetensors file: the header is written from the declared tensors (their byte
// ranges are assigned in the given order), then each tensor's bytes are appended in that order,
// then Finish() fsyncs and renames the temporary file into place.
class SafetensorsWriter {
 public:
  // `tensors`' begin/end are ignored and assigned. `metadata` goes to "__metadata__".
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<SafetensorsTensor> tensors,
      const std::vector<std::pair<std::string, std::string>>& metadata);
  // Removes the temporary file unless Finish() succeeded.
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The next tensor's bytes: exactly its dtype x shape size.
  absl::Status Append(const void* data, size_t size);
  absl::Status Finish();

  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }

 private:
  SafetensorsWriter() = default;
  std::string path_, tmp_;
  int fd_ = -1;
  std::vector<SafetensorsTensor> tensors_;
  size_t next_ = 0;
  bool finished_ = false;
};

}  // namespace tessera::checkpoint
