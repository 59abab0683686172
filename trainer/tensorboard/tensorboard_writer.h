// Writes TensorBoard event files natively: `tensorboard --logdir DIR` (or any reader of
// TensorBoard's Event protos) shows the scalars. One writer owns one file,
//   DIR/events.out.tfevents.<unix seconds>.<hostname><filename_suffix>
// whose first record is the file_version event "brain.Event:2", followed by one Event per call
// of AddScalar/AddScalars, each framed as a TFRecord (record_framing.h).
//
// Writes are buffered in memory and reach the file on Flush(), when the buffer grows past
// flush_bytes, when an Add comes flush_interval_s or more after the last flush, and on
// destruction. An event file is an append-only stream that TensorBoard reads while it grows, so
// it is written in place, not as a temporary file renamed at the end. After an I/O error the
// writer stays failed: every later call returns the same error, which names the file.
//
// This header includes no Protobuf header (LibTorch bundles its own Protobuf; translation units
// that include torch must not see Debian's), so LibTorch code may include it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::tensorboard {

struct TensorBoardWriterOptions {
  // Appended to the file name, e.g. ".rank3", so that several processes writing into one
  // directory at the same second get distinct files. Must not contain '/'.
  std::string filename_suffix;
  // Buffered bytes that trigger a flush.
  size_t flush_bytes = 256 * 1024;
  // An Add this long after the last flush flushes (0: every Add flushes). Nothing flushes
  // between calls: a caller that logs rarely and wants the file current calls Flush().
  double flush_interval_s = 10;
};

// Seconds since the Unix epoch, with sub-second resolution: the wall_time of an event.
double WallTimeNow();

// Thread-safe: calls from several threads are serialized.
class TensorBoardWriter {
 public:
  // Creates DIR (and its parents) if needed and a new event file in it, never overwriting one:
  // when the name is taken (a writer opened in the same second), ".1", ".2", ... is appended.
  // Writes and flushes the file_version record before returning.
  static absl::StatusOr<std::unique_ptr<TensorBoardWriter>> Open(
      const std::string& dir, const TensorBoardWriterOptions& options = {});

  // Flushes; an error is logged (call Close() first to see it as a status).
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One event: `tag` = `value` at `step`. The value is stored as a 32-bit float (TensorBoard's
  // simple_value), so about 7 significant digits survive; NaN and infinities are kept. The tag
  // must be non-empty valid UTF-8; '/' groups tags in TensorBoard's UI ("train/loss").
  absl::Status AddScalar(const std::string& tag, int64_t step, double value,
                         double wall_time = WallTimeNow());
  // Several scalars of one step in one event (one record), in the given order.
  absl::Status AddScalars(int64_t step, const std::vector<std::pair<std::string, double>>& scalars,
                          double wall_time = WallTimeNow());

  // Hands every buffered byte to the operating system (no fsync: TensorBoard reads the page
  // cache, and an fsync per step would stall training on network file systems).
  absl::Status Flush();
  // Flushes and closes the file; later calls fail. Called by the destructor if not before.
  absl::Status Close();

  // The event file this writer appends to.
  const std::string& path() const { return path_; }

 private:
  TensorBoardWriter(std::string path, int fd, const TensorBoardWriterOptions& options);
  absl::Status AppendEventLocked(const std::string& serialized_event);
  absl::Status FlushLocked();

  const std::string path_;
  const TensorBoardWriterOptions options_;
  std::mutex mu_;
  int fd_;               // -1 once closed
  std::string buffer_;   // framed records not yet written
  absl::Status status_;  // the first I/O error; sticky
  std::chrono::steady_clock::time_point last_flush_;
};

}  // namespace tessera::tensorboard
