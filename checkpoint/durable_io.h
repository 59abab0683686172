// POSIX file operations for crash-safe checkpoints, reporting failures as absl::Status naming the
// file and errno's text: writing every byte, positioned reads that detect truncation, fsync of a
// directory (so that a rename survives a power loss), and the durable replacement of a file
// (temporary file, fsync, rename, fsync of the directory).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace tessera::checkpoint {

// Writes all `size` bytes to `fd` (retrying short writes and EINTR). `path` names the file in
// the error, which is ResourceExhausted for ENOSPC/EDQUOT/EFBIG, else DataLoss.
absl::Status WriteAll(int fd, const void* data, size_t size, const std::string& path);
// Reads exactly `size` bytes at `offset`; fewer (the file ends first) is a DataLoss error saying
// the file is truncated.
absl::Status ReadAt(int fd, void* data, size_t size, uint64_t offset, const std::string& path);
// Makes the directory's entries (created or renamed files) durable.
absl::Status FsyncDirectory(const std::string& dir);
// Replaces `path` with `contents` atomically and durably: `path.tmp.PID` is written and fsynced,
// `before_rename` runs (tests kill the process there), the file is renamed over `path`, and the
// directory is fsynced. On failure the temporary file is removed and `path` is untouched.
absl::Status WriteFileDurable(const std::string& path, std::string_view contents,
                              const std::function<void()>& before_rename = nullptr);
// The error of a failed system call on `path`: "<what> '<path>': <strerror>".
absl::Status ErrnoError(int err, const std::string& what, const std::string& path);

}  // namespace tessera::checkpoint
