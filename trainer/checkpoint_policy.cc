// The checkpoint policy (checkpoint_policy.h).
#include "trainer/checkpoint_policy.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoint/checkpoint_dir.h"
#include "core/exit_codes.h"
#include "core/file_util.h"
#include "core/host_sync.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "parallel/comm/mpi_comm.h"

namespace tessera {

CheckpointPolicy::CheckpointPolicy(const Config& config, parallel::ProcessGrid& grid, torch::Device device,
                                   CheckpointedParts parts)
    : config_(config),
      grid_(grid),
      device_(device),
      parts_(parts),
      dir_(config.checkpoint.dir.empty() ? config.train.run_dir + "/checkpoints" : config.checkpoint.dir) {}

absl::StatusOr<CheckpointChannel> AsyncCheckpointChannel(bool async, int world_size,
                                                         parallel::Backend backend, bool mpi_initialized,
                                                         bool mpi_thread_multiple) {
  if (!async || world_size == 1 || backend == parallel::Backend::kLocal)
    return CheckpointChannel::kWorldSplit;
  const char* fix = "set checkpoint.async: false (saves then pause training while they write)";
  if (backend == parallel::Backend::kMpi) {
    if (mpi_thread_multiple) return CheckpointChannel::kWorldSplit;
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint.async = true runs the save's collectives on a background thread beside training's, "
        "which MPI allows only at MPI_THREAD_MULTIPLE, and this MPI granted less: ",
        fix, ", or use an MPI built with thread support"));
  }
  if (mpi_initialized && mpi_thread_multiple) return CheckpointChannel::kMpi;
  return absl::FailedPreconditionError(absl::StrCat(
      "checkpoint.async = true on NCCL exchanges the save's reports over MPI from a background thread (a "
      "second NCCL communicator's kernels could queue in different orders on different ranks and deadlock), "
      "and this job has ",
      mpi_initialized ? "an MPI without MPI_THREAD_MULTIPLE"
                      : "no MPI (it was not started by mpirun or srun --mpi)",
      ": ", fix, ", or launch it with mpirun / srun --mpi=pmix"));
}

absl::StatusOr<std::unique_ptr<CheckpointPolicy>> CheckpointPolicy::Create(const Config& config,
                                                                           parallel::ProcessGrid& grid,
                                                                           torch::Device device,
                                                                           CheckpointedParts parts) {
  std::unique_ptr<CheckpointPolicy> policy(new CheckpointPolicy(config, grid, device, parts));
  const parallel::MpiRuntime* mpi = grid.runtime().mpi();
  TS_ASSIGN_OR_RETURN(const CheckpointChannel channel,
                      AsyncCheckpointChannel(config.checkpoint.async, grid.world_size(), grid.backend(),
                                             mpi != nullptr, mpi != nullptr && mpi->thread_multiple()));
  if (channel == CheckpointChannel::kMpi) {
    TS_ASSIGN_OR_RETURN(std::unique_ptr<parallel::Communicator> mpi_world,
                        parallel::CreateMpiWorldCommunicator(&grid.runtime().watchdog(), {}));
    TS_ASSIGN_OR_RETURN(policy->comm_, mpi_world->Split(0, grid.rank(), "checkpoint"));
  } else {
    TS_ASSIGN_OR_RETURN(policy->comm_, grid.world().Split(0, grid.rank(), "checkpoint"));
  }
  checkpoint::WriterOptions options;
  options.dir = policy->dir_;
  options.keep = static_cast<int>(config.checkpoint.keep);
  options.async = config.checkpoint.async;
  options.direct_io = config.checkpoint.direct_io;
  // The loop calls BeforeUpdate before every optimizer update: the host copy of CPU tensors can
  // then run on the writer's thread (device tensors are copied before Save returns).
  options.defer_host_copy = true;
  policy->writer_ = std::make_unique<checkpoint::CheckpointWriter>(options, *policy->comm_);
  return policy;
}

absl::StatusOr<int64_t> CheckpointPolicy::AgreeOnLatest(bool report_skipped) {
  torch::Tensor chosen = torch::full({1}, -1.0, ScalarOptions());
  if (grid_.rank() == 0 && PathExists(dir_)) {
    auto found = checkpoint::FindLatestValid(dir_);
    if (found.ok()) {
      chosen.fill_(static_cast<double>(found->step));
      if (report_skipped) {
        for (const auto& skipped : found->skipped) {
          TS_LOG(WARNING) << "checkpoint " << skipped.path << " skipped: " << skipped.reason.message();
        }
      }
    } else if (report_skipped && found.status().code() != absl::StatusCode::kNotFound) {
      TS_LOG(WARNING) << "no checkpoint resumed from " << dir_ << ": " << found.status().message();
    }
  }
  TS_RETURN_IF_ERROR(grid_.world().Broadcast(chosen, 0));
  return static_cast<int64_t>(HostRead<double>(chosen));
}

absl::StatusOr<CheckpointPolicy::StartingPoint> CheckpointPolicy::ChooseResume() {
  const std::string& resume = config_.checkpoint.resume;
  if (resume == "auto" || resume == "never") {
    if (resume == "auto") {
      TS_ASSIGN_OR_RETURN(const int64_t step, AgreeOnLatest(/*report_skipped=*/true));
      if (step >= 0) return StartingPoint{checkpoint::StepDirPath(dir_, step)};
    }
    const std::string& init_from = config_.checkpoint.init_from;
    if (init_from.empty()) return StartingPoint{};
    auto found = checkpoint::ResolveCheckpoint(init_from, checkpoint::Verify::kStructure);
    if (!found.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint.init_from = '", init_from, "': ", found.status().message()));
    }
    return StartingPoint{found->path, /*weights_only=*/true};
  }
  auto found = checkpoint::ResolveCheckpoint(resume, checkpoint::Verify::kStructure);
  if (!found.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint.resume = '", resume, "': ", found.status().message()));
  }
  return StartingPoint{found->path};
}

absl::Status CheckpointPolicy::InitFrom(const std::string& step_dir) {
  const auto load_start = std::chrono::steady_clock::now();
  TS_ASSIGN_OR_RETURN(auto reader, checkpoint::CheckpointReader::Open(step_dir));
  TS_RETURN_IF_ERROR(CheckCheckpointModel(reader->manifest(), config_.model, step_dir));
  bool had_optimizer = false;
  TS_RETURN_IF_ERROR(RestoreState(*reader, *parts_.params, *parts_.reducer, *parts_.optimizer, &had_optimizer,
                                  /*weights_only=*/true));
  TS_RETURN_IF_ERROR(KeepProvenance(*reader));
  TS_RETURN_IF_ERROR(grid_.world().Barrier());
  if (grid_.rank() == 0) {
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
    TS_LOG(INFO) << "checkpoint.init_from: weights from " << step_dir << " (saved at step "
                 << reader->manifest().step << "); the run starts at step 1 with AdamW fresh"
                 << absl::StrFormat(" (loaded in %.3f s)", load_s);
  }
  return absl::OkStatus();
}

absl::Status CheckpointPolicy::KeepProvenance(const checkpoint::CheckpointReader& reader) {
  if (grid_.rank() != 0) return absl::OkStatus();
  provenance_.clear();
  for (const checkpoint::BlobEntry& b : reader.manifest().blobs) {
    if (!absl::StartsWith(b.name, "hf/") && !absl::StartsWith(b.name, "tokenizer/")) continue;
    TS_ASSIGN_OR_RETURN(std::string bytes, reader.ReadBlob(b.name));
    provenance_.push_back({b.name, std::move(bytes)});
  }
  return absl::OkStatus();
}

absl::StatusOr<ResumePoint> CheckpointPolicy::Resume(const data::SampleStream& train_stream) {
  TS_ASSIGN_OR_RETURN(const StartingPoint start, ChooseResume());
  if (start.step_dir.empty()) return ResumePoint{};
  if (start.weights_only) {
    TS_RETURN_IF_ERROR(InitFrom(start.step_dir));
    return ResumePoint{};
  }
  const std::string& step_dir = start.step_dir;
  const auto load_start = std::chrono::steady_clock::now();
  TS_ASSIGN_OR_RETURN(auto reader, checkpoint::CheckpointReader::Open(step_dir));
  const checkpoint::Manifest& manifest = reader->manifest();
  bool had_optimizer = false;
  TS_ASSIGN_OR_RETURN(const LoopState loop, Load(*reader, &had_optimizer));
  parts_.guard->RestoreFrom(loop);
  TS_RETURN_IF_ERROR(KeepProvenance(*reader));
  TS_RETURN_IF_ERROR(grid_.world().Barrier());
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  const ResumePoint point{loop.step, manifest.consumed_samples};
  if (!manifest.data_position.empty()) {
    auto position = data::DataPosition::Parse(manifest.data_position);
    if (position.ok()) {
      if (absl::Status same = position->CheckStream(train_stream); !same.ok() && grid_.rank() == 0) {
        TS_LOG(WARNING) << "resuming at sample " << point.sample
                        << " of a changed data definition: " << same.message();
      }
    }
  }
  const checkpoint::Layout& l = manifest.layout;
  if (grid_.rank() == 0) {
    TS_LOG(INFO) << "resumed from " << step_dir << " (saved at step " << manifest.step << " with tp " << l.tp
                 << " x pp " << l.pp << " x dp " << l.dp << ", zero " << l.zero << ", " << l.virtual_stages
                 << " virtual stage(s)): continuing at step " << point.step + 1 << ", sample " << point.sample
                 << (had_optimizer ? "" : "; no optimizer state in it, AdamW starts fresh")
                 << absl::StrFormat(" (loaded in %.3f s)", load_s);
  }
  return point;
}

absl::StatusOr<LoopState> CheckpointPolicy::Load(const checkpoint::CheckpointReader& reader,
                                                 bool* had_optimizer) {
  const checkpoint::Manifest& manifest = reader.manifest();
  TS_RETURN_IF_ERROR(CheckCheckpointModel(manifest, config_.model, reader.step_dir()));
  TS_RETURN_IF_ERROR(RestoreState(reader, *parts_.params, *parts_.reducer, *parts_.optimizer, had_optimizer));
  LoopState loop;
  loop.step = manifest.step;
  if (auto blob = reader.ReadBlob("loop_state"); blob.ok()) {
    TS_ASSIGN_OR_RETURN(loop, LoopState::Parse(*blob, reader.step_dir() + " loop_state"));
  }
  parts_.optimizer->set_step_count(*had_optimizer ? loop.adam_steps : 0);
  return loop;
}

absl::StatusOr<int64_t> CheckpointPolicy::RollBack(int64_t failed_step) {
  TS_RETURN_IF_ERROR(writer_->Wait());
  TS_ASSIGN_OR_RETURN(const int64_t step, AgreeOnLatest(/*report_skipped=*/false));
  if (step < 0) {
    return OnEveryRank(
        WithExitCode(absl::AbortedError(absl::StrCat("training diverged at step ", failed_step,
                                                     " and there is no checkpoint in ", dir_,
                                                     " to roll back to (set checkpoint.every)")),
                     kExitDiverged));
  }
  const std::string step_dir = checkpoint::StepDirPath(dir_, step);
  TS_ASSIGN_OR_RETURN(auto reader, checkpoint::CheckpointReader::Open(step_dir));
  bool had_optimizer = false;
  TS_ASSIGN_OR_RETURN(const LoopState loop, Load(*reader, &had_optimizer));
  parts_.guard->RestoreAfterRollback(loop);
  if (grid_.rank() == 0) {
    TS_LOG(WARNING) << "diverged at step " << failed_step << ": rolled back to " << step_dir << " (step "
                    << step << "); the global batches since then are skipped: training goes on at sample "
                    << parts_.loader->samples_consumed();
  }
  return step;
}

bool CheckpointPolicy::SavesAfter(int64_t steps_done, bool last) const {
  const int64_t every = config_.checkpoint.every;
  return (every > 0 && steps_done % every == 0) || (last && config_.checkpoint.at_end);
}

absl::Status CheckpointPolicy::MaybeSave(int64_t steps_done, bool last) {
  if (SavesAfter(steps_done, last)) return Save(steps_done, /*wait=*/last);
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> CheckpointPolicy::SignalFlag() {
  torch::Tensor signal =
      torch::full({1}, static_cast<double>(parallel::ProcessGrid::PendingSignal()), ScalarOptions());
  TS_RETURN_IF_ERROR(grid_.world().AllReduce(signal, parallel::ReduceOp::kMax));
  return signal;
}

absl::Status CheckpointPolicy::StopOnSignal(int64_t steps_done, int sig) {
  if (sig == 0) return absl::OkStatus();
  TS_RETURN_IF_ERROR(Save(steps_done, /*wait=*/true));
  return OnEveryRank(WithExitCode(absl::AbortedError(absl::StrCat("stopped by signal ", sig, " after step ",
                                                                  steps_done, "; checkpoint saved in ", dir_,
                                                                  ": run the same command again to resume")),
                                  kExitPreempted));
}

absl::Status CheckpointPolicy::Save(int64_t steps_done, bool wait) {
  const auto start = std::chrono::steady_clock::now();
  checkpoint::SaveState state;
  state.step = steps_done;
  state.consumed_samples = parts_.loader->samples_consumed();
  state.data_position = parts_.loader->position().Serialize();
  state.config_yaml = ConfigToYaml(config_);
  const parallel::ParallelDims dims = grid_.topology().dims();
  state.layout = {grid_.world_size(),
                  static_cast<int32_t>(dims.tp),
                  static_cast<int32_t>(dims.pp),
                  static_cast<int32_t>(dims.dp),
                  static_cast<int32_t>(config_.parallel.zero),
                  static_cast<int32_t>(parts_.virtual_stages)};
  TS_ASSIGN_OR_RETURN(state.tensors,
                      CollectStateSlices(*parts_.params, *parts_.reducer, *parts_.optimizer, grid_));
  if (grid_.rank() == 0) {
    LoopState loop;
    loop.step = steps_done;
    parts_.guard->SaveTo(&loop);
    loop.adam_steps = parts_.optimizer->step_count();
    state.blobs.push_back({"loop_state", loop.Serialize()});
    state.blobs.insert(state.blobs.end(), provenance_.begin(), provenance_.end());
  }
  // The writer logs each save with its stall, this preparation included.
  state.prepare_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  TS_RETURN_IF_ERROR(writer_->Save(std::move(state)));
  if (wait) TS_RETURN_IF_ERROR(writer_->Wait());
  return absl::OkStatus();
}

}  // namespace tessera
