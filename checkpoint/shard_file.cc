// Shard file writer and header reader (format in shard_file.h).
#include "checkpoint/shard_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoint/direct_writer.h"
#include "checkpoint/durable_io.h"
#include "core/crc32c.h"
#include "core/logging.h"
#include "core/status_macros.h"

namespace tessera::checkpoint {
namespace {

static_assert(std::endian::native == std::endian::little,
              "checkpoint files hold little-endian bytes; a big-endian host would need byte swaps");

constexpr char kMagic[8] = {'T', 'S', 'S', 'H', 'A', 'R', 'D', '\0'};

template <typename T>
void Put(unsigned char* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}
template <typename T>
T Get(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

std::string ShardFileName(int rank) { return absl::StrFormat("shard-%05d.bin", rank); }

absl::StatusOr<ShardFileHeader> ReadShardFileHeader(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("shard file '", path, "' is missing"));
    return ErrnoError(errno, "opening shard file", path);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoError(err, "stat of shard file", path);
  }
  unsigned char h[kShardHeaderSize];
  const uint64_t length = static_cast<uint64_t>(st.st_size);
  absl::Status read =
      length < kShardHeaderSize
          ? absl::DataLossError(absl::StrCat("shard file '", path, "' is truncated: ", length,
                                             " bytes, less than its ", kShardHeaderSize, "-byte header"))
          : ReadAt(fd, h, kShardHeaderSize, 0, path);
  ::close(fd);
  TS_RETURN_IF_ERROR(read);
  if (std::memcmp(h, kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError(absl::StrCat("'", path, "' is not a Tessera shard file (bad magic)"));
  }
  ShardFileHeader header;
  header.version = Get<uint32_t>(h + 8);
  if (header.version == 0 || header.version > kShardFileVersion) {
    return absl::FailedPreconditionError(absl::StrCat("shard file '", path, "' has format version ",
                                                      header.version, "; this Tessera reads versions 1 to ",
                                                      kShardFileVersion));
  }
  if (Get<uint32_t>(h + 12) != kShardHeaderSize) {
    return absl::DataLossError(absl::StrCat("shard file '", path, "' declares a ", Get<uint32_t>(h + 12),
                                            "-byte header; version 1 has ", kShardHeaderSize));
  }
  if (Get<uint32_t>(h + 32) != Crc32c(h, 32)) {
    return absl::DataLossError(
        absl::StrCat("shard file '", path, "' has a corrupt header (checksum mismatch)"));
  }
  header.rank = Get<uint32_t>(h + 16);
  // Ranks are ints everywhere else; a larger value is not a rank (the checksum covers the field,
  // so only a writer that stores garbage gets here).
  if (header.rank > static_cast<uint32_t>(INT32_MAX)) {
    return absl::DataLossError(absl::StrCat("shard file '", path, "' names writing rank ", header.rank,
                                            " (byte offset 16); ranks are below 2^31"));
  }
  header.record_count = Get<uint32_t>(h + 20);
  header.file_size = Get<uint64_t>(h + 24);
  if (header.file_size != length) {
    return absl::DataLossError(absl::StrCat("shard file '", path, "' is ", length,
                                            " bytes but its header says ", header.file_size,
                                            header.file_size > length ? " (truncated)" : ""));
  }
  return header;
}

ShardFileWriter::ShardFileWriter(std::string path, std::string tmp, int fd, int rank)
    : path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd), rank_(rank) {}

absl::StatusOr<std::unique_ptr<ShardFileWriter>> ShardFileWriter::Create(const std::string& path, int rank,
                                                                         const ShardWriteOptions& options) {
  std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  constexpr int kFlags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
  int fd = -1;
  if (options.direct_io) {
    fd = options.refuse_direct_io_for_testing ? (errno = EINVAL, -1)
                                              : ::open(tmp.c_str(), kFlags | O_DIRECT, 0644);
    if (fd < 0 && errno != EINVAL) return ErrnoError(errno, "creating shard file", tmp);
    if (fd < 0) {
      static std::atomic<bool> logged{false};
      if (!logged.exchange(true)) {
        TS_LOG(DEBUG) << "checkpoint: the file system of '" << tmp
                      << "' refuses O_DIRECT; shard files are written through the page cache";
      }
    }
  }
  const bool direct = fd >= 0;
  if (!direct) fd = ::open(tmp.c_str(), kFlags, 0644);
  if (fd < 0) return ErrnoError(errno, "creating shard file", tmp);
  std::unique_ptr<ShardFileWriter> w(new ShardFileWriter(path, std::move(tmp), fd, rank));
  if (direct) {
    w->direct_ = std::make_unique<DirectWriter>(fd, w->tmp_);
    // Room for the header, written last (DirectWriter::Finish patches it in).
    TS_RETURN_IF_ERROR(w->direct_->AppendZeros(kShardHeaderSize));
    return w;
  }
  // Room for the header, written last.
  unsigned char zeros[kShardHeaderSize] = {};
  TS_RETURN_IF_ERROR(WriteAll(fd, zeros, sizeof(zeros), w->tmp_));
  return w;
}

ShardFileWriter::~ShardFileWriter() {
  direct_.reset();  // its thread writes to fd_
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

bool ShardFileWriter::direct_io() const { return direct_ != nullptr && direct_->direct(); }

absl::StatusOr<ShardFileWriter::Record> ShardFileWriter::Append(const void* data, uint64_t size) {
  static const unsigned char kZeros[kShardRecordAlignment] = {};
  const uint64_t pad = (kShardRecordAlignment - size_ % kShardRecordAlignment) % kShardRecordAlignment;
  if (direct_ != nullptr) {
    TS_RETURN_IF_ERROR(direct_->AppendZeros(pad));
    Record record{size_ + pad, size, 0};
    TS_RETURN_IF_ERROR(direct_->Append(data, size, &record.crc32c));
    size_ += pad + size;
    ++records_;
    return record;
  }
  TS_RETURN_IF_ERROR(WriteAll(fd_, kZeros, pad, tmp_));
  size_ += pad;
  Record record{size_, size, 0};
  // Checksum and write in pieces, so the bytes are checksummed while they are in cache.
  constexpr uint64_t kPiece = uint64_t{8} << 20;
  const char* p = static_cast<const char*>(data);
  for (uint64_t done = 0; done < size; done += kPiece) {
    const uint64_t n = size - done < kPiece ? size - done : kPiece;
    record.crc32c = Crc32c(p + done, n, record.crc32c);
    TS_RETURN_IF_ERROR(WriteAll(fd_, p + done, n, tmp_));
    StartWriteback(size_ + done + n);
  }
  size_ += size;
  ++records_;
  return record;
}

void ShardFileWriter::StartWriteback(uint64_t written) {
#if defined(__linux__)
  // Writeback starts as each window of the file is written instead of at the final fsync, so
  // the disk is busy from the first window while the next ones are checksummed and written.
  // One window behind, the writer waits for the disk and drops the written pages: the dirty
  // pages stay bounded (no throttling of a writer that holds a large state in memory, and no
  // page cache pushed out for bytes nobody reads back). Failures surface at the fsync.
  constexpr uint64_t kWindow = uint64_t{32} << 20;
  if (written < started_ + kWindow) return;
  ::sync_file_range(fd_, static_cast<off_t>(started_), static_cast<off_t>(written - started_),
                    SYNC_FILE_RANGE_WRITE);
  if (started_ > waited_) {
    ::sync_file_range(fd_, static_cast<off_t>(waited_), static_cast<off_t>(started_ - waited_),
                      SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    ::posix_fadvise(fd_, static_cast<off_t>(waited_), static_cast<off_t>(started_ - waited_),
                    POSIX_FADV_DONTNEED);
    waited_ = started_;
  }
  started_ = written;
#else
  (void)written;
#endif
}

absl::StatusOr<uint64_t> ShardFileWriter::Commit() {
  unsigned char h[kShardHeaderSize] = {};
  std::memcpy(h, kMagic, sizeof(kMagic));
  Put<uint32_t>(h + 8, kShardFileVersion);
  Put<uint32_t>(h + 12, static_cast<uint32_t>(kShardHeaderSize));
  Put<uint32_t>(h + 16, static_cast<uint32_t>(rank_));
  Put<uint32_t>(h + 20, records_);
  Put<uint64_t>(h + 24, size_);
  Put<uint32_t>(h + 32, Crc32c(h, 32));
  if (direct_ != nullptr) {
    TS_RETURN_IF_ERROR(direct_->Finish(h, sizeof(h)));
  } else if (::pwrite(fd_, h, sizeof(h), 0) != static_cast<ssize_t>(sizeof(h))) {
    return ErrnoError(errno, "writing the header of", tmp_);
  }
  if (::fsync(fd_) != 0) return ErrnoError(errno, "fsync of", tmp_);
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) return ErrnoError(errno, "closing", tmp_);
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) return ErrnoError(errno, "renaming to", path_);
  committed_ = true;
  const std::string dir = std::filesystem::path(path_).parent_path().string();
  TS_RETURN_IF_ERROR(FsyncDirectory(dir.empty() ? "." : dir));
  return size_;
}

}  // namespace tessera::checkpoint
