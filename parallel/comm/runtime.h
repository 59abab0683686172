// The process-level half of the distributed runtime, without LibTorch: the launch information
// (completed from MPI where the launcher left gaps), the watchdog and its thread, the SIGTERM and
// SIGINT handlers, and MPI when it is used. One per process; ProcessGrid builds its communicators
// on it. MPI is initialized only when an MPI launcher started the process (or the caller
// requires it): a plain single process runs without MPI, and under srun a GPU job can run with
// NCCL alone.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "parallel/comm/launch.h"
#include "parallel/comm/mpi_runtime.h"
#include "parallel/comm/watchdog.h"

namespace tessera::parallel {

struct RuntimeOptions {
  enum class Mpi { kAuto, kRequired, kNever };
  // kAuto: when an MPI launcher (mpirun, a PMI launcher) started the processes.
  Mpi mpi = Mpi::kAuto;
  double startup_timeout_s = 900;
  double comm_timeout_s = 300;
  bool install_signal_handlers = true;
  bool exit_on_signal = true;
  // Tests: called instead of exiting on a fatal failure.
  std::function<void(int code, const std::string& report)> on_fatal;
};

class Runtime {
 public:
  // Starts the watchdog, installs the signal handlers, initializes MPI if used and completes the
  // node layout. Collective when MPI is used: every rank calls it.
  static absl::StatusOr<std::shared_ptr<Runtime>> Create(const LaunchInfo& launch, RuntimeOptions options);
  // Finalizes MPI (under the watchdog), then stops the watchdog.
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const LaunchInfo& launch() const { return launch_; }
  int rank() const { return launch_.rank; }
  int world_size() const { return launch_.world_size; }
  const RuntimeOptions& options() const { return options_; }
  Watchdog& watchdog() { return *watchdog_; }
  // Null when MPI is not used.
  MpiRuntime* mpi() { return mpi_.get(); }

 private:
  Runtime(const LaunchInfo& launch, RuntimeOptions options);
  LaunchInfo launch_;
  RuntimeOptions options_;
  std::unique_ptr<Watchdog> watchdog_;
  std::unique_ptr<MpiRuntime> mpi_;
};

// The git revision Tessera was built from ("3f2c1a9b0d4e-dirty", or "unknown").
const char* TesseraRevision();

}  // namespace tessera::parallel
