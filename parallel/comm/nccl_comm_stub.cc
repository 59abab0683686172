// The NCCL backend for builds without it (no NCCL or CUDA toolkit found, or a CPU LibTorch):
// creating it says which piece is missing. TESSERA_NCCL_MISSING_REASON comes from CMake
// (generated tessera_nccl_config.h).
#include "parallel/comm/nccl_comm.h"

#include "absl/strings/str_cat.h"
#include "tessera_nccl_config.h"

#ifndef TESSERA_NCCL_MISSING_REASON
#define TESSERA_NCCL_MISSING_REASON "this build has no NCCL backend"
#endif

namespace tessera::parallel {

bool NcclBackendAvailable() { return false; }
std::string NcclBackendMissingReason() { return TESSERA_NCCL_MISSING_REASON; }
std::string NcclVersion() { return ""; }
std::string CudaVersion() { return ""; }
int CudaDeviceCount() { return 0; }

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclWorldCommunicator(Watchdog*, int, int, int,
                                                                          const NcclBootstrap&) {
  return absl::UnimplementedError(
      absl::StrCat("the NCCL backend is not available: ", TESSERA_NCCL_MISSING_REASON));
}

}  // namespace tessera::parallel
