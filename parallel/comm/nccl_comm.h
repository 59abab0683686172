// The NCCL backend of communicator.h: CUDA tensors over NCCL, each communicator with its own
// high-priority stream. An operation first makes that stream wait (with an event) for the
// caller's current stream, so it sees every tensor value enqueued before it; Work::Wait() makes
// the caller's current stream wait for the operation's completion event, so later work sees the
// result, without blocking the host. The watchdog polls the completion events against their
// deadlines and checks ncclCommGetAsyncError. Sub-communicators come from ncclCommSplit.
//
// Compiled where the CUDA toolkit and NCCL were found; linked as the backend only when LibTorch
// has CUDA too (with a CPU LibTorch it is compile-checked, and nccl_comm_stub.cc stands in).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "parallel/comm/communicator.h"

namespace tessera::parallel {

// Whether this build has the NCCL backend (NCCL found and LibTorch with CUDA).
bool NcclBackendAvailable();
// Why not, when it is not ("" when it is).
std::string NcclBackendMissingReason();
// "NCCL 2.21.5", "CUDA runtime 12.4, driver 12.8"; "" where the build has no NCCL backend.
std::string NcclVersion();
std::string CudaVersion();
// Visible CUDA devices; 0 where the build has no NCCL backend.
int CudaDeviceCount();

// Hands rank 0's NCCL unique id to every rank: called on every rank, with the id on rank 0 and
// "" elsewhere; returns the id on every rank.
using NcclBootstrap = std::function<absl::StatusOr<std::string>(const std::string& id)>;

// The world communicator over NCCL on CUDA device `device`. All ranks of the world must call it
// (it is the first collective: ncclCommInitRank waits for every rank, under the watchdog's
// start-up timeout).
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclWorldCommunicator(Watchdog* watchdog, int rank,
                                                                          int world_size, int device,
                                                                          const NcclBootstrap& bootstrap);

}  // namespace tessera::parallel
