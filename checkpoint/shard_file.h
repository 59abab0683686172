// A rank's shard file, STEP_DIR/shard-RRRRR.bin: a 64-byte header, then the raw little-endian
// bytes of each saved tensor slice and blob ("record"), each starting at a multiple of 64 bytes.
// The manifest says which record is which and holds each record's CRC-32C.
//
//   offset  size  field
//        0     8  magic "TSSHARD\0"
//        8     4  version (1)
//       12     4  header size (64)
//       16     4  writing rank
//       20     4  record count
//       24     8  file size in bytes (header included)
//       32     4  CRC-32C of bytes [0, 32)
//       36    28  zero
//
// All integers are little-endian. The reader checks the magic, the version, the header's own
// checksum and the file size against the file's real length, so a truncated or foreign file is
// reported before any tensor is read. The writer writes `NAME.tmp.PID`, fsyncs it, renames it to
// NAME and fsyncs the directory: a shard file either exists whole or not at all. It writes through
// the page cache, or with O_DIRECT from aligned buffers (ShardWriteOptions::direct_io); the bytes
// are the same either way.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace tessera::checkpoint {

inline constexpr uint32_t kShardFileVersion = 1;
inline constexpr uint64_t kShardHeaderSize = 64;
inline constexpr uint64_t kShardRecordAlignment = 64;

// "shard-00003.bin".
std::string ShardFileName(int rank);

class DirectWriter;

struct ShardWriteOptions {
  // O_DIRECT writes from a ring of aligned buffers (direct_writer.h) where the file system accepts
  // them; elsewhere (open fails with EINVAL) the page cache, as without the option.
  bool direct_io = false;
  // Tests: open as if the file system refused O_DIRECT.
  bool refuse_direct_io_for_testing = false;
};

struct ShardFileHeader {
  uint32_t version = kShardFileVersion;
  uint32_t rank = 0;
  uint32_t record_count = 0;
  uint64_t file_size = 0;
};

// Reads and checks the header of `path` (magic, version, header checksum, file size against the
// file's length).
absl::StatusOr<ShardFileHeader> ReadShardFileHeader(const std::string& path);

class ShardFileWriter {
 public:
  struct Record {
    uint64_t offset;
    uint64_t length;
    uint32_t crc32c;
  };

  // Creates `path`'s temporary file.
  static absl::StatusOr<std::unique_ptr<ShardFileWriter>> Create(const std::string& path, int rank,
                                                                 const ShardWriteOptions& options = {});
  // Removes the temporary file unless Commit() succeeded.
  ~ShardFileWriter();
  ShardFileWriter(const ShardFileWriter&) = delete;
  ShardFileWriter& operator=(const ShardFileWriter&) = delete;

  // Appends one record (aligned) and returns where it went and its checksum.
  absl::StatusOr<Record> Append(const void* data, uint64_t size);
  // Writes the header, fsyncs, renames the temporary file to the final name and fsyncs the
  // directory. Returns the final file size.
  absl::StatusOr<uint64_t> Commit();

  const std::string& path() const { return path_; }
  // Whether the bytes so far were written with O_DIRECT.
  bool direct_io() const;

 private:
  ShardFileWriter(std::string path, std::string tmp, int fd, int rank);

  // Starts the disk's writeback of what was written since the last call (every 32 MiB), and
  // waits for the window before it.
  void StartWriteback(uint64_t written);

  std::string path_, tmp_;
  int fd_;
  uint64_t started_ = 0;  // writeback started for bytes [0, started_)
  uint64_t waited_ = 0;   // and is complete for [0, waited_)
  int rank_;
  uint64_t size_ = kShardHeaderSize;
  uint32_t records_ = 0;
  bool committed_ = false;
  std::unique_ptr<DirectWriter> direct_;  // set when fd_ has O_DIRECT
};

}  // namespace tessera::checkpoint
