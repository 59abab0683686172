// The process grid: world = tp x cp x pp x dp ranks laid out by an order string (default
// tp-cp-dp-pp, TP innermost so that a TP group shares a node), this rank's coordinates, and one
// communicator per group, created once at start-up: world, tp, pp, dp, model (the tp x pp ranks
// of one replica) and embedding (the first and last pipeline stage, which share tied
// embeddings); with context parallelism also cp (the ranks sharing each sequence) and dp x cp
// (the ranks holding the same parameters, over which gradients are reduced).
//
// The trainer's use:
//
//   TS_ASSIGN_OR_RETURN(parallel::LaunchInfo launch, parallel::LaunchInfoFromEnvironment());
//   TS_ASSIGN_OR_RETURN(auto grid, parallel::ProcessGrid::Create(launch, GridOptionsFrom(config)));
//   TS_RETURN_IF_ERROR(parallel::ConfigureRankLogging(*grid, config.train.run_dir));
//   if (grid->rank() == 0) TS_LOG(INFO) << grid->Summary();
//   ... grid->dp().AllReduceAsync(bucket, parallel::ReduceOp::kAvg) ...
//   after the first step: grid->EndStartup();
//   on a fatal error of this rank alone: grid->Abort(status);
//
// A process started without a launcher is a world of one with the local backend: no MPI_Init,
// and every communicator is the identity. Under mpirun MPI is initialized (also for -np 1).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "parallel/comm/communicator.h"
#include "parallel/comm/launch.h"
#include "parallel/comm/runtime.h"
#include "parallel/topology.h"

namespace tessera::parallel {

struct GridOptions {
  ParallelDims dims;  // dp <= 0: auto, world / (tp x cp x pp)
  std::string order = "tp-cp-dp-pp";
  // "auto": nccl for device "cuda" (local for a single process when the build has no NCCL),
  // else mpi when an MPI launcher started the processes or the world has several ranks, else
  // local. Or "local", "mpi", "nccl".
  std::string backend = "auto";
  // Where the tensors live: "cpu" or "cuda" (the trainer's resolved train.device).
  std::string device = "cpu";
  // CUDA device of this rank; -1: the local rank (or 0 where each rank sees one GPU).
  int device_index = -1;
  // How NCCL's unique id reaches the ranks: "auto" (MPI when MPI runs, else TCP when
  // MASTER_ADDR is set), "mpi", "tcp" (MASTER_ADDR:MASTER_PORT) or "file:/shared/path".
  std::string rendezvous = "auto";
  double startup_timeout_s = 900;
  double comm_timeout_s = 300;
  bool install_signal_handlers = true;
  // SIGTERM/SIGINT end the process at once (reporting a collective in flight). Turn off when the
  // trainer saves on SIGTERM itself (under Slurm); a collective still stuck 10 s after the
  // signal is then reported and ends the process.
  bool exit_on_signal = true;
  // MPI: elements per call, 0 for MPI's limit (tests make it small to run the chunked path).
  int64_t max_count = 0;
  // Tests: called instead of exiting on a fatal failure.
  std::function<void(int code, const std::string& report)> on_fatal;
};

class ProcessGrid {
 public:
  // Validates the layout against the launch (world = tp x cp x pp x dp, with the numbers and the
  // launcher variable in the message), starts the runtime (MPI if needed, the watchdog) and
  // creates every communicator. Collective: all ranks of the world call it.
  static absl::StatusOr<std::unique_ptr<ProcessGrid>> Create(const LaunchInfo& launch,
                                                             const GridOptions& options);
  // The same on an existing runtime (tests build several grids in one process). The runtime's
  // timeouts and signal policy apply; options' are ignored.
  static absl::StatusOr<std::unique_ptr<ProcessGrid>> Create(std::shared_ptr<Runtime> runtime,
                                                             const GridOptions& options);
  ~ProcessGrid();

  int rank() const { return runtime_->rank(); }
  int world_size() const { return runtime_->world_size(); }
  int local_rank() const { return runtime_->launch().local_rank; }
  const LaunchInfo& launch() const { return runtime_->launch(); }
  const Topology& topology() const { return topology_; }
  const Coordinates& coords() const { return coords_; }
  bool is_first_stage() const { return coords_.pp == 0; }
  bool is_last_stage() const { return coords_.pp == topology_.dims().pp - 1; }
  Backend backend() const { return backend_; }
  // The CUDA device of this rank (nccl), or -1.
  int device_index() const { return device_index_; }

  Communicator& world() { return *world_; }
  Communicator& tp() { return *tp_; }
  Communicator& pp() { return *pp_; }
  Communicator& dp() { return *dp_; }
  // The context-parallel group: the ranks holding the parts of the same sequences.
  Communicator& cp() { return *cp_; }
  // The dp x cp ranks that hold the same parameters (Topology::ReplicaGroupOf): the gradient
  // reduction and ZeRO's sharding run over it. The dp group itself when cp = 1.
  Communicator& dp_cp() { return dp_cp_ ? *dp_cp_ : *dp_; }
  // The tp x pp ranks of this rank's model replica (gradient norms over model shards).
  Communicator& model() { return *model_; }
  // The first and last pipeline stage of this rank's (tp, dp) column; null on middle stages.
  // With pp == 1 it is this rank alone.
  Communicator* embedding() { return embedding_.get(); }

  // Switches collectives issued from now on from parallel.startup_timeout_s to
  // parallel.comm_timeout_s. Call once the first training step completed.
  void EndStartup();
  // The signal received: SIGUSR1 (Slurm's --signal: save soon), SIGTERM or SIGINT; 0 if none.
  // The trainer checks it at step boundaries, agrees on it with one small all-reduce (kMax),
  // saves and exits. With GridOptions::exit_on_signal (the default) SIGTERM and SIGINT end the
  // process at once instead, after reporting the collective in flight.
  static int PendingSignal();
  // For an error only this rank has (the others would wait for it forever): reports it, tells
  // the other ranks to exit, and exits non-zero.
  [[noreturn]] void Abort(const absl::Status& status);

  // "[rank 3 tp1 pp0 dp1]" (with cp1 after tp1 when cp > 1; "" for a world of one): the prefix of every log
  // line.
  std::string LogPrefix() const;
  // Launch, versions and the effective layout with the rank table: what rank 0 prints at start.
  std::string Summary() const;
  Runtime& runtime() { return *runtime_; }

 private:
  ProcessGrid(std::shared_ptr<Runtime> runtime, Topology topology)
      : runtime_(std::move(runtime)), topology_(topology) {}

  std::shared_ptr<Runtime> runtime_;  // first member: destroyed last, after the communicators
  Topology topology_;
  Coordinates coords_;
  Backend backend_ = Backend::kLocal;
  int device_index_ = -1;
  std::unique_ptr<Communicator> world_, tp_, pp_, dp_, cp_, dp_cp_, model_, embedding_;
};

// "Tessera 3f2c1a9b0d4e, LibTorch 2.13.0, Open MPI v4.1.4, NCCL 2.21.5, CUDA runtime 12.4,
// driver 12.8" (what this build and machine have).
std::string VersionsLine();

// Sets the log prefix to grid.LogPrefix() and appends this rank's log lines to
// RUN_DIR/logs/rank-NNNNN.log; ranks other than 0 print only warnings and errors to stderr.
absl::Status ConfigureRankLogging(const ProcessGrid& grid, const std::string& run_dir);

}  // namespace tessera::parallel
