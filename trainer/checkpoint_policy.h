// The loop's checkpoint policy: where checkpoints go and when they are saved (checkpoint.every,
// at the end, on a signal), which one a run resumes from (checkpoint.resume), and the rollback
// of train.on_divergence. The files themselves are checkpoint/'s; what a checkpoint holds of the
// training state is training_state.h's.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_writer.h"
#include "config/config.h"
#include "data/loader.h"
#include "data/sample_stream.h"
#include "parallel/data_parallel/grad_reducer.h"
#include "parallel/process_grid.h"
#include "trainer/divergence_guard.h"
#include "trainer/flat_adamw.h"
#include "trainer/training_state.h"

namespace tessera {

// The trainer's parts a checkpoint saves and restores (not owned; they outlive the policy).
struct CheckpointedParts {
  const RankParameters* params = nullptr;
  parallel::GradReducer* reducer = nullptr;
  FlatAdamW* optimizer = nullptr;
  DivergenceGuard* guard = nullptr;
  const data::Loader* loader = nullptr;  // set by set_loader once the loader exists
  int64_t virtual_stages = 1;
};

// Where a run starts: steps already done and global samples already consumed.
struct ResumePoint {
  int64_t step = 0;
  int64_t sample = 0;
};

// Where checkpoint.async's background writer exchanges its reports, or why it cannot run: its
// collectives run on another thread beside training's. Under MPI that needs
// MPI_THREAD_MULTIPLE; under NCCL they go over MPI instead (host memory, never a second NCCL
// stream whose kernels could queue in different orders on different ranks and deadlock), which
// needs an MPI with MPI_THREAD_MULTIPLE too. One process, or synchronous saves: the world's own.
enum class CheckpointChannel { kWorldSplit, kMpi };
absl::StatusOr<CheckpointChannel> AsyncCheckpointChannel(bool async, int world_size,
                                                         parallel::Backend backend, bool mpi_initialized,
                                                         bool mpi_thread_multiple);

class CheckpointPolicy {
 public:
  // The writer over its own communicator (split off the world: asynchronous saves must not
  // interleave with training's collectives). Collective.
  static absl::StatusOr<std::unique_ptr<CheckpointPolicy>> Create(const Config& config,
                                                                  parallel::ProcessGrid& grid,
                                                                  torch::Device device,
                                                                  CheckpointedParts parts);

  // checkpoint.resume: auto (rank 0 verifies, checksums included, and chooses the newest valid
  // checkpoint; every rank opens that step), never, or a path (any layout). Loads this rank's
  // slices and the loop's counters. Under auto with no checkpoint in checkpoint.dir,
  // checkpoint.init_from's weights alone (the run then starts at step 0). Collective.
  absl::StatusOr<ResumePoint> Resume(const data::SampleStream& train_stream);
  void set_loader(const data::Loader* loader) { parts_.loader = loader; }

  // Saves after `steps_done` steps when checkpoint.every says so, or at the end (`last`) under
  // checkpoint.at_end; the last save is waited for. Collective.
  absl::Status MaybeSave(int64_t steps_done, bool last);
  // Whether MaybeSave saves after `steps_done` steps.
  bool SavesAfter(int64_t steps_done, bool last) const;
  // Preemption: every rank learns of a signal any rank got (Slurm signals them all, but not at
  // the same instant), so all save the same step and leave together with kExitPreempted.
  // SignalFlag is the all-reduced signal number (0: none), a {1} fp64 tensor left on the device
  // (collective); the loop reads it with the step's figures and passes it to StopOnSignal, which
  // saves and stops (collective) unless it is 0.
  absl::StatusOr<torch::Tensor> SignalFlag();
  absl::Status StopOnSignal(int64_t steps_done, int signal);
  // train.on_divergence = rollback: reloads the newest checkpoint, keeps the data position (the
  // batches since the checkpoint are skipped) and returns the checkpoint's step. Collective.
  absl::StatusOr<int64_t> RollBack(int64_t failed_step);
  // Before the optimizer changes the weights and moments: waits until an asynchronous save in
  // flight has its copy of them (the copy runs beside the step's forward and backward).
  void BeforeUpdate() { writer_->WaitForSnapshot(); }
  // Waits for an asynchronous save in flight.
  absl::Status Finish() { return writer_->Wait(); }

 private:
  CheckpointPolicy(const Config& config, parallel::ProcessGrid& grid, torch::Device device,
                   CheckpointedParts parts);
  // Saves the state after `steps_done` steps (collective); waits for it when `wait`.
  absl::Status Save(int64_t steps_done, bool wait);
  // Loads this rank's slices and the optimizer's step count from `reader`; the loop's counters.
  absl::StatusOr<LoopState> Load(const checkpoint::CheckpointReader& reader, bool* had_optimizer);
  // The step directory a run starts from ("" to start fresh), and whether only its weights are
  // taken (checkpoint.init_from).
  struct StartingPoint {
    std::string step_dir;
    bool weights_only = false;
  };
  absl::StatusOr<StartingPoint> ChooseResume();
  // Loads checkpoint.init_from's weights into a run that starts at step 0.
  absl::Status InitFrom(const std::string& step_dir);
  // Rank 0 keeps the starting checkpoint's Hugging Face config and tokenizer blobs (an import's)
  // to write into every checkpoint of this run, so that export-hf of a continued model still
  // has the original token ids, context length and tokenizer.
  absl::Status KeepProvenance(const checkpoint::CheckpointReader& reader);
  // Rank 0's newest valid checkpoint's step (-1: none), broadcast. Collective.
  absl::StatusOr<int64_t> AgreeOnLatest(bool report_skipped);
  torch::TensorOptions ScalarOptions() const {
    return torch::TensorOptions().dtype(torch::kDouble).device(device_);
  }

  Config config_;
  parallel::ProcessGrid& grid_;
  torch::Device device_;
  CheckpointedParts parts_;
  std::string dir_;
  std::unique_ptr<parallel::Communicator> comm_;  // the writer's own (async saves)
  std::unique_ptr<checkpoint::CheckpointWriter> writer_;
  std::vector<checkpoint::Blob> provenance_;  // rank 0: hf/ and tokenizer/ blobs carried along
};

}  // namespace tessera
