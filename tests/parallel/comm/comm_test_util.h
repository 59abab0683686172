// Shared by the communicator tests: the process's runtime (made once by mpi_catch_main.cc, as
// MPI can be initialized only once per process), the device under test, and grid construction.
#pragma once

#include <memory>
#include <string>

#include "parallel/comm/runtime.h"
#include "parallel/process_grid.h"

namespace tessera::parallel::testing {

// The runtime every test's grids share.
std::shared_ptr<Runtime> TestRuntime();
// "cpu" (MPI or local) or "cuda" (NCCL), from TESSERA_TEST_DEVICE.
const std::string& TestDeviceType();

// A grid on the test runtime; max_count > 0 makes the MPI backend split larger counts.
inline absl::StatusOr<std::unique_ptr<ProcessGrid>> MakeGrid(ParallelDims dims,
                                                             const std::string& order = "tp-dp-pp",
                                                             int64_t max_count = 0) {
  GridOptions options;
  options.dims = dims;
  options.order = order;
  options.device = TestDeviceType();
  options.max_count = max_count;
  return ProcessGrid::Create(TestRuntime(), options);
}

}  // namespace tessera::parallel::testing
