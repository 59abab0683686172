// MPI as a process-level service: initialisation (MPI_THREAD_MULTIPLE requested) and
// finalisation, the check that MPI's world is the launcher's, the node layout from MPI's
// shared-memory split, a byte broadcast for bootstrapping NCCL, and the watchdog's side channel:
// two private duplicates of MPI_COMM_WORLD on which the watchdog thread answers peers' "how far
// are you in group G?" questions, asks them itself when a collective times out, and tells
// ranks that never arrived to exit.
//
// This header does not include mpi.h, so that code which merely may use MPI builds without it;
// mpi_runtime_stub.cc stands in where the build found no MPI (Available() is then false and
// Initialize() an error).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "parallel/comm/launch.h"
#include "parallel/comm/watchdog.h"

namespace tessera::parallel {

class MpiRuntime {
 public:
  // True when this build has MPI.
  static bool Available();
  // The MPI library's version line ("Open MPI v4.1.4, ..."); "" without MPI.
  static std::string LibraryVersion();
  // True once MPI_Init ran in this process and MPI_Finalize did not.
  static bool IsInitialized();

  // Initializes MPI unless it already is (then it only checks), sets MPI_ERRORS_RETURN on the
  // world (errors become messages, not aborts) and checks that MPI's rank and size are the
  // launcher's. `watchdog` guards the start-up collectives and gets the side channel; it must
  // outlive this object.
  static absl::StatusOr<std::unique_ptr<MpiRuntime>> Initialize(const LaunchInfo& launch, Watchdog* watchdog);
  // Detaches the side channel and calls MPI_Finalize if Initialize() called MPI_Init. Under the
  // watchdog: a finalize that hangs (a peer gone) ends in a report, not a hang.
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int rank() const;
  int size() const;
  // Whether MPI granted MPI_THREAD_MULTIPLE; without it the watchdog thread makes no MPI calls
  // and a timeout cannot say which ranks had not arrived.
  bool thread_multiple() const;

  // Fills the local rank/size and node index/count that the launcher left unknown (-1).
  // Collective over the world: every rank calls it, in the same order as the other collectives.
  absl::Status FillNodeLayout(LaunchInfo* launch);
  // Broadcasts `bytes` (at most 64 KiB) from world rank 0 to every rank. Collective over the
  // world: every rank calls it, in the same order as the other collectives.
  absl::Status BroadcastFromRoot(std::string* bytes);

 private:
  struct Impl;
  explicit MpiRuntime(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::parallel
