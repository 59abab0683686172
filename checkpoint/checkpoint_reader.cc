// CheckpointReader: manifest and file checks at Open, checksummed positioned reads afterwards.
// Each read opens the shard file it needs (no descriptors are held between calls), so a reader
// can stay open for long without pinning files that retention may delete.
#include "checkpoint/checkpoint_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "checkpoint/durable_io.h"
#include "checkpoint/shard_file.h"
#include "core/crc32c.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace tessera::checkpoint {

CheckpointReader::~CheckpointReader() = default;

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::Open(const std::string& step_dir,
                                                                         bool check_files) {
  const std::string manifest_path = absl::StrCat(step_dir, "/", kManifestFileName);
  if (!PathExists(manifest_path)) {
    return absl::NotFoundError(
        absl::StrCat("'", step_dir, "' has no ", kManifestFileName,
                     ": not a committed checkpoint (a save that did not finish, or not a "
                     "checkpoint directory)"));
  }
  TS_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(manifest_path));
  TS_ASSIGN_OR_RETURN(Manifest manifest, ParseManifest(bytes, manifest_path));
  for (const ShardFileEntry& f : check_files ? manifest.files : std::vector<ShardFileEntry>()) {
    const std::string path = absl::StrCat(step_dir, "/", f.name);
    TS_ASSIGN_OR_RETURN(ShardFileHeader header, ReadShardFileHeader(path));
    if (header.file_size != f.length) {
      return absl::DataLossError(absl::StrCat("shard file '", path, "' is ", header.file_size,
                                              " bytes but the manifest records ", f.length,
                                              " (replaced by another save?)"));
    }
  }
  return std::unique_ptr<CheckpointReader>(new CheckpointReader(step_dir, std::move(manifest)));
}

absl::StatusOr<const TensorEntry*> CheckpointReader::Tensor(const std::string& name) const {
  if (const TensorEntry* t = manifest_.FindTensor(name)) return t;
  std::vector<std::string> some;
  for (const TensorEntry& t : manifest_.tensors) {
    if (some.size() == 8) {
      some.push_back("...");
      break;
    }
    some.push_back(t.name);
  }
  return absl::NotFoundError(absl::StrCat("checkpoint '", step_dir_, "' has no tensor '", name, "' (it has ",
                                          manifest_.tensors.size(), ": ", absl::StrJoin(some, ", "), ")"));
}

absl::Status CheckpointReader::CheckInFile(const std::string& file, uint64_t offset, uint64_t length,
                                           const std::string& what) const {
  // Before a buffer is sized from the manifest: a reader opened without checking the files
  // (check_files = false) must not believe a length the file cannot hold.
  const std::string path = absl::StrCat(step_dir_, "/", file);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoError(errno, "opening shard file", path);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (offset > size || length > size - offset) {
    return absl::DataLossError(absl::StrCat(
        "shard file '", path, "' is ", size, " bytes, but the manifest puts ", what, " at ", length,
        " bytes from offset ", offset, ": the file is truncated or belongs to another save"));
  }
  return absl::OkStatus();
}

absl::Status CheckpointReader::ReadVerified(const std::string& file, uint64_t offset, uint64_t length,
                                            uint32_t crc, void* dst, const std::string& what) const {
  const std::string path = absl::StrCat(step_dir_, "/", file);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "opening shard file", path);
  // The kernel reads the whole range ahead (from a cold disk, not 128 KiB at a time) while
  // the pieces already read are checksummed, each while still in the CPU's cache.
  ::posix_fadvise(fd, static_cast<off_t>(offset), static_cast<off_t>(length), POSIX_FADV_WILLNEED);
  constexpr uint64_t kPiece = uint64_t{8} << 20;
  uint32_t actual = 0;
  absl::Status status;
  char* out = static_cast<char*>(dst);
  for (uint64_t done = 0; done < length && status.ok(); done += kPiece) {
    const uint64_t n = std::min(kPiece, length - done);
    status = ReadAt(fd, out + done, n, offset + done, path);
    if (status.ok()) actual = Crc32c(out + done, n, actual);
  }
  ::close(fd);
  TS_RETURN_IF_ERROR(status);
  bytes_read_ += length;
  if (actual != crc) {
    return absl::DataLossError(
        absl::StrFormat("checksum mismatch in '%s' for %s (bytes [%d, %d)): expected "
                        "crc32c %08x, got %08x; the file is corrupt",
                        path, what, offset, offset + length, crc, actual));
  }
  return absl::OkStatus();
}

absl::Status CheckpointReader::ReadRegion(const std::string& name, const Region& region, void* dst,
                                          size_t dst_bytes) const {
  TS_ASSIGN_OR_RETURN(const TensorEntry* t, Tensor(name));
  TS_RETURN_IF_ERROR(ValidateRegion(region, t->global_shape, absl::StrCat("reading tensor '", name, "'")));
  const size_t es = DTypeSize(t->dtype);
  if (dst_bytes != static_cast<size_t>(region.numel()) * es) {
    return absl::InvalidArgumentError(
        absl::StrCat("reading ", region.ToString(), " of tensor '", name, "': the buffer has ", dst_bytes,
                     " bytes, the region needs ", region.numel() * es, " (", DTypeName(t->dtype), ")"));
  }
  // Identical regions saved by several ranks are copies: the first that verifies is used.
  std::vector<const Region*> done;
  absl::Status first_error;
  int64_t copied = 0;
  std::vector<char> buffer;
  for (size_t i = 0; i < t->shards.size(); ++i) {
    const ShardRecord& s = t->shards[i];
    if (!Overlaps(s.region, region, t->global_shape)) continue;
    bool seen = false;
    for (const Region* r : done) seen = seen || *r == s.region;
    if (seen) continue;
    const std::string what =
        absl::StrCat("tensor '", name, "' shard ", s.region.ToString(), " (rank ", s.rank, ")");
    absl::Status status;
    if (s.region == region) {  // the whole shard is wanted: read straight into dst
      status = ReadVerified(s.file, s.byte_offset, s.byte_length, s.crc32c, dst, what);
      if (status.ok()) copied += region.numel();
    } else {
      status = CheckInFile(s.file, s.byte_offset, s.byte_length, what);
      if (status.ok()) {
        buffer.resize(s.byte_length);
        status = ReadVerified(s.file, s.byte_offset, s.byte_length, s.crc32c, buffer.data(), what);
      }
      if (status.ok()) {
        copied += CopyOverlap(t->global_shape, es, s.region, buffer.data(), region, static_cast<char*>(dst));
      }
    }
    if (status.ok()) {
      done.push_back(&s.region);
      continue;
    }
    if (first_error.ok()) first_error = status;
    // A later identical copy may still serve this region.
    bool has_copy = false;
    for (size_t j = i + 1; j < t->shards.size(); ++j) has_copy = has_copy || t->shards[j].region == s.region;
    if (!has_copy) return status;
  }
  if (copied != region.numel()) {
    if (!first_error.ok()) return first_error;
    return absl::DataLossError(absl::StrCat("tensor '", name, "' in '", step_dir_, "': the shards cover ",
                                            copied, " of the ", region.numel(), " elements of ",
                                            region.ToString()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> CheckpointReader::ReadBlob(const std::string& name) const {
  const BlobEntry* b = manifest_.FindBlob(name);
  if (!b) return absl::NotFoundError(absl::StrCat("checkpoint '", step_dir_, "' has no blob '", name, "'"));
  const std::string what = absl::StrCat("blob '", name, "' (rank ", b->rank, ")");
  TS_RETURN_IF_ERROR(CheckInFile(b->file, b->offset, b->length, what));
  std::string bytes(b->length, '\0');
  TS_RETURN_IF_ERROR(ReadVerified(b->file, b->offset, b->length, b->crc32c, bytes.data(), what));
  return bytes;
}

absl::Status CheckpointReader::VerifyChecksums() const {
  std::vector<char> buffer;
  for (const TensorEntry& t : manifest_.tensors) {
    for (const ShardRecord& s : t.shards) {
      const std::string what =
          absl::StrCat("tensor '", t.name, "' shard ", s.region.ToString(), " (rank ", s.rank, ")");
      TS_RETURN_IF_ERROR(CheckInFile(s.file, s.byte_offset, s.byte_length, what));
      buffer.resize(s.byte_length);
      TS_RETURN_IF_ERROR(ReadVerified(s.file, s.byte_offset, s.byte_length, s.crc32c, buffer.data(), what));
    }
  }
  for (const BlobEntry& b : manifest_.blobs) TS_RETURN_IF_ERROR(ReadBlob(b.name).status());
  return absl::OkStatus();
}

}  // namespace tessera::checkpoint
