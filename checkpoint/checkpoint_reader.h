// Reads a committed checkpoint (one step directory) without LibTorch: opening validates the
// manifest and checks every shard file's presence, header and length; reads assemble any slice
// of a logical tensor (a box, or a range of its flattened elements) from whichever saved shards
// overlap it, verifying each shard's CRC-32C before its bytes are used. This is how a run
// resumes in another parallel layout: each rank reads exactly its new slices, and no rank needs
// a whole tensor. Thread-compatible: const methods may run concurrently.
//
//   TS_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open("ckpt/step-00001000"));
//   std::vector<float> rows(2 * 4096);
//   TS_RETURN_IF_ERROR(reader->ReadRegion("tok_embeddings", Region::Box({10, 0}, {2, 4096}),
//                                         rows.data(), rows.size() * sizeof(float)));
//
// (trainer/checkpoint/tensor_slices.h reads into at::Tensors.)
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "checkpoint/manifest.h"
#include "checkpoint/region.h"

namespace tessera::checkpoint {

class CheckpointReader {
 public:
  // Reads STEP_DIR/manifest.pb (a missing one: NotFound, "not a committed checkpoint"), parses
  // and validates it (a newer format version is FailedPrecondition), and with `check_files`
  // checks each listed shard file: it exists, its header is valid, and its length is the
  // manifest's. Reads no tensor data. In a large job, let one rank check the files (or run
  // FindLatestValid) and the others open with check_files = false: every read still verifies
  // its bytes' checksum and reports a truncated file.
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> Open(const std::string& step_dir,
                                                                bool check_files = true);
  ~CheckpointReader();

  const std::string& step_dir() const { return step_dir_; }
  const Manifest& manifest() const { return manifest_; }
  // The entry of tensor `name` or a NotFound error listing a few of the names the checkpoint has.
  absl::StatusOr<const TensorEntry*> Tensor(const std::string& name) const;

  // Fills `dst` (exactly region.numel() x dtype size bytes, row-major within the region) with
  // the elements of `region` of tensor `name`. A shard whose checksum does not match is an error
  // naming the file, tensor and byte range, unless an identical copy of its region (saved by
  // another rank) verifies.
  absl::Status ReadRegion(const std::string& name, const Region& region, void* dst, size_t dst_bytes) const;
  // The bytes of blob `name`, checksum verified.
  absl::StatusOr<std::string> ReadBlob(const std::string& name) const;
  // Reads every shard and blob and verifies its checksum: a full integrity check.
  absl::Status VerifyChecksums() const;
  // Bytes read from shard files so far (a resharding load's reads, against the bytes it needs).
  uint64_t bytes_read() const { return bytes_read_.load(); }

 private:
  CheckpointReader(std::string step_dir, Manifest manifest)
      : step_dir_(std::move(step_dir)), manifest_(std::move(manifest)) {}
  // Reads [offset, offset + length) of `file` into `dst` and checks its CRC-32C; `what` names the
  // record in errors.
  // A DataLoss error unless the file holds `length` bytes at `offset`.
  absl::Status CheckInFile(const std::string& file, uint64_t offset, uint64_t length,
                           const std::string& what) const;
  absl::Status ReadVerified(const std::string& file, uint64_t offset, uint64_t length, uint32_t crc,
                            void* dst, const std::string& what) const;

  std::string step_dir_;
  Manifest manifest_;
  mutable std::atomic<uint64_t> bytes_read_{0};
};

}  // namespace tessera::checkpoint
