// Catch2 main for tests that every rank of an MPI job runs (or one process, without mpirun): it
// makes the process's runtime once (MPI_Init when mpirun started the process), runs the test
// cases in declaration order on every rank, so that their collectives match, and reports once:
// rank 0 prints to the console, the other ranks write to a file that is printed only when they
// failed; the exit code is non-zero on every rank when any rank failed.
//
// Environment: TESSERA_TEST_DEVICE=cuda runs on the rank's GPU (NCCL); TESSERA_TEST_TIMEOUT_S
// (default 60) is the collective timeout, so a test that breaks the same-order contract ends in
// the watchdog's report instead of a hang.
#if TESSERA_CATCH_MAJOR == 3
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include "parallel/comm/launch.h"
#include "tests/parallel/comm/comm_test_util.h"

namespace tessera::parallel::testing {
namespace {
#ifndef TESSERA_TEST_DEFAULT_DEVICE
#define TESSERA_TEST_DEFAULT_DEVICE "cpu"
#endif
std::shared_ptr<Runtime> g_runtime;
std::string g_device = TESSERA_TEST_DEFAULT_DEVICE;
}  // namespace

std::shared_ptr<Runtime> TestRuntime() { return g_runtime; }
const std::string& TestDeviceType() { return g_device; }

}  // namespace tessera::parallel::testing

int main(int argc, char** argv) {
  using namespace tessera::parallel;
  auto launch = LaunchInfoFromEnvironment();
  if (!launch.ok()) {
    std::fprintf(stderr, "%s\n", std::string(launch.status().message()).c_str());
    return 2;
  }
  if (const char* device = std::getenv("TESSERA_TEST_DEVICE")) testing::g_device = device;
  RuntimeOptions options;
  options.comm_timeout_s = options.startup_timeout_s =
      std::getenv("TESSERA_TEST_TIMEOUT_S") ? std::atof(std::getenv("TESSERA_TEST_TIMEOUT_S")) : 60;
  options.install_signal_handlers = true;
  auto runtime = Runtime::Create(*launch, options);
  if (!runtime.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", launch->rank, std::string(runtime.status().message()).c_str());
    return 2;
  }
  testing::g_runtime = *runtime;
  const int rank = launch->rank, size = launch->world_size;
  // One intra-op thread per rank: several ranks share the cores.
  if (size > 1) at::set_num_threads(1);

  // Every rank runs the cases in the same (declaration) order.
  std::vector<char*> args(argv, argv + argc);
  std::string order_flag = "--order", order_value = "decl";
  args.push_back(order_flag.data());
  args.push_back(order_value.data());
  // mpirun hands rank 0 a pseudo-terminal: no colour codes in ctest's logs.
#if TESSERA_CATCH_MAJOR == 3
  std::string colour_flag = "--colour-mode", colour_value = "none";
#else
  std::string colour_flag = "--use-colour", colour_value = "no";
#endif
  args.push_back(colour_flag.data());
  args.push_back(colour_value.data());
  Catch::Session session;
  if (int rc = session.applyCommandLine(static_cast<int>(args.size()), args.data()); rc != 0) return rc;
  const std::string output = "/tmp/tessera-comm-test-" + std::to_string(getpid()) + ".txt";
  if (rank != 0) session.configData().outputFilename = output;
  const int failed = session.run();

  int any_failed = failed;
  if (size > 1) {
    // Agree on the outcome, and let the failing ranks other than 0 show their report.
    auto grid = testing::MakeGrid({1, 1, 0});
    if (!grid.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", rank, std::string(grid.status().message()).c_str());
      return 2;
    }
    at::Tensor flag = at::full({1}, static_cast<int64_t>(failed), at::kLong);
    if (testing::TestDeviceType() == "cuda") flag = flag.to(at::Device(at::kCUDA, (*grid)->device_index()));
    if (!(*grid)->world().AllReduce(flag, ReduceOp::kMax).ok()) return 2;
    any_failed = static_cast<int>(flag.cpu().item<int64_t>());
    for (int r = 1; r < size; ++r) {
      if (r == rank && failed) {
        std::ifstream in(output);
        std::stringstream text;
        text << in.rdbuf();
        std::fprintf(stderr, "==== rank %d failed:\n%s\n", rank, text.str().c_str());
        std::fflush(stderr);
      }
      if (!(*grid)->world().Barrier().ok()) return 2;
    }
    if (rank == 0 && any_failed && !failed) std::printf("rank 0 passed, but another rank failed (above)\n");
  }
  if (rank != 0) std::remove(output.c_str());
  testing::g_runtime.reset();
  return any_failed ? 1 : 0;
}
