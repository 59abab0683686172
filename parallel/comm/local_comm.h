// The single-process backend: a group of one, where every collective is the identity and a
// send to oneself is received by the matching receive of the same batch. Used when no launcher
// started the process (world size 1), for any device, without MPI or NCCL.
#pragma once

#include <memory>
#include <string>

#include "parallel/comm/communicator.h"

namespace tessera::parallel {

// A group of one; `world_rank` is this process's world rank (0 for a single process).
std::unique_ptr<Communicator> CreateLocalCommunicator(Watchdog* watchdog, const std::string& name,
                                                      int world_rank);

}  // namespace tessera::parallel
