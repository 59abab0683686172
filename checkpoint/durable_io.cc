// Implementation of durable_io.h on plain POSIX calls.
#include "checkpoint/durable_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace tessera::checkpoint {

absl::Status ErrnoError(int err, const std::string& what, const std::string& path) {
  const std::string message = absl::StrCat(what, " '", path, "': ", std::strerror(err));
  if (err == ENOSPC || err == EDQUOT || err == EFBIG) return absl::ResourceExhaustedError(message);
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == EACCES || err == EPERM || err == EROFS) return absl::PermissionDeniedError(message);
  return absl::DataLossError(message);
}

absl::Status WriteAll(int fd, const void* data, size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  // Bounded chunks: some kernels cap one write at ~2 GiB anyway.
  constexpr size_t kChunk = size_t{1} << 30;
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size < kChunk ? size : kChunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "writing", path);
    }
    if (n == 0) return ErrnoError(ENOSPC, "writing", path);
    p += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status ReadAt(int fd, void* data, size_t size, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(data);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, p + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "reading", path);
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat("'", path, "' is truncated: reading bytes [", offset, ", ",
                                              offset + size, ") ended at byte ", offset + done));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status FsyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "opening directory", dir);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some filesystems do not support fsync on directories (EINVAL); their renames are as durable
  // as they get.
  if (rc != 0 && err != EINVAL) return ErrnoError(err, "fsync of directory", dir);
  return absl::OkStatus();
}

absl::Status WriteFileDurable(const std::string& path, std::string_view contents,
                              const std::function<void()>& before_rename) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(errno, "creating", tmp);
  absl::Status status = WriteAll(fd, contents.data(), contents.size(), tmp);
  if (status.ok() && ::fsync(fd) != 0) status = ErrnoError(errno, "fsync of", tmp);
  if (::close(fd) != 0 && status.ok()) status = ErrnoError(errno, "closing", tmp);
  if (status.ok() && before_rename) before_rename();
  if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0)
    status = ErrnoError(errno, "renaming to", path);
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return FsyncDirectory(dir.empty() ? "." : dir);
}

}  // namespace tessera::checkpoint
