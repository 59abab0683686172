// Sequential writing of a new file with O_DIRECT, bypassing the page cache: the caller's bytes are
// copied into a small ring of 4096-aligned buffers, their CRC-32C computed over each piece just
// copied (while it is in cache, so the source is read once), and each full buffer is written by
// a background thread while the caller fills the next one. The last, partial buffer is padded to
// the alignment and the file truncated back to its true length. Where the file system refuses an
// O_DIRECT write (EINVAL), the descriptor drops O_DIRECT and the same bytes are written through
// the page cache. The caller fsyncs the descriptor; this class never closes it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace tessera::checkpoint {

inline constexpr uint64_t kDirectIoAlignment = 4096;

class DirectWriter {
 public:
  // `fd` is open for writing at an empty file, normally with O_DIRECT. `buffer_bytes` is a
  // multiple of kDirectIoAlignment.
  DirectWriter(int fd, std::string path, uint64_t buffer_bytes = uint64_t{8} << 20, int buffers = 3);
  // Stops the background thread (the file is left as written so far).
  ~DirectWriter();
  DirectWriter(const DirectWriter&) = delete;
  DirectWriter& operator=(const DirectWriter&) = delete;

  // Appends `size` bytes; when `crc` is set, continues the CRC-32C in *crc over exactly them.
  absl::Status Append(const void* data, uint64_t size, uint32_t* crc = nullptr);
  absl::Status AppendZeros(uint64_t size);
  // Writes what is buffered, waits for every write, replaces the file's first `patch_size` bytes
  // (at most kDirectIoAlignment) with `patch`, and truncates the file to the bytes appended.
  absl::Status Finish(const void* patch, uint64_t patch_size);

  uint64_t size() const { return size_; }
  // Whether the writes so far went around the page cache.
  bool direct() const;

 private:
  struct Job {
    int buffer;
    uint64_t offset;
    uint64_t length;
  };
  // Hands the current buffer to the writer thread and takes a free one (waiting if none is).
  absl::Status Submit(uint64_t length);
  absl::Status WaitIdle();
  void Loop();
  // pwrite of all `length` bytes; drops O_DIRECT once if the file system refuses it.
  absl::Status WriteAt(const char* data, uint64_t length, uint64_t offset);

  const int fd_;
  const std::string path_;
  const uint64_t buffer_bytes_;
  std::vector<char*> buffers_;
  std::vector<char> first_block_;  // the file's first kDirectIoAlignment bytes, kept for Finish
  int current_ = -1;               // the buffer being filled
  uint64_t fill_ = 0;              // bytes in it
  uint64_t size_ = 0;              // bytes appended
  uint64_t flushed_ = 0;           // file offset of the current buffer's first byte

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;   // guarded by mu_
  std::vector<int> free_;  // guarded by mu_
  int busy_ = 0;           // guarded by mu_: jobs taken by the thread and not done
  bool stop_ = false;      // guarded by mu_
  bool direct_ = true;     // guarded by mu_
  absl::Status error_;     // guarded by mu_: the first failed write
  std::thread thread_;
};

}  // namespace tessera::checkpoint
