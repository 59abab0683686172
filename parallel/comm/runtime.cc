// Runtime (runtime.h): the order of start-up and shutdown. The watchdog starts before MPI, so
// that the start-up collectives (MPI's communicator duplication and splits) are guarded, and it
// stops after MPI_Finalize, so that a finalize waiting for a vanished peer is reported too.
#include "parallel/comm/runtime.h"

#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "parallel/comm/build_info.h"

namespace tessera::parallel {

const char* TesseraRevision() { return TESSERA_GIT_REVISION; }

Runtime::Runtime(const LaunchInfo& launch, RuntimeOptions options)
    : launch_(launch), options_(std::move(options)) {}

absl::StatusOr<std::shared_ptr<Runtime>> Runtime::Create(const LaunchInfo& launch, RuntimeOptions options) {
  std::shared_ptr<Runtime> runtime(new Runtime(launch, std::move(options)));
  const RuntimeOptions& o = runtime->options_;
  if (launch.world_size > 1) SetLogPrefix(absl::StrCat("[rank ", launch.rank, "]"));
  Watchdog::Options w;
  w.world_rank = launch.rank;
  w.world_size = launch.world_size;
  w.startup_timeout_s = o.startup_timeout_s;
  w.timeout_s = o.comm_timeout_s;
  w.exit_on_signal = o.exit_on_signal;
  w.on_fatal = o.on_fatal;
  runtime->watchdog_ = std::make_unique<Watchdog>(w);
  if (o.install_signal_handlers) runtime->watchdog_->InstallSignalHandlers();
  runtime->watchdog_->Start();

  const bool use_mpi = o.mpi == RuntimeOptions::Mpi::kRequired ||
                       (o.mpi == RuntimeOptions::Mpi::kAuto && launch.launched_by_mpi());
  if (use_mpi) {
    // Open MPI aborts inside MPI_Init when srun gave it no way to join the step: say so first.
    TS_RETURN_IF_ERROR(CheckSrunMpiWireUp(launch));
    if (const std::string warning = SrunMpiWarning(launch, MpiRuntime::LibraryVersion()); !warning.empty()) {
      TS_LOG(WARNING) << warning;
    }
    TS_ASSIGN_OR_RETURN(runtime->mpi_, MpiRuntime::Initialize(launch, runtime->watchdog_.get()));
    if (runtime->launch_.local_rank < 0 || runtime->launch_.local_size < 0 ||
        runtime->launch_.node_rank < 0 || runtime->launch_.num_nodes < 0) {
      TS_RETURN_IF_ERROR(runtime->mpi_->FillNodeLayout(&runtime->launch_));
    }
  } else if (runtime->launch_.local_rank < 0) {
    // Without MPI nothing else can tell; one rank per node is the safe guess for a device index.
    runtime->launch_.local_rank = 0;
  }
  return runtime;
}

Runtime::~Runtime() {
  mpi_.reset();
  if (watchdog_) watchdog_->Stop();
}

}  // namespace tessera::parallel
