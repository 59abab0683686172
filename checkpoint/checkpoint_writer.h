// Saves checkpoints: every rank writes the slices of logical tensors it holds (and its blobs)
// into its own shard file, rank 0 gathers what each rank wrote and commits the step by writing
// manifest.pb last. The protocol (docs/checkpoints.md):
//
//   1. (collective) rank 0 checks that DIR/step-N has no committed manifest yet
//   2. every rank: DIR/step-N/shard-RRRRR.bin via a temporary file, fsync, rename, fsync(dir)
//   3. (collective) every rank reports its entries, or its error, to rank 0; receiving a
//      rank's report means that rank's file is durable
//   4. rank 0: if every rank succeeded, merges and validates the entries and writes manifest.pb
//      (temporary file, fsync, rename, fsync(dir)); then retention (keep the K newest)
//   5. (collective) rank 0 broadcasts the outcome: every rank returns the same Status
//
// A crash or error anywhere before the manifest's rename leaves a step directory without a
// manifest, which is not a checkpoint, and never touches an older one.
//
// Usage, on every rank of `comm`, in the same order (Save and Wait are collective):
//
//   CheckpointWriter writer({.dir = "runs/x/checkpoints", .keep = 3, .async = true}, ckpt_comm);
//   SaveState state{.step = step, .consumed_samples = n, .config_yaml = ConfigToYaml(config)};
//   for (auto& [name, param] : model->named_parameters())
//     state.tensors.push_back(ShardSpecSlice(name, global_shape, spec, param));
//   state.blobs.push_back({absl::StrCat("rng/rank-", rank), rng_bytes});
//   TS_RETURN_IF_ERROR(writer.Save(std::move(state)));   // async: returns after the host copy
//   ...
//   TS_RETURN_IF_ERROR(writer.Wait());                      // before exiting
//
// Async mode takes a snapshot of the tensors in host memory (the only stall), then a background
// thread writes and commits; the next Save (or Wait) first waits for it, and reports its error.
// The snapshot goes into host buffers the writer keeps and reuses from save to save (pinned for
// CUDA tensors). Device tensors are copied in Save. CPU tensors are copied in Save too, unless
// `defer_host_copy`: then the background thread copies them first, and the caller, instead of
// waiting in Save, calls WaitForSnapshot() before it next changes any saved tensor (the trainer:
// before the optimizer's update, so the copy runs beside the next forward and backward).
// Every save's outcome is logged on rank 0 as "checkpoint: saved N GB in S s (stall T s)", T
// being the time the caller spent waiting for it (all of S for a synchronous save).
// The background thread uses `comm`: in async mode pass a communicator that nothing else uses
// meanwhile, e.g. grid.world().Split(0, rank, "checkpoint"). The collectives of steps 3 and 5
// wait for the slowest rank's writes, which must fit in the communicator's timeout.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "checkpoint/manifest.h"
#include "checkpoint/tensor_slices.h"
#include "parallel/comm/communicator.h"

namespace tessera::checkpoint {

struct Blob {
  std::string name;  // unique across ranks, e.g. "rng/rank-00003"
  std::string bytes;
};

// What one rank saves. The global fields must be the same on every rank (rank 0's are kept;
// the step is checked).
struct SaveState {
  int64_t step = 0;
  int64_t consumed_samples = 0;
  std::string data_position;
  std::string config_yaml;
  Layout layout;
  int64_t created_unix_time = 0;     // 0: the time of the commit
  std::vector<TensorSlice> tensors;  // this rank's slices
  std::vector<Blob> blobs;           // this rank's blobs
  double prepare_seconds = 0;        // the caller's time building this state (counted as stall)
};

// What the last save cost (rank 0 knows the bytes of all ranks; others count their own file).
struct SaveStats {
  int64_t step = -1;
  uint64_t bytes = 0;
  double seconds = 0;        // from the start of preparing the state to the commit
  double stall_seconds = 0;  // of those, the caller's wait
};

struct WriterOptions {
  std::string dir;     // the checkpoint directory (shared by all ranks); step-N directories go here
  int keep = 0;        // committed checkpoints to keep (the newest); 0 keeps all
  bool async = false;  // write in a background thread after copying tensors to host memory
  // Async: CPU tensors are copied on the background thread; the caller must call
  // WaitForSnapshot() before changing any saved tensor.
  bool defer_host_copy = false;
  // Shard files written with O_DIRECT from aligned buffers where the file system accepts it
  // (ShardWriteOptions::direct_io); the files are the same.
  bool direct_io = true;
  // Tests: called at named points of the protocol ("record:<i>" after the i-th record of the
  // shard file, "shard_committed", "manifest_before_rename", "committed") on the thread that
  // writes; crash-safety tests end the process there.
  std::function<void(const std::string& point)> fault_hook = nullptr;
};

class CheckpointWriter {
 public:
  CheckpointWriter(WriterOptions options, parallel::Communicator& comm);
  // Waits for a save in flight; logs its error, if any, since nobody can receive it.
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Collective over the communicator. Waits for the previous save; if that failed, returns its
  // error (saying so) and does not start this one. Then validates `state` (an error on any rank
  // fails the save on all), and writes and commits it: at once (sync), or in the background
  // (async) after copying the tensors to host memory, in which case the result comes from the
  // next Save or Wait. A failure leaves no manifest for this step and never touches older
  // checkpoints.
  absl::Status Save(SaveState state);
  // Waits for the background save, if any, and returns its result (OK when none). Every rank
  // gets the same result (the save's last step broadcasts it). Local: the collectives are the
  // background save's own.
  absl::Status Wait();
  // Async with defer_host_copy: waits until the save in flight has copied the tensors it was
  // given, after which the caller may change them. Returns the seconds waited (0 when none is in
  // flight), which count as the save's stall.
  double WaitForSnapshot();
  // The cost of the last save whose outcome was returned (by Save, Wait or the next Save).
  const SaveStats& last_stats() const { return last_stats_; }
  // Step directory of the last committed save ("" if none yet).
  const std::string& last_committed() const { return last_committed_; }

 private:
  struct Staged;
  // Copies the slices whose snapshot is taken in Save (or, `on_thread`, by the background thread)
  // into the reused host buffers of their index, and points the slices at them.
  absl::Status Snapshot(Staged& staged, bool on_thread);
  // Completes last_stats_ and logs it (rank 0) when the save succeeded.
  void FinishStats(bool ok);
  absl::Status Run(const Staged& staged);
  absl::Status WriteLocal(const Staged& staged, RankReport& report);
  absl::Status Commit(const Staged& staged, const std::vector<std::string>& reports,
                      const std::string& manifest_path, uint64_t* total_bytes);
  void Hook(const std::string& point) const {
    if (options_.fault_hook) options_.fault_hook(point);
  }

  WriterOptions options_;
  parallel::Communicator& comm_;
  std::thread thread_;
  std::vector<at::Tensor> buffers_;  // snapshot buffers, by slice index, reused across saves
  std::mutex mu_;
  std::condition_variable snapshot_cv_;
  bool snapshot_pending_ = false;  // guarded by mu_
  double snapshot_wait_s_ = 0;     // WaitForSnapshot's time for the save in flight
  std::chrono::steady_clock::time_point save_start_, save_end_;
  uint64_t save_bytes_ = 0;  // written by Run (rank 0: every file)
  SaveStats last_stats_;
  absl::Status async_status_;
  int64_t async_step_ = -1;
  std::string last_committed_;
};

}  // namespace tessera::checkpoint
