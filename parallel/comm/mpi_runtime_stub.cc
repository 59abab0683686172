// MpiRuntime for builds without MPI: nothing is available, and asking for MPI says how to get it.
#include "parallel/comm/mpi_runtime.h"

namespace tessera::parallel {

struct MpiRuntime::Impl {};

MpiRuntime::MpiRuntime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MpiRuntime::~MpiRuntime() = default;

bool MpiRuntime::Available() { return false; }
std::string MpiRuntime::LibraryVersion() { return ""; }
bool MpiRuntime::IsInitialized() { return false; }

absl::StatusOr<std::unique_ptr<MpiRuntime>> MpiRuntime::Initialize(const LaunchInfo&, Watchdog*) {
  return absl::UnimplementedError(
      "this build of Tessera has no MPI (CMake found none): install an MPI (Debian: "
      "libopenmpi-dev) and reconfigure, or launch without mpirun");
}

int MpiRuntime::rank() const { return 0; }
int MpiRuntime::size() const { return 1; }
bool MpiRuntime::thread_multiple() const { return false; }
absl::Status MpiRuntime::FillNodeLayout(LaunchInfo*) { return absl::UnimplementedError("no MPI"); }
absl::Status MpiRuntime::BroadcastFromRoot(std::string*) { return absl::UnimplementedError("no MPI"); }

}  // namespace tessera::parallel
