// The save protocol of checkpoint_writer.h. Every rank runs the same sequence of collectives
// whatever happens locally: a rank that fails carries its error into the report of step 3
// instead of leaving the protocol, so a failure is never a hang and every rank returns the same
// Status.
#include "checkpoint/checkpoint_writer.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <chrono>
#include <cstring>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/durable_io.h"
#include "checkpoint/shard_file.h"
#include "core/file_util.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "parallel/comm/runtime.h"

namespace tessera::checkpoint {
namespace {

// The device the communicator exchanges tensors on ("cuda:N" for NCCL, else the CPU).
at::Device CommDevice(const parallel::Communicator& comm) {
  const std::string d = comm.device_description();
  return d.rfind("cuda:", 0) == 0 ? at::Device(d) : at::Device(at::kCPU);
}

// Bytes in an int64 tensor (the communicators carry no byte dtype), zero-padded.
at::Tensor Pack(const std::string& bytes, int64_t words, at::Device device) {
  at::Tensor t = at::zeros({words}, at::kLong);
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t.to(device);
}

std::string Unpack(const at::Tensor& t, size_t size) {
  const at::Tensor cpu = t.cpu();
  return std::string(static_cast<const char*>(cpu.data_ptr()), size);
}

int64_t Words(int64_t bytes) { return (bytes + 7) / 8; }

enum SnapshotKind : char { kOwnMemory = 0, kInSave = 1, kOnThread = 2 };

// Rank 0's `status` to every rank's `*result` (code and message). Returns the communication's
// own error.
absl::Status BroadcastStatus(parallel::Communicator& comm, const absl::Status& status, absl::Status* result) {
  const at::Device device = CommDevice(comm);
  const std::string message(status.message());
  at::Tensor head =
      at::tensor({static_cast<int64_t>(status.code()), static_cast<int64_t>(message.size())}, at::kLong)
          .to(device);
  TS_RETURN_IF_ERROR(comm.Broadcast(head, 0));
  const at::Tensor h = head.cpu();
  const auto code = static_cast<absl::StatusCode>(h[0].item<int64_t>());
  const int64_t size = h[1].item<int64_t>();
  if (size == 0) {
    *result = absl::Status(code, "");
    return absl::OkStatus();
  }
  at::Tensor body = Pack(comm.rank() == 0 ? message : std::string(), Words(size), device);
  TS_RETURN_IF_ERROR(comm.Broadcast(body, 0));
  *result = absl::Status(code, Unpack(body, size));
  return absl::OkStatus();
}

// Every rank's report to rank 0 (rank 0 gets all, in rank order; the others get none).
absl::StatusOr<std::vector<std::string>> GatherToRoot(parallel::Communicator& comm, const std::string& mine) {
  const at::Device device = CommDevice(comm);
  const int size = comm.size();
  at::Tensor my_size = at::full({1}, static_cast<int64_t>(mine.size()), at::kLong).to(device);
  at::Tensor sizes = at::zeros({size}, at::kLong).to(device);
  TS_RETURN_IF_ERROR(comm.AllGather(sizes, my_size));
  const at::Tensor sizes_cpu = sizes.cpu();
  std::vector<std::string> out;
  if (comm.rank() != 0) {
    TS_RETURN_IF_ERROR(comm.Send(Pack(mine, Words(static_cast<int64_t>(mine.size())), device), 0));
    return out;
  }
  std::vector<at::Tensor> buffers(size);
  std::vector<parallel::P2POp> ops;
  for (int r = 1; r < size; ++r) {
    buffers[r] = at::zeros({Words(sizes_cpu[r].item<int64_t>())}, at::kLong).to(device);
    ops.push_back({parallel::P2POp::Kind::kRecv, buffers[r], r});
  }
  if (!ops.empty()) TS_RETURN_IF_ERROR(comm.SendRecv(std::move(ops)));
  out.push_back(mine);
  for (int r = 1; r < size; ++r) out.push_back(Unpack(buffers[r], sizes_cpu[r].item<int64_t>()));
  return out;
}

// The rank reports, parsed; an error when one does not parse or some rank failed (then the
// first failure's code and message, and how many more failed).
absl::StatusOr<std::vector<RankReport>> ParseReports(const std::vector<std::string>& reports, int64_t step,
                                                     const std::string& dir) {
  std::vector<RankReport> parsed;
  std::string first_error;
  absl::StatusCode first_code = absl::StatusCode::kDataLoss;
  int failed = 0;
  for (size_t r = 0; r < reports.size(); ++r) {
    TS_ASSIGN_OR_RETURN(RankReport p, ParseRankReport(reports[r], static_cast<int>(r)));
    if (!p.error.empty() && failed++ == 0) {
      first_error = absl::StrCat("rank ", r, ": ", p.error);
      if (p.error_code != 0) first_code = static_cast<absl::StatusCode>(p.error_code);
    }
    parsed.push_back(std::move(p));
  }
  if (failed > 0) {
    return absl::Status(
        first_code,
        absl::StrCat("checkpoint step ", step, " in '", dir, "' was not committed: ", first_error,
                     failed > 1 ? absl::StrCat(" (and ", failed - 1, " more ranks failed)") : ""));
  }
  return parsed;
}

// The manifest of `state` before the rank reports are merged into it.
Manifest NewManifest(const SaveState& state, int world_size) {
  Manifest m;
  m.step = state.step;
  m.consumed_samples = state.consumed_samples;
  m.data_position = state.data_position;
  m.config_yaml = state.config_yaml;
  m.layout = state.layout;
  m.layout.world_size = world_size;
  m.created_unix_time =
      state.created_unix_time != 0 ? state.created_unix_time : static_cast<int64_t>(std::time(nullptr));
  m.writer = absl::StrCat("tessera ", parallel::TesseraRevision());
  return m;
}

// Housekeeping after a commit: failures here cost disk space, not the checkpoint, so they are
// logged only.
void CleanUpAfterCommit(const std::string& step_dir, const Manifest& m, const std::string& dir, int keep,
                        int64_t step) {
  if (absl::Status s = RemoveUnreferencedFiles(step_dir, m); !s.ok()) {
    TS_LOG(WARNING) << "checkpoint cleanup: " << s.message();
  }
  auto removed = ApplyRetention(dir, keep, step);
  if (!removed.ok()) {
    TS_LOG(WARNING) << "checkpoint retention: " << removed.status().message();
  } else {
    for (const std::string& path : *removed) TS_LOG(INFO) << "removed old checkpoint " << path;
  }
}

}  // namespace

struct CheckpointWriter::Staged {
  SaveState state;           // tensors as contiguous host tensors (once snapshotted)
  absl::Status local_error;  // this rank's state was unusable: reported, nothing written
  std::string step_dir;
  // Per slice, its snapshot: kOwnMemory (written from the caller's tensor), kInSave (copied to a
  // host buffer before Save returns), kOnThread (copied by the background thread first).
  std::vector<char> copy;
};

CheckpointWriter::CheckpointWriter(WriterOptions options, parallel::Communicator& comm)
    : options_(std::move(options)), comm_(comm) {}

CheckpointWriter::~CheckpointWriter() {
  if (absl::Status s = Wait(); !s.ok())
    TS_LOG(ERROR) << "checkpoint save failed (reported at exit): " << s.message();
}

absl::Status CheckpointWriter::Wait() {
  if (!thread_.joinable()) return absl::OkStatus();
  thread_.join();
  absl::Status status = std::move(async_status_);
  async_status_ = absl::OkStatus();
  FinishStats(status.ok());
  return status;
}

double CheckpointWriter::WaitForSnapshot() {
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  if (!snapshot_pending_) return 0;
  snapshot_cv_.wait(lock, [this] { return !snapshot_pending_; });
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  snapshot_wait_s_ += waited;
  return waited;
}

void CheckpointWriter::FinishStats(bool ok) {
  SaveStats& st = last_stats_;
  st.bytes = save_bytes_;
  st.seconds = std::chrono::duration<double>(save_end_ - save_start_).count();
  // The caller of a synchronous save waits for all of it; of an async one, for Save and for
  // the snapshot.
  st.stall_seconds = options_.async ? st.stall_seconds + snapshot_wait_s_ : st.seconds;
  if (ok && comm_.rank() == 0) {
    TS_LOG(INFO) << absl::StrFormat(
        "checkpoint: saved %.3f GB in %.3f s (stall %.3f s): step %d committed to %s%s", st.bytes / 1e9,
        st.seconds, st.stall_seconds, st.step, last_committed_, options_.async ? " in the background" : "");
  }
}

absl::Status CheckpointWriter::Snapshot(Staged& staged, bool on_thread) {
  std::vector<TensorSlice>& tensors = staged.state.tensors;
  if (buffers_.size() < tensors.size()) buffers_.resize(tensors.size());
  try {
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (staged.copy[i] != (on_thread ? kOnThread : kInSave)) continue;
      const at::Tensor& src = tensors[i].data;
      at::Tensor& buffer = buffers_[i];
      const bool pinned = src.is_cuda();
      if (!buffer.defined() || buffer.numel() != src.numel() || buffer.scalar_type() != src.scalar_type() ||
          buffer.is_pinned() != pinned) {
        buffer = at::empty({src.numel()}, at::TensorOptions().dtype(src.scalar_type()).pinned_memory(pinned));
      }
      at::Tensor view = buffer.view(src.sizes());
      view.copy_(src);
      tensors[i].data = view;
    }
  } catch (const c10::Error& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("copying checkpoint tensors to host memory failed: ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

absl::Status CheckpointWriter::Save(SaveState state) {
  if (absl::Status previous = Wait(); !previous.ok()) {
    return Annotate(previous, absl::StrCat("the previous checkpoint save (step ", async_step_,
                                           ") failed; step ", state.step, " was not started: "));
  }
  save_start_ =
      std::chrono::steady_clock::now() - std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                             std::chrono::duration<double>(state.prepare_seconds));
  save_bytes_ = 0;
  snapshot_wait_s_ = 0;
  last_stats_ = SaveStats{.step = state.step};
  auto staged = std::make_shared<Staged>();
  staged->step_dir = StepDirPath(options_.dir, state.step);
  for (const TensorSlice& slice : state.tensors) {
    if (absl::Status s = CheckSlice(slice); !s.ok() && staged->local_error.ok()) staged->local_error = s;
    // Async: CPU tensors are copied too (the data may alias a live parameter through a view).
    // Sync: only device tensors (into the reused, pinned buffers).
    const bool cpu = slice.data.is_cpu();
    staged->copy.push_back(!options_.async                   ? (cpu ? kOwnMemory : kInSave)
                           : options_.defer_host_copy && cpu ? kOnThread
                                                             : kInSave);
  }
  staged->state = std::move(state);
  // The host copy: the only part of an async save the caller waits for. A sync save writes CPU
  // tensors from their own memory (contiguous() copies only a strided view).
  if (staged->local_error.ok()) {
    staged->local_error = Snapshot(*staged, /*on_thread=*/false);
    for (TensorSlice& slice : staged->state.tensors) slice.data = slice.data.contiguous();
  }
  if (!options_.async) {
    absl::Status result = Run(*staged);
    FinishStats(result.ok());
    return result;
  }
  async_step_ = staged->state.step;
  {
    std::lock_guard<std::mutex> lock(mu_);
    snapshot_pending_ = true;
  }
  thread_ = std::thread([this, staged] {
    if (staged->local_error.ok()) staged->local_error = Snapshot(*staged, /*on_thread=*/true);
    {
      std::lock_guard<std::mutex> lock(mu_);
      snapshot_pending_ = false;
    }
    snapshot_cv_.notify_all();
    async_status_ = Run(*staged);
  });
  last_stats_.stall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - save_start_).count();
  return absl::OkStatus();
}

absl::Status CheckpointWriter::WriteLocal(const Staged& staged, RankReport& report) {
  TS_RETURN_IF_ERROR(MakeDirs(staged.step_dir));
  const std::string name = ShardFileName(comm_.rank());
  TS_ASSIGN_OR_RETURN(auto file,
                      ShardFileWriter::Create(absl::StrCat(staged.step_dir, "/", name), comm_.rank(),
                                              ShardWriteOptions{.direct_io = options_.direct_io}));
  size_t index = 0;
  for (const TensorSlice& slice : staged.state.tensors) {
    TS_ASSIGN_OR_RETURN(ShardFileWriter::Record record,
                        file->Append(slice.data.data_ptr(), slice.data.nbytes()));
    TS_ASSIGN_OR_RETURN(DType dtype, DTypeOf(slice.data.scalar_type()));
    ShardRecord shard{name, record.offset, record.length, slice.region, record.crc32c, comm_.rank()};
    report.tensors.push_back(TensorEntry{slice.name, dtype, slice.global_shape, {std::move(shard)}});
    Hook(absl::StrCat("record:", index++));
  }
  for (const Blob& blob : staged.state.blobs) {
    TS_ASSIGN_OR_RETURN(ShardFileWriter::Record record, file->Append(blob.bytes.data(), blob.bytes.size()));
    report.blobs.push_back(
        BlobEntry{blob.name, name, record.offset, record.length, record.crc32c, comm_.rank()});
    Hook(absl::StrCat("record:", index++));
  }
  TS_ASSIGN_OR_RETURN(const uint64_t length, file->Commit());
  report.file = ShardFileEntry{name, length, comm_.rank()};
  Hook("shard_committed");
  return absl::OkStatus();
}

// Rank 0: merges the reports into the manifest and writes it, which commits the checkpoint.
absl::Status CheckpointWriter::Commit(const Staged& staged, const std::vector<std::string>& reports,
                                      const std::string& manifest_path, uint64_t* total_bytes) {
  const SaveState& state = staged.state;
  TS_ASSIGN_OR_RETURN(std::vector<RankReport> parsed, ParseReports(reports, state.step, options_.dir));
  Manifest m = NewManifest(state, comm_.size());
  absl::Status outcome = MergeRankReports(parsed, m, manifest_path);
  if (outcome.ok()) {
    outcome = WriteFileDurable(manifest_path, SerializeManifest(m), [&] { Hook("manifest_before_rename"); });
  }
  if (!outcome.ok())
    return Annotate(outcome, absl::StrCat("checkpoint step ", state.step, " was not committed: "));
  Hook("committed");
  for (const ShardFileEntry& f : m.files) *total_bytes += f.length;
  CleanUpAfterCommit(staged.step_dir, m, options_.dir, options_.keep, state.step);
  return absl::OkStatus();
}

absl::Status CheckpointWriter::Run(const Staged& staged) {
  const SaveState& state = staged.state;
  const at::Device device = CommDevice(comm_);
  const std::string manifest_path = absl::StrCat(staged.step_dir, "/", kManifestFileName);

  // 1. Never overwrite a committed checkpoint (rank 0 decides for the shared directory).
  at::Tensor exists =
      at::full({1}, comm_.rank() == 0 && PathExists(manifest_path) ? 1 : 0, at::kLong).to(device);
  TS_RETURN_IF_ERROR(comm_.Broadcast(exists, 0));
  if (exists.cpu().item<int64_t>() != 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("checkpoint '", staged.step_dir, "' is already committed; not overwriting it"));
  }

  // 2. This rank's shard file.
  RankReport report;
  report.rank = comm_.rank();
  report.step = state.step;
  absl::Status local = staged.local_error;
  if (local.ok()) local = WriteLocal(staged, report);
  if (!local.ok()) {
    // Nothing of a failed write is reported: only the error.
    report = RankReport();
    report.rank = comm_.rank();
    report.step = state.step;
    report.error = std::string(local.message());
    report.error_code = static_cast<int32_t>(local.code());
  }

  // 3. Reports to rank 0 (each arrives only after its rank's file is durable).
  TS_ASSIGN_OR_RETURN(std::vector<std::string> reports, GatherToRoot(comm_, SerializeRankReport(report)));

  // 4. Rank 0 commits, unless some rank failed.
  absl::Status outcome;
  uint64_t total_bytes = 0;
  if (comm_.rank() == 0) outcome = Commit(staged, reports, manifest_path, &total_bytes);

  // 5. Every rank returns rank 0's outcome.
  absl::Status result;
  TS_RETURN_IF_ERROR(BroadcastStatus(comm_, outcome, &result));
  save_end_ = std::chrono::steady_clock::now();
  save_bytes_ = comm_.rank() == 0 ? total_bytes : report.file.length;
  if (result.ok()) last_committed_ = staged.step_dir;
  return result;
}

}  // namespace tessera::checkpoint
