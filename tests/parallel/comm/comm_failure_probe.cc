// A small program for the failure tests (failure_test.sh), run by every rank of an mpirun job:
// it builds the grid, runs a few good collectives, then breaks the same-order contract in one
// of the ways a real job does. Modes:
//   kill     rank 1 posts the all-reduce and then dies by SIGKILL while the others wait in it
//   absent   rank 1 never calls the all-reduce (it sleeps); the others time out
//   layout   parallel.tp that does not divide the world: a clear error before any collective
// Usage: comm_failure_probe MODE TIMEOUT_S
#include <ATen/ATen.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "parallel/comm/launch.h"
#include "parallel/process_grid.h"

using namespace tessera::parallel;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: comm_failure_probe kill|absent|layout TIMEOUT_S\n");
    return 2;
  }
  const std::string mode = argv[1];
  auto launch = LaunchInfoFromEnvironment();
  if (!launch.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(launch.status().message()).c_str());
    return 2;
  }
  GridOptions options;
  options.dims = mode == "layout" ? ParallelDims{3, 1, 0} : ParallelDims{1, 1, 0};
  options.comm_timeout_s = std::atof(argv[2]);
  options.startup_timeout_s = 60;
  auto grid = ProcessGrid::Create(*launch, options);
  if (!grid.ok()) {
    std::fprintf(stderr, "rank %d: error: %s\n", launch->rank, std::string(grid.status().message()).c_str());
    return 2;
  }
  at::set_num_threads(1);
  Communicator& world = (*grid)->world();
  const int rank = (*grid)->rank();
  // A few good collectives, then the start-up phase ends as after a first training step.
  for (int i = 0; i < 5; ++i) {
    at::Tensor t = at::full({16}, static_cast<float>(rank), at::kFloat);
    if (!world.AllReduce(t, ReduceOp::kSum).ok()) return 1;
  }
  (*grid)->EndStartup();
  if (!world.Barrier().ok()) return 1;

  at::Tensor t = at::full({1 << 16}, static_cast<float>(rank), at::kFloat);
  // failure_test.sh measures from here to the end of the job.
  if (rank == 0) {
    std::fprintf(stderr, "probe: entering the broken all-reduce at %.3f\n",
                 std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
    std::fflush(stderr);
  }
  if (mode == "absent" && rank == 1) {
    std::fprintf(stderr, "rank 1: skipping the all-reduce\n");
    sleep(600);
    return 0;
  }
  auto work = world.AllReduceAsync(t, ReduceOp::kSum);
  if (!work.ok()) return 1;
  if (mode == "kill" && rank == 1) {
    std::fprintf(stderr, "rank 1: dying in all_reduce #%lld\n",
                 static_cast<long long>((*work)->record().seq));
    std::fflush(stderr);
    raise(SIGKILL);
  }
  // The survivors wait here until the watchdog ends them.
  absl::Status status = (*work)->Wait();
  std::fprintf(stderr, "rank %d: the broken all-reduce returned (%s)\n", rank, status.ToString().c_str());
  return 0;
}
