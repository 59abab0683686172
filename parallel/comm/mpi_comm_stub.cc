// The MPI backend for builds without MPI: creating it says why it is missing.
#include "parallel/comm/mpi_comm.h"

namespace tessera::parallel {

absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiWorldCommunicator(Watchdog*, const MpiCommOptions&) {
  return absl::UnimplementedError(
      "this build of Tessera has no MPI backend (CMake found no MPI): install an MPI (Debian: "
      "libopenmpi-dev) and reconfigure");
}

}  // namespace tessera::parallel
