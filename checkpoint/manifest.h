// The checkpoint manifest as plain C++ structs (this header includes no Protobuf: LibTorch
// bundles its own copy of Protobuf's headers, so code that includes LibTorch must not include
// generated .pb.h files), its conversion to and from checkpoint.proto's bytes, and its
// validation. Also the message each rank sends rank 0 after writing its shard file, and rank 0's
// merge of those messages into one manifest.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/region.h"

namespace tessera::checkpoint {

// The manifest format this code writes and the newest it reads. Version 2 added the manifest's
// own CRC (the last field of the file); version 1 manifests, which have none, are still read.
inline constexpr uint32_t kManifestFormatVersion = 2;
inline constexpr char kManifestFileName[] = "manifest.pb";

enum class DType { kFloat32, kBFloat16, kFloat16, kFloat64, kInt64, kInt32, kInt16, kInt8, kUInt8, kBool };

size_t DTypeSize(DType dtype);
// "float32", "bfloat16", ...
const char* DTypeName(DType dtype);
absl::StatusOr<DType> DTypeFromName(std::string_view name);

struct Layout {
  int32_t world_size = 1;
  int32_t tp = 1;
  int32_t pp = 1;
  int32_t dp = 1;
  int32_t zero = 0;
  int32_t virtual_stages = 1;
};

// One saved slice of a logical tensor.
struct ShardRecord {
  std::string file;  // relative to the step directory
  uint64_t byte_offset = 0;
  uint64_t byte_length = 0;
  Region region;
  uint32_t crc32c = 0;
  int32_t rank = 0;
};

struct TensorEntry {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> global_shape;
  std::vector<ShardRecord> shards;
};

struct BlobEntry {
  std::string name;
  std::string file;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint32_t crc32c = 0;
  int32_t rank = 0;
};

struct ShardFileEntry {
  std::string name;
  uint64_t length = 0;
  int32_t rank = 0;
};

struct Manifest {
  uint32_t format_version = kManifestFormatVersion;
  int64_t step = 0;
  int64_t consumed_samples = 0;
  std::string data_position;
  std::string config_yaml;
  Layout layout;
  int64_t created_unix_time = 0;
  std::vector<TensorEntry> tensors;
  std::vector<BlobEntry> blobs;
  std::vector<ShardFileEntry> files;
  std::string writer;

  const TensorEntry* FindTensor(std::string_view name) const;
  const BlobEntry* FindBlob(std::string_view name) const;
};

std::string SerializeManifest(const Manifest& manifest);
// Parses and validates (ValidateManifest). `source` names the file in messages. A format version
// newer than kManifestFormatVersion is a FailedPrecondition error saying so.
absl::StatusOr<Manifest> ParseManifest(std::string_view bytes, const std::string& source);
// Structure checks: a known format version; unique tensor and blob names; known dtypes; shard
// and blob byte ranges inside their listed files; each shard's region inside its tensor with
// byte_length = elements x dtype size; and the shards of each tensor covering every element
// exactly once (identical copies of one region are allowed: the reader falls back between them).
absl::Status ValidateManifest(const Manifest& manifest, const std::string& source);

// What one rank tells rank 0 after writing (or failing to write) its shard file.
struct RankReport {
  int32_t rank = 0;
  int64_t step = 0;
  std::string error;       // non-empty: this rank failed
  int32_t error_code = 0;  // absl::StatusCode of the failure
  std::vector<TensorEntry> tensors;
  std::vector<BlobEntry> blobs;
  ShardFileEntry file;
};
std::string SerializeRankReport(const RankReport& report);
absl::StatusOr<RankReport> ParseRankReport(std::string_view bytes, int from_rank);

// Rank 0's merge: tensors by name in first-seen order (every rank must agree on a tensor's dtype
// and global shape), blobs (names unique across ranks), files. The ranks' errors must have been
// handled by the caller; `manifest` carries the global metadata and receives the entries. The
// result is validated.
absl::Status MergeRankReports(const std::vector<RankReport>& reports, Manifest& manifest,
                              const std::string& source);

}  // namespace tessera::checkpoint
