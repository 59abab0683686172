// Helper of the crash-safety tests (checkpoint_crash_test.cc as one process,
// checkpoint_crash_mpi_test.sh under mpirun): a process that dies by SIGKILL at a chosen point
// of a checkpoint save, and a checker of what such a death leaves behind.
//
//   checkpoint_crash_probe DIR kill POINT [RANK] [async]
//       saves step 1 completely, then step 2, killing rank RANK (default 0) with SIGKILL when
//       the writer reaches POINT ("record:<i>", "shard_committed", "manifest_before_rename",
//       "committed"); exits 3 if POINT was never reached
//   checkpoint_crash_probe DIR run
//       saves step 1, prints "saving step 2" (flushed), then saves step 2 with a large tensor
//       "big" added (16 MB a rank), and exits 0: the caller kills it at a time of its choosing
//   checkpoint_crash_probe DIR expect STEP
//       exits 0 if FindLatestValid(DIR) (checksums verified) is STEP and its tensors hold the
//       values that step saved, printing what it skipped and why; else 1
//
// Every rank saves "w" [4 x world, 8] split by rows, "m" [5 x world + 3] as flat ranges (rank 0
// takes the 3 extra elements), "b" [16] from rank 0 only, and blob "rng/rank-R"; the values
// depend on the step, so an older checkpoint cannot pass for a newer one.
#include <ATen/ATen.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_writer.h"
#include "parallel/comm/launch.h"
#include "parallel/process_grid.h"

using namespace tessera;
using namespace tessera::checkpoint;

namespace {

at::Tensor Values(std::vector<int64_t> shape, int64_t step, double salt) {
  return (at::arange(NumElements(shape), at::kDouble) + step * 1000 + salt).to(at::kFloat).reshape(shape);
}

constexpr int64_t kBigElements = int64_t{4} << 20;

SaveState State(int64_t step, int rank, int world, bool big = false) {
  SaveState s;
  s.step = step;
  s.consumed_samples = step * 10;
  const at::Tensor w = Values({4 * world, 8}, step, 0), m = Values({5 * world + 3}, step, 0.5);
  s.tensors.push_back(BoxSlice("w", {4 * world, 8}, {4 * rank, 0}, w.narrow(0, 4 * rank, 4)));
  const int64_t begin = rank == 0 ? 0 : 5 * rank + 3, count = rank == 0 ? 8 : 5;
  s.tensors.push_back(FlatSlice("m", {5 * world + 3}, begin, m.slice(0, begin, begin + count)));
  if (rank == 0) s.tensors.push_back(WholeTensor("b", Values({16}, step, 0.25)));
  s.blobs.push_back(
      {absl::StrCat("rng/rank-", rank), absl::StrCat("state of rank ", rank, " at step ", step)});
  if (big) {
    const std::vector<int64_t> shape{kBigElements * world};
    s.tensors.push_back(FlatSlice("big", shape, kBigElements * rank,
                                  Values(shape, step, 0.75).narrow(0, kBigElements * rank, kBigElements)));
  }
  return s;
}

int Kill(const std::string& dir, const std::string& point, int victim, bool async) {
  auto launch = parallel::LaunchInfoFromEnvironment();
  if (!launch.ok()) return 2;
  parallel::GridOptions options;
  options.dims = {1, 1, 0};
  auto grid = parallel::ProcessGrid::Create(*launch, options);
  if (!grid.ok()) {
    std::fprintf(stderr, "%s\n", std::string(grid.status().message()).c_str());
    return 2;
  }
  parallel::Communicator& comm = (*grid)->world();
  const int rank = comm.rank(), world = comm.size();
  bool armed = false;
  WriterOptions wo{.dir = dir, .async = async, .fault_hook = [&](const std::string& p) {
                     if (armed && p == point && rank == victim) raise(SIGKILL);
                   }};
  CheckpointWriter writer(wo, comm);
  for (int64_t step : {1, 2}) {
    armed = step == 2;
    absl::Status s = writer.Save(State(step, rank, world));
    if (s.ok()) s = writer.Wait();
    if (!s.ok()) {
      std::fprintf(stderr, "rank %d: step %ld: %s\n", rank, static_cast<long>(step),
                   std::string(s.message()).c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "rank %d: point '%s' was never reached\n", rank, point.c_str());
  return 3;
}

// Saves step 1, announces step 2 on stdout, saves it (with "big") and exits 0.
int Run(const std::string& dir) {
  auto launch = parallel::LaunchInfoFromEnvironment();
  if (!launch.ok()) return 2;
  parallel::GridOptions options;
  options.dims = {1, 1, 0};
  auto grid = parallel::ProcessGrid::Create(*launch, options);
  if (!grid.ok()) return 2;
  parallel::Communicator& comm = (*grid)->world();
  CheckpointWriter writer({.dir = dir}, comm);
  absl::Status s = writer.Save(State(1, comm.rank(), comm.size()));
  std::printf("saving step 2\n");
  std::fflush(stdout);
  if (s.ok()) s = writer.Save(State(2, comm.rank(), comm.size(), /*big=*/true));
  if (!s.ok()) std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
  return s.ok() ? 0 : 1;
}

int Expect(const std::string& dir, int64_t step) {
  auto found = FindLatestValid(dir, Verify::kChecksums);
  if (!found.ok()) {
    std::printf("%s\n", std::string(found.status().message()).c_str());
    return 1;
  }
  for (const SkippedCheckpoint& s : found->skipped) {
    std::printf("skipped %s: %s\n", s.path.c_str(), std::string(s.reason.message()).c_str());
  }
  std::printf("latest valid: %s\n", found->path.c_str());
  if (found->step != step) return 1;
  auto reader = CheckpointReader::Open(found->path);
  if (!reader.ok()) return 1;
  const int world = (*reader)->manifest().layout.world_size;
  const bool values_ok =
      at::equal(*ReadTensor(**reader, "w"), Values({4 * world, 8}, step, 0)) &&
      at::equal(*ReadTensor(**reader, "m"), Values({5 * world + 3}, step, 0.5)) &&
      at::equal(*ReadTensor(**reader, "b"), Values({16}, step, 0.25)) &&
      *(*reader)->ReadBlob("rng/rank-0") == absl::StrCat("state of rank 0 at step ", step) &&
      (!(*reader)->Tensor("big").ok() ||
       at::equal(*ReadTensor(**reader, "big"), Values({kBigElements * world}, step, 0.75)));
  std::printf("values of step %ld: %s\n", static_cast<long>(step), values_ok ? "intact" : "WRONG");
  return values_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 4 && std::string(argv[2]) == "kill") {
    int victim = 0;
    bool async = false;
    for (int i = 4; i < argc; ++i) {
      if (std::string(argv[i]) == "async") {
        async = true;
      } else if (!absl::SimpleAtoi(argv[i], &victim)) {
        return 2;
      }
    }
    return Kill(argv[1], argv[3], victim, async);
  }
  if (argc == 3 && std::string(argv[2]) == "run") return Run(argv[1]);
  int64_t step;
  if (argc == 4 && std::string(argv[2]) == "expect" && absl::SimpleAtoi(argv[3], &step))
    return Expect(argv[1], step);
  std::fprintf(stderr, "usage: %s DIR kill POINT [RANK] [async] | DIR run | DIR expect STEP\n", argv[0]);
  return 2;
}
