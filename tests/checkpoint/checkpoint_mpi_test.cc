// The checkpoint writer on real ranks (run under mpirun with 2 and 4 ranks, and as one process):
// a tensor-parallel row split with padding, replicated tensors saved by every rank, ZeRO-style
// flat ranges, per-rank blobs; every rank then reads its slices of another layout (columns,
// flat ranges, a transposed split) and the whole tensors. Async saves with keep-1 retention on
// a communicator of their own; a failure on one rank fails the save on every rank with the
// same message, without a manifest.
#include <ATen/ATen.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_writer.h"
#include "tests/catch_compat.h"
#include "tests/parallel/comm/comm_test_util.h"

using namespace tessera;
using namespace tessera::checkpoint;
namespace fs = std::filesystem;

namespace {

at::Tensor Logical(std::vector<int64_t> shape, double seed) {
  return (at::arange(NumElements(shape), at::kDouble) * 0.25 + seed).to(at::kFloat).reshape(shape);
}

// A directory all ranks agree on (the same path on this machine), emptied by rank 0.
std::string SharedDir(parallel::Communicator& world, const std::string& tag) {
  const std::string dir =
      absl::StrCat(TESSERA_BINARY_DIR, "/tests/tmp/checkpoint-mpi-np", world.size(), "-", tag);
  if (world.rank() == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  CATCH_REQUIRE(world.Barrier().ok());
  return dir;
}

// Removes a SharedDir once every rank is done with it.
void RemoveShared(parallel::Communicator& world, const std::string& dir) {
  CATCH_REQUIRE(world.Barrier().ok());
  if (world.rank() == 0) fs::remove_all(dir);
}

// This rank's share of step `step`: "w" [5W+1, 6] split along rows into W padded blocks, "norm"
// [6] from every rank, "optim.exp_avg/w" as W uneven flat ranges, and a blob.
SaveState RankState(int64_t step, int rank, int world) {
  SaveState s;
  s.step = step;
  s.consumed_samples = step * 8;
  s.data_position = "pos";
  s.config_yaml = "model:\n  dim: 6\n";
  s.layout = Layout{world, world, 1, 1, 1, 1};
  const int64_t rows = 5 * world + 1;
  const at::Tensor w = Logical({rows, 6}, step);
  parallel::ShardSpec spec{.dim = 0, .parts = world, .index = rank, .global_size = rows};
  at::Tensor local = at::zeros({spec.block_size(), 6});
  local.narrow(0, 0, spec.end() - spec.begin()).copy_(w.narrow(0, spec.begin(), spec.end() - spec.begin()));
  s.tensors.push_back(ShardSpecSlice("w", {rows, 6}, spec, local));
  s.tensors.push_back(WholeTensor("norm", Logical({6}, step + 0.5)));
  // Flat ranges: rank r owns [r * (r + 1) / 2 * 3, ...), the last rank the rest.
  const int64_t numel = rows * 6;
  auto cut = [&](int r) { return r == world ? numel : std::min<int64_t>(numel, 3 * r * (r + 1) / 2); };
  const at::Tensor m = Logical({rows, 6}, step + 1000).reshape({-1});
  s.tensors.push_back(
      FlatSlice("optim.exp_avg/w", {rows, 6}, cut(rank), m.slice(0, cut(rank), cut(rank + 1))));
  s.blobs.push_back({absl::StrCat("rng/rank-", rank), absl::StrCat("rng of ", rank)});
  return s;
}

void CheckReads(const std::string& step_dir, int64_t step, int rank, int world) {
  auto reader = CheckpointReader::Open(step_dir);
  CATCH_REQUIRE(reader.ok());
  const CheckpointReader& r = **reader;
  const int64_t rows = 5 * world + 1;
  const at::Tensor w = Logical({rows, 6}, step), m = Logical({rows, 6}, step + 1000);
  CATCH_CHECK(r.manifest().layout.world_size == world);
  CATCH_CHECK(r.manifest().files.size() == static_cast<size_t>(world));
  CATCH_CHECK(at::equal(*ReadTensor(r, "w"), w));
  CATCH_CHECK(at::equal(*ReadTensor(r, "norm"), Logical({6}, step + 0.5)));
  CATCH_CHECK(at::equal(*ReadTensor(r, "optim.exp_avg/w"), m));
  // Another layout: this rank's share of the columns (tensor-parallel along dim 1, 2 parts per
  // rank pair), its rows of the optimizer state, and a ZeRO range of the rows-split tensor.
  parallel::ShardSpec cols{.dim = 1, .parts = 2, .index = rank % 2, .global_size = 6};
  CATCH_CHECK(at::equal(*ReadShardSpecBlock(r, "w", cols), w.narrow(1, 3 * (rank % 2), 3)));
  CATCH_CHECK(at::equal(*ReadBox(r, "optim.exp_avg/w", {rank, 0}, {2, 6}), m.narrow(0, rank, 2)));
  const int64_t chunk = rows * 6 / world;
  CATCH_CHECK(at::equal(*ReadFlatRange(r, "w", rank * chunk, chunk),
                        w.reshape({-1}).slice(0, rank * chunk, (rank + 1) * chunk)));
  for (int q = 0; q < world; ++q)
    CATCH_CHECK(*r.ReadBlob(absl::StrCat("rng/rank-", q)) == absl::StrCat("rng of ", q));
}

}  // namespace

CATCH_TEST_CASE("multi-rank save: every rank's slices, read back in other layouts") {
  auto grid = parallel::testing::MakeGrid({1, 1, 0});
  CATCH_REQUIRE(grid.ok());
  parallel::Communicator& world = (*grid)->world();
  const std::string dir = SharedDir(world, "sync");
  CheckpointWriter writer({.dir = dir}, world);
  CATCH_REQUIRE(writer.Save(RankState(10, world.rank(), world.size())).ok());
  CATCH_CHECK(writer.last_committed() == StepDirPath(dir, 10));
  CheckReads(StepDirPath(dir, 10), 10, world.rank(), world.size());
  CATCH_CHECK(FindLatestValid(dir)->step == 10);
  RemoveShared(world, dir);
}

CATCH_TEST_CASE("multi-rank async saves on their own communicator, keep 1") {
  auto grid = parallel::testing::MakeGrid({1, 1, 0});
  CATCH_REQUIRE(grid.ok());
  parallel::Communicator& world = (*grid)->world();
  const std::string dir = SharedDir(world, "async");
  auto ckpt_comm = world.Split(0, world.rank(), "checkpoint-async-test");
  CATCH_REQUIRE(ckpt_comm.ok());
  {
    CheckpointWriter writer({.dir = dir, .keep = 1, .async = true}, **ckpt_comm);
    for (int64_t step : {1, 2, 3}) {
      CATCH_REQUIRE(writer.Save(RankState(step, world.rank(), world.size())).ok());
      // Training continues on the other communicator meanwhile.
      at::Tensor x = at::ones({4});
      CATCH_REQUIRE(world.AllReduce(x, parallel::ReduceOp::kSum).ok());
      CATCH_CHECK(x[0].item<float>() == world.size());
    }
    CATCH_REQUIRE(writer.Wait().ok());
  }
  CATCH_REQUIRE(world.Barrier().ok());
  CATCH_CHECK(!fs::exists(StepDirPath(dir, 1)));
  CATCH_CHECK(!fs::exists(StepDirPath(dir, 2)));
  CheckReads(StepDirPath(dir, 3), 3, world.rank(), world.size());
  RemoveShared(world, dir);
}

CATCH_TEST_CASE("a failure on one rank fails the save on every rank, with the same message") {
  auto grid = parallel::testing::MakeGrid({1, 1, 0});
  CATCH_REQUIRE(grid.ok());
  parallel::Communicator& world = (*grid)->world();
  const std::string dir = SharedDir(world, "fail");
  CheckpointWriter writer({.dir = dir}, world);
  CATCH_REQUIRE(writer.Save(RankState(1, world.rank(), world.size())).ok());
  // The last rank passes a slice past the end of the tensor.
  SaveState bad = RankState(2, world.rank(), world.size());
  const int last = world.size() - 1;
  if (world.rank() == last) bad.tensors.push_back(BoxSlice("extra", {4}, {2}, at::ones({3})));
  const absl::Status status = writer.Save(std::move(bad));
  CATCH_CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CATCH_CHECK(std::string(status.message())
                  .find(absl::StrCat("was not committed: rank ", last, ": saving tensor 'extra'")) !=
              std::string::npos);
  // Ranks disagreeing on a tensor's shape: caught by rank 0's merge, reported everywhere.
  SaveState mismatch = RankState(3, world.rank(), world.size());
  mismatch.tensors.push_back(WholeTensor("odd", at::ones({world.rank() == last ? 3 : 2})));
  const absl::Status merged = writer.Save(std::move(mismatch));
  if (world.size() > 1) {
    CATCH_CHECK(std::string(merged.message()).find("ranks must agree on a logical tensor") !=
                std::string::npos);
  } else {
    CATCH_CHECK(merged.ok());
  }
  CATCH_REQUIRE(world.Barrier().ok());
  CATCH_CHECK(!fs::exists(StepDirPath(dir, 2) + "/manifest.pb"));
  CATCH_CHECK(FindLatestValid(dir)->step == (world.size() > 1 ? 1 : 3));
  CheckReads(StepDirPath(dir, 1), 1, world.rank(), world.size());
  RemoveShared(world, dir);
}
