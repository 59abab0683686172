// TensorBoardWriter: builds Event protos, frames them as TFRecords into a memory buffer and
// writes the buffer to the file with write(2). The only translation unit that sees the
// generated Protobuf classes.
#include "trainer/tensorboard/tensorboard_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "trainer/tensorboard/event.pb.h"
#include "trainer/tensorboard/record_framing.h"

namespace tessera::tensorboard {
namespace {

// The version string of every TensorBoard event file since 2016; readers compare it as a float.
static_assert(std::numeric_limits<float>::is_iec559, "scalars are converted to float with IEEE semantics");

constexpr char kFileVersion[] = "brain.Event:2";
// How many ".N" suffixes Open tries when the name is taken.
constexpr int kMaxNameAttempts = 1000;

std::string ErrnoMessage(int err) { return std::strerror(err); }

// Python's reader decodes a proto3 string as UTF-8 and rejects the whole event otherwise, so
// invalid tags are refused here. Checks structure, overlongs and surrogates (RFC 3629).
bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int extra;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      extra = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;  // truncated sequence
    for (int k = 1; k <= extra; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += extra + 1;
  }
  return true;
}

std::string HostName() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace

double WallTimeNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

absl::StatusOr<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Open(
    const std::string& dir, const TensorBoardWriterOptions& options) {
  if (dir.empty()) return absl::InvalidArgumentError("TensorBoard event directory is empty");
  if (options.filename_suffix.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("TensorBoard filename_suffix '", options.filename_suffix,
                                                   "' contains '/'; it is appended to a file name"));
  }
  TS_RETURN_IF_ERROR(MakeDirs(dir));
  const double now = WallTimeNow();
  const std::string base = absl::StrCat(dir, "/events.out.tfevents.", static_cast<int64_t>(now), ".",
                                        HostName(), options.filename_suffix);
  std::string path;
  int fd = -1;
  for (int attempt = 0; attempt < kMaxNameAttempts && fd < 0; ++attempt) {
    path = attempt == 0 ? base : absl::StrCat(base, ".", attempt);
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create TensorBoard event file '", path, "': ", ErrnoMessage(errno)));
    }
  }
  if (fd < 0) {
    return absl::AlreadyExistsError(absl::StrCat("cannot create a TensorBoard event file in '", dir, "': '",
                                                 base, "' and ", kMaxNameAttempts - 1,
                                                 " numbered variants exist"));
  }
  std::unique_ptr<TensorBoardWriter> writer(new TensorBoardWriter(path, fd, options));
  Event event;
  event.set_wall_time(now);
  event.set_file_version(kFileVersion);
  std::lock_guard<std::mutex> lock(writer->mu_);
  TS_RETURN_IF_ERROR(writer->AppendEventLocked(event.SerializeAsString()));
  TS_RETURN_IF_ERROR(writer->FlushLocked());
  return writer;
}

TensorBoardWriter::TensorBoardWriter(std::string path, int fd, const TensorBoardWriterOptions& options)
    : path_(std::move(path)), options_(options), fd_(fd), last_flush_(std::chrono::steady_clock::now()) {}

TensorBoardWriter::~TensorBoardWriter() {
  if (fd_ < 0) return;  // closed by the caller, who saw any error
  if (absl::Status status = Close(); !status.ok()) TS_LOG(ERROR) << status.message();
}

absl::Status TensorBoardWriter::AddScalar(const std::string& tag, int64_t step, double value,
                                          double wall_time) {
  return AddScalars(step, {{tag, value}}, wall_time);
}

absl::Status TensorBoardWriter::AddScalars(int64_t step,
                                           const std::vector<std::pair<std::string, double>>& scalars,
                                           double wall_time) {
  Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  Summary* summary = event.mutable_summary();
  for (const auto& [tag, value] : scalars) {
    if (tag.empty())
      return absl::InvalidArgumentError(
          absl::StrCat("TensorBoard scalar at step ", step, " has an empty tag"));
    if (!IsValidUtf8(tag)) {
      return absl::InvalidArgumentError(
          absl::StrCat("TensorBoard tag '", tag, "' at step ", step, " is not valid UTF-8"));
    }
    Summary::Value* v = summary->add_value();
    v->set_tag(tag);
    // IEEE conversion: rounds to nearest, beyond float's range to +-infinity, NaN stays NaN.
    v->set_simple_value(static_cast<float>(value));
  }
  std::lock_guard<std::mutex> lock(mu_);
  TS_RETURN_IF_ERROR(AppendEventLocked(event.SerializeAsString()));
  const double since_flush =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - last_flush_).count();
  if (buffer_.size() >= options_.flush_bytes || since_flush >= options_.flush_interval_s)
    return FlushLocked();
  return absl::OkStatus();
}

absl::Status TensorBoardWriter::Flush() {
  std::lock_guard<std::mutex> lock(mu_);
  return FlushLocked();
}

absl::Status TensorBoardWriter::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) {
    if (!status_.ok()) return status_;
    return absl::FailedPreconditionError(
        absl::StrCat("TensorBoard event file '", path_, "' is already closed"));
  }
  absl::Status status = FlushLocked();
  if (::close(fd_) != 0 && status.ok()) {
    status = absl::DataLossError(
        absl::StrCat("closing TensorBoard event file '", path_, "': ", ErrnoMessage(errno)));
  }
  fd_ = -1;
  if (status_.ok()) status_ = status;
  return status;
}

absl::Status TensorBoardWriter::AppendEventLocked(const std::string& serialized_event) {
  if (!status_.ok()) return status_;
  if (fd_ < 0)
    return absl::FailedPreconditionError(absl::StrCat("TensorBoard event file '", path_, "' is closed"));
  AppendFramedRecord(serialized_event, &buffer_);
  return absl::OkStatus();
}

absl::Status TensorBoardWriter::FlushLocked() {
  if (!status_.ok()) return status_;
  if (fd_ < 0)
    return absl::FailedPreconditionError(absl::StrCat("TensorBoard event file '", path_, "' is closed"));
  size_t written = 0;
  while (written < buffer_.size()) {
    const ssize_t n = ::write(fd_, buffer_.data() + written, buffer_.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      status_ = absl::DataLossError(absl::StrCat("writing TensorBoard event file '", path_,
                                                 "': ", ErrnoMessage(err), " (", buffer_.size() - written,
                                                 " bytes not written)"));
      return status_;
    }
    written += static_cast<size_t>(n);
  }
  buffer_.clear();
  last_flush_ = std::chrono::steady_clock::now();
  return absl::OkStatus();
}

}  // namespace tessera::tensorboard
