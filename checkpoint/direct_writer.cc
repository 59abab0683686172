// Implementation of direct_writer.h: one background thread writes the filled buffers in order.
#include "checkpoint/direct_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "checkpoint/durable_io.h"
#include "core/crc32c.h"
#include "core/logging.h"
#include "core/status_macros.h"

namespace tessera::checkpoint {
namespace {

// The copy and the checksum walk the same piece, small enough to stay in L2 between the two.
constexpr uint64_t kCopyPiece = uint64_t{256} << 10;

uint64_t RoundUp(uint64_t n) {
  return (n + kDirectIoAlignment - 1) / kDirectIoAlignment * kDirectIoAlignment;
}

}  // namespace

DirectWriter::DirectWriter(int fd, std::string path, uint64_t buffer_bytes, int buffers)
    : fd_(fd), path_(std::move(path)), buffer_bytes_(RoundUp(std::max<uint64_t>(buffer_bytes, 1))) {
  for (int i = 0; i < std::max(buffers, 2); ++i) {
    void* p = nullptr;
    TS_CHECK(::posix_memalign(&p, kDirectIoAlignment, buffer_bytes_) == 0)
        << "cannot allocate " << buffer_bytes_ << " bytes for checkpoint writes";
    buffers_.push_back(static_cast<char*>(p));
    free_.push_back(i);
  }
  current_ = free_.back();
  free_.pop_back();
  thread_ = std::thread([this] { Loop(); });
}

DirectWriter::~DirectWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  for (char* p : buffers_) std::free(p);
}

bool DirectWriter::direct() const {
  std::lock_guard<std::mutex> lock(mu_);
  return direct_;
}

absl::Status DirectWriter::Append(const void* data, uint64_t size, uint32_t* crc) {
  const char* src = static_cast<const char*>(data);
  while (size > 0) {
    const uint64_t n = std::min({size, buffer_bytes_ - fill_, kCopyPiece});
    char* dst = buffers_[current_] + fill_;
    std::memcpy(dst, src, n);
    // Over the copy, not the source: these are the bytes that reach the disk.
    if (crc != nullptr) *crc = Crc32c(dst, n, *crc);
    fill_ += n;
    size_ += n;
    src += n;
    size -= n;
    if (fill_ == buffer_bytes_) TS_RETURN_IF_ERROR(Submit(fill_));
  }
  return absl::OkStatus();
}

absl::Status DirectWriter::AppendZeros(uint64_t size) {
  while (size > 0) {
    const uint64_t n = std::min(size, buffer_bytes_ - fill_);
    std::memset(buffers_[current_] + fill_, 0, n);
    fill_ += n;
    size_ += n;
    size -= n;
    if (fill_ == buffer_bytes_) TS_RETURN_IF_ERROR(Submit(fill_));
  }
  return absl::OkStatus();
}

absl::Status DirectWriter::Submit(uint64_t length) {
  if (flushed_ == 0) {
    first_block_.assign(buffers_[current_], buffers_[current_] + std::min(length, kDirectIoAlignment));
  }
  std::unique_lock<std::mutex> lock(mu_);
  jobs_.push_back(Job{current_, flushed_, length});
  flushed_ += length;
  fill_ = 0;
  cv_.notify_all();
  cv_.wait(lock, [this] { return !free_.empty() || !error_.ok(); });
  if (!error_.ok()) return error_;
  current_ = free_.back();
  free_.pop_back();
  return absl::OkStatus();
}

absl::Status DirectWriter::WaitIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return (jobs_.empty() && busy_ == 0) || !error_.ok(); });
  return error_;
}

void DirectWriter::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stopping, nothing left
    const Job job = jobs_.front();
    jobs_.pop_front();
    ++busy_;
    lock.unlock();
    absl::Status s = error_.ok() ? WriteAt(buffers_[job.buffer], job.length, job.offset) : absl::OkStatus();
    lock.lock();
    if (!s.ok() && error_.ok()) error_ = std::move(s);
    --busy_;
    free_.push_back(job.buffer);
    cv_.notify_all();
  }
}

absl::Status DirectWriter::WriteAt(const char* data, uint64_t length, uint64_t offset) {
  uint64_t done = 0;
  while (done < length) {
    const ssize_t n = ::pwrite(fd_, data + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EINVAL) {
      std::lock_guard<std::mutex> lock(mu_);
      const int flags = ::fcntl(fd_, F_GETFL);
      if (!direct_ || flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_DIRECT) != 0) {
        return ErrnoError(EINVAL, "writing", path_);
      }
      // Accepted at open, refused at the write (some file systems check only there).
      TS_LOG(DEBUG) << "checkpoint: '" << path_
                    << "' refuses O_DIRECT writes; writing through the page cache";
      direct_ = false;
      continue;
    }
    if (n < 0) return ErrnoError(errno, "writing", path_);
    if (n == 0) return ErrnoError(ENOSPC, "writing", path_);
    done += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status DirectWriter::Finish(const void* patch, uint64_t patch_size) {
  if (fill_ > 0) {
    // The tail, padded to the alignment; the truncation below removes the padding.
    const uint64_t padded = RoundUp(fill_);
    std::memset(buffers_[current_] + fill_, 0, padded - fill_);
    TS_RETURN_IF_ERROR(Submit(padded));
  }
  TS_RETURN_IF_ERROR(WaitIdle());
  if (patch_size > 0) {
    if (patch_size > first_block_.size()) {
      return absl::InternalError(absl::StrCat("patching ", patch_size, " bytes at the start of '", path_,
                                              "', which has only ", first_block_.size()));
    }
    // The first block again, with the patch: an aligned write, like every other one.
    char* block = buffers_[current_];
    std::memset(block, 0, kDirectIoAlignment);
    std::memcpy(block, first_block_.data(), first_block_.size());
    std::memcpy(block, patch, patch_size);
    TS_RETURN_IF_ERROR(WriteAt(block, kDirectIoAlignment, 0));
  }
  if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0) return ErrnoError(errno, "truncating", path_);
  return absl::OkStatus();
}

}  // namespace tessera::checkpoint
