// The MPI backend of communicator.h: CPU tensors over MPI's nonblocking collectives, completed
// by polling (MPI_Testall) with a short back-off, so that a rank never sits inside a blocking MPI
// call the watchdog cannot see past.
//
// bfloat16 and float16: MPI has no 16-bit float types, so reductions (all-reduce, reduce-scatter)
// widen to float32, reduce in float32 and round once to the 16-bit type at the end (an fp32 round
// trip: the result is the correctly rounded sum of the float32 partial sums, more accurate than a
// reduction in 16-bit arithmetic, at twice the traffic). All-gather, broadcast and send/recv move
// the 16-bit values as they are.
//
// Counts beyond MPI's int are split into several operations of at most `max_count` elements;
// tests set a small max_count to run that path on small tensors.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "parallel/comm/communicator.h"

namespace tessera::parallel {

struct MpiCommOptions {
  // Elements per MPI call; 0 means INT32_MAX.
  int64_t max_count = 0;
};

// A duplicate of MPI_COMM_WORLD as a Communicator named "world". MPI must be initialized
// (MpiRuntime). All ranks of the world must call it, in the same order as the collectives.
absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiWorldCommunicator(Watchdog* watchdog,
                                                                         const MpiCommOptions& options);

}  // namespace tessera::parallel
