// `tessera train`: one process, or one rank of a job started by mpirun / srun / torchrun.
// Errors every rank sees alike (config, layout, data) end each rank with the same message and
// exit code; an error of one rank alone goes through ProcessGrid::Abort, which ends the others.
#include <exception>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/config_args.h"
#include "core/exit_codes.h"
#include "core/logging.h"
#include "parallel/comm/launch.h"
#include "parallel/process_grid.h"
#include "trainer/grid_options.h"
#include "trainer/trainer.h"

namespace tessera::cli {
namespace {

constexpr char kName[] = "train";

// Trainer::Run, with an exception that escapes it as an error status, so that it takes the
// path of every other failure of one rank (ProcessGrid::Abort ends the peers).
absl::Status RunTrainer(Trainer& trainer) {
  try {
    return trainer.Run();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("unexpected exception: ", e.what()));
  }
}

// A failure of a rank of a job: printed by rank 0 alone when every rank reached it alike
// (OnEveryRank); the other ranks keep it in their log files.
int ReportOnRank(const parallel::ProcessGrid& grid, const absl::Status& status, int code) {
  if (!IsOnEveryRank(status) || grid.rank() == 0) return ReportError(kName, status, code);
  TS_LOG(INFO) << "error (every rank; rank 0 reports it): " << status.message();
  return code;
}

int Train(const Args& args) {
  auto config = LoadConfigFromArgs(args);
  if (!config.ok()) return ReportError(kName, config.status(), kExitUsage);
  auto launch = parallel::LaunchInfoFromEnvironment();
  if (!launch.ok()) return ReportError(kName, launch.status(), kExitUsage);
  const std::string device = ResolvedDeviceKind(config->train.device);
  parallel::GridOptions grid_options = GridOptionsFromConfig(*config, device);
  // SIGTERM / SIGUSR1 (Slurm's --signal, a scheduler's preemption): the trainer saves a
  // checkpoint at the next step boundary and exits with kExitPreempted; a second signal, or a
  // collective still stuck 10 s after it, ends the process at once.
  grid_options.exit_on_signal = false;
  auto grid = parallel::ProcessGrid::Create(*launch, grid_options);
  if (!grid.ok()) {
    return ReportError(
        kName, grid.status(),
        grid.status().code() == absl::StatusCode::kInvalidArgument ? kExitUsage : kExitRuntimeError);
  }
  if (absl::Status s = parallel::ConfigureRankLogging(**grid, config->train.run_dir); !s.ok()) {
    return ReportError(kName, s, kExitRuntimeError);
  }
  if ((*grid)->rank() == 0) TS_LOG(INFO) << (*grid)->Summary();
  auto trainer = Trainer::Create(*config, **grid);
  if (absl::Status s = AllRanksOk(**grid, trainer.status()); !s.ok()) {
    return ReportOnRank(**grid, s, InputOrRuntimeExitCode(s));
  }
  absl::Status status = RunTrainer(**trainer);
  if (!status.ok()) {
    const int code = ExitCodeOf(status, kExitRuntimeError);
    // A failed collective or a bad batch may be this rank's alone: make sure no peer waits.
    // Divergence and preemption are decided alike on every rank (from all-reduced figures):
    // each exits itself, and rank 0 alone says why.
    if ((*grid)->world_size() > 1 && !IsOnEveryRank(status)) (*grid)->Abort(status);
    return ReportOnRank(**grid, status, code);
  }
  TS_LOG(INFO) << "done: " << config->train.steps << " steps; metrics in " << config->train.run_dir
               << "/metrics.jsonl";
  return kExitOk;
}

}  // namespace

Command TrainCommand() {
  return {.name = kName,
          .usage = "train [CONFIG.yaml] [--set key=value]...",
          .summary = "train a model (defaults when no config)",
          .args = ConfigArgSpec(),
          .run = Train};
}

}  // namespace tessera::cli
