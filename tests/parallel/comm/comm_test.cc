// Tests of the communicators as every rank of a real job sees them: run by mpirun with 1, 2, 3, 4
// and 8 ranks (MPI backend), as one process (local backend), and on GPUs with NCCL
// (TESSERA_TEST_DEVICE=cuda). Every expected value is computed locally from rank arithmetic,
// e.g. an all-reduce of (rank + 1) * k gives n(n+1)/2 * k.
//
// The values are small integers (at most 8 * 9 / 2 * 7 = 252), exact in every dtype including
// bfloat16 (8 significant bits: integers up to 256) and their averages (halves and quarters), so
// CPU results must match exactly. NCCL reduces 16-bit floats in 16-bit steps and averages with a
// premultiplied 1/n, so on CUDA averages get a relative tolerance of 1/64 (a few bfloat16 ulps).
#include <ATen/ATen.h>

#include <map>
#include <numeric>

#include "parallel/process_grid.h"
#include "tests/catch_compat.h"
#include "tests/parallel/comm/comm_test_util.h"

using tessera::parallel::Communicator;
using tessera::parallel::Coordinates;
using tessera::parallel::Dim;
using tessera::parallel::P2POp;
using tessera::parallel::ParallelDims;
using tessera::parallel::ProcessGrid;
using tessera::parallel::ReduceOp;
using tessera::parallel::testing::MakeGrid;
using tessera::parallel::testing::TestDeviceType;
using tessera::parallel::testing::TestRuntime;

namespace {

const std::vector<at::ScalarType> kDtypes = {at::kFloat,  at::kBFloat16, at::kHalf,
                                             at::kDouble, at::kInt,      at::kLong};

bool Floating(at::ScalarType t) { return at::isFloatingType(t); }

struct Ctx {
  std::unique_ptr<ProcessGrid> grid;
  int rank = 0;
  int n = 1;
  at::Device device = at::kCPU;

  at::Tensor On(const at::Tensor& t) const { return t.to(device).contiguous(); }
};

Ctx World(int64_t max_count = 0) {
  Ctx c;
  auto grid = MakeGrid({1, 1, 0}, "tp-dp-pp", max_count);
  if (!grid.ok()) CATCH_FAIL(std::string(grid.status().message()));
  c.grid = std::move(*grid);
  c.rank = c.grid->rank();
  c.n = c.grid->world_size();
  if (c.grid->device_index() >= 0) c.device = at::Device(at::kCUDA, c.grid->device_index());
  return c;
}

// (factor) * (i % period + 1) for i in [0, count), as `dtype` on the CPU.
at::Tensor Pattern(int64_t count, double factor, at::ScalarType dtype, int64_t period = 5,
                   int64_t offset = 0) {
  at::Tensor i = at::arange(offset, offset + count, at::kDouble);
  return ((at::fmod(i, static_cast<double>(period)) + 1) * factor).to(dtype);
}

// Exact on CPU; on CUDA 16-bit averages may differ by a few ulps (see the file comment).
bool Same(const at::Tensor& got, const at::Tensor& want, bool loose = false) {
  at::Tensor g = got.cpu();
  if (g.scalar_type() != want.scalar_type() || g.numel() != want.numel()) return false;
  if (!loose) return at::equal(g.view(-1), want.view(-1));
  return at::allclose(g.view(-1).to(at::kDouble), want.view(-1).to(at::kDouble), 1.0 / 64, 0);
}

std::string Name(at::ScalarType t, int64_t count) {
  return std::string(c10::toString(t)) + "[" + std::to_string(count) + "]";
}

// Element counts tried: empty, one, one not a multiple of 2, 3 or 4, a thousand; a large one for
// two dtypes (it crosses MPI's eager and segmenting thresholds).
std::vector<int64_t> Counts(at::ScalarType t) {
  std::vector<int64_t> counts = {0, 1, 7, 1000};
  if (t == at::kFloat || t == at::kBFloat16) counts.push_back(1 << 18);
  return counts;
}

}  // namespace

CATCH_TEST_CASE("all-reduce of the rank gives n(n-1)/2") {
  Ctx c = World();
  at::Tensor t = c.On(at::full({1}, static_cast<int64_t>(c.rank), at::kLong));
  CATCH_REQUIRE(c.grid->world().AllReduce(t, ReduceOp::kSum).ok());
  CATCH_CHECK(t.cpu().item<int64_t>() == static_cast<int64_t>(c.n) * (c.n - 1) / 2);
  at::Tensor m = c.On(at::full({1}, static_cast<float>(c.rank), at::kFloat));
  CATCH_REQUIRE(c.grid->world().AllReduce(m, ReduceOp::kMax).ok());
  CATCH_CHECK(m.cpu().item<float>() == c.n - 1);
}

CATCH_TEST_CASE("all-reduce sum, avg and max for every dtype and size") {
  Ctx c = World();
  const int64_t n = c.n;
  for (at::ScalarType dtype : kDtypes) {
    for (int64_t count : Counts(dtype)) {
      CATCH_INFO(Name(dtype, count) << " on " << n << " ranks");
      // Rank r holds (r + 1) * k, k = i % 5 + 1.
      const double sum = n * (n + 1) / 2.0;
      at::Tensor t = c.On(Pattern(count, c.rank + 1, dtype));
      CATCH_REQUIRE(c.grid->world().AllReduce(t, ReduceOp::kSum).ok());
      CATCH_CHECK(Same(t, Pattern(count, sum, dtype)));

      t = c.On(Pattern(count, c.rank + 1, dtype));
      CATCH_REQUIRE(c.grid->world().AllReduce(t, ReduceOp::kMax).ok());
      CATCH_CHECK(Same(t, Pattern(count, n, dtype)));

      t = c.On(Pattern(count, c.rank + 1, dtype));
      CATCH_REQUIRE(c.grid->world().AllReduce(t, ReduceOp::kAvg).ok());
      at::Tensor want = Floating(dtype) ? Pattern(count, sum / n, dtype)
                                        : at::div(Pattern(count, sum, at::kLong), n, "trunc").to(dtype);
      CATCH_CHECK(Same(t, want, c.device.is_cuda()));
    }
  }
}

CATCH_TEST_CASE("reduce-scatter for every dtype and block size") {
  Ctx c = World();
  const int64_t n = c.n;
  for (at::ScalarType dtype : kDtypes) {
    for (int64_t block : {0, 1, 3, 1000}) {
      CATCH_INFO(Name(dtype, block) << " blocks on " << n << " ranks");
      // Rank q's input element j is (q + 1) * (j % 7 + 1); rank r gets block r of the sum.
      const double sum = n * (n + 1) / 2.0;
      auto input = [&] { return c.On(Pattern(n * block, c.rank + 1, dtype, 7)); };
      const at::Tensor want_sum = Pattern(block, sum, dtype, 7, c.rank * block);
      at::Tensor out = c.On(at::zeros({block}, dtype));
      CATCH_REQUIRE(c.grid->world().ReduceScatter(out, input(), ReduceOp::kSum).ok());
      CATCH_CHECK(Same(out, want_sum));
      CATCH_REQUIRE(c.grid->world().ReduceScatter(out, input(), ReduceOp::kMax).ok());
      CATCH_CHECK(Same(out, Pattern(block, n, dtype, 7, c.rank * block)));
      CATCH_REQUIRE(c.grid->world().ReduceScatter(out, input(), ReduceOp::kAvg).ok());
      at::Tensor want_avg = Floating(dtype) ? Pattern(block, sum / n, dtype, 7, c.rank * block)
                                            : at::div(want_sum.to(at::kLong), n, "trunc").to(dtype);
      CATCH_CHECK(Same(out, want_avg, c.device.is_cuda()));
    }
  }
}

CATCH_TEST_CASE("all-gather for every dtype and size, also in place") {
  Ctx c = World();
  const int64_t n = c.n;
  for (at::ScalarType dtype : kDtypes) {
    for (int64_t count : {0, 1, 7, 1000}) {
      CATCH_INFO(Name(dtype, count) << " from each of " << n << " ranks");
      // Rank q contributes (q + 1) * (i % 5 + 1): block q of the output.
      at::Tensor want = at::cat([&] {
        std::vector<at::Tensor> blocks;
        for (int64_t q = 0; q < n; ++q) blocks.push_back(Pattern(count, q + 1, dtype));
        return blocks;
      }());
      at::Tensor out = c.On(at::zeros({n * count}, dtype));
      CATCH_REQUIRE(c.grid->world().AllGather(out, c.On(Pattern(count, c.rank + 1, dtype))).ok());
      CATCH_CHECK(Same(out, want));
      // In place: the input is this rank's block of the output.
      at::Tensor buffer = c.On(at::zeros({n * count}, dtype));
      at::Tensor slot = buffer.narrow(0, c.rank * count, count);
      slot.copy_(c.On(Pattern(count, c.rank + 1, dtype)));
      CATCH_REQUIRE(c.grid->world().AllGather(buffer, slot).ok());
      CATCH_CHECK(Same(buffer, want));
    }
  }
}

CATCH_TEST_CASE("broadcast from every root for every dtype") {
  Ctx c = World();
  for (at::ScalarType dtype : kDtypes) {
    for (int64_t count : {0, 7, 1000}) {
      for (int root = 0; root < c.n; ++root) {
        CATCH_INFO(Name(dtype, count) << " from root " << root);
        at::Tensor t = c.On(c.rank == root ? Pattern(count, root + 1, dtype) : at::zeros({count}, dtype));
        CATCH_REQUIRE(c.grid->world().Broadcast(t, root).ok());
        CATCH_CHECK(Same(t, Pattern(count, root + 1, dtype)));
      }
    }
  }
  // A large one, once.
  at::Tensor big = c.On(c.rank == 0 ? Pattern(1 << 18, 3, at::kFloat) : at::zeros({1 << 18}, at::kFloat));
  CATCH_REQUIRE(c.grid->world().Broadcast(big, 0).ok());
  CATCH_CHECK(Same(big, Pattern(1 << 18, 3, at::kFloat)));
}

CATCH_TEST_CASE("batched send/recv: rings in both directions and mixed dtypes") {
  Ctx c = World();
  const int next = (c.rank + 1) % c.n, prev = (c.rank + c.n - 1) % c.n;
  for (at::ScalarType dtype : kDtypes) {
    CATCH_INFO(c10::toString(dtype));
    // Every rank sends to both neighbours and receives from both, in one batch; with one or two
    // ranks the neighbours coincide (the matching is by order).
    at::Tensor to_next = c.On(Pattern(11, c.rank + 1, dtype));
    at::Tensor to_prev = c.On(Pattern(3, c.rank + 2, dtype));
    at::Tensor from_prev = c.On(at::zeros({11}, dtype));
    at::Tensor from_next = c.On(at::zeros({3}, dtype));
    CATCH_REQUIRE(
        c.grid->world()
            .SendRecv({P2POp{P2POp::Kind::kSend, to_next, next}, P2POp{P2POp::Kind::kSend, to_prev, prev},
                       P2POp{P2POp::Kind::kRecv, from_prev, prev},
                       P2POp{P2POp::Kind::kRecv, from_next, next}})
            .ok());
    CATCH_CHECK(Same(from_prev, Pattern(11, prev + 1, dtype)));
    CATCH_CHECK(Same(from_next, Pattern(3, next + 2, dtype)));
  }
  // Blocking Send/Recv in pairs (0 <-> 1, 2 <-> 3, ...); an odd rank out sends to itself.
  const int partner = (c.rank ^ 1) < c.n ? (c.rank ^ 1) : c.rank;
  at::Tensor mine = c.On(Pattern(5, c.rank + 1, at::kLong));
  at::Tensor theirs = c.On(at::zeros({5}, at::kLong));
  CATCH_REQUIRE(
      c.grid->world()
          .SendRecv({P2POp{P2POp::Kind::kSend, mine, partner}, P2POp{P2POp::Kind::kRecv, theirs, partner}})
          .ok());
  CATCH_CHECK(Same(theirs, Pattern(5, partner + 1, at::kLong)));
}

CATCH_TEST_CASE("asynchronous collectives waited out of order, and a barrier") {
  Ctx c = World();
  std::vector<at::Tensor> tensors;
  std::vector<std::unique_ptr<tessera::parallel::Work>> works;
  for (int i = 0; i < 6; ++i) {
    tensors.push_back(c.On(at::full({64}, static_cast<double>(c.rank + i), at::kDouble)));
    auto work = c.grid->world().AllReduceAsync(tensors.back(), ReduceOp::kSum);
    CATCH_REQUIRE(work.ok());
    works.push_back(std::move(*work));
  }
  for (int i = 5; i >= 0; --i) {
    CATCH_REQUIRE(works[i]->Wait().ok());
    CATCH_CHECK(works[i]->IsCompleted());
    const double want = c.n * (c.n - 1) / 2.0 + static_cast<double>(c.n) * i;
    CATCH_CHECK(Same(tensors[i], at::full({64}, want, at::kDouble)));
  }
  // Sequence numbers count the group's collectives, the same on every rank.
  const int64_t first = works[0]->record().seq;
  for (int i = 0; i < 6; ++i) CATCH_CHECK(works[i]->record().seq == first + i);
  CATCH_CHECK(c.grid->world().Barrier().ok());
}

CATCH_TEST_CASE("counts above the per-call limit are split into several calls") {
  // max_count 5 makes every operation below take the chunked path of the MPI backend.
  Ctx c = World(5);
  const int64_t n = c.n;
  const double sum = n * (n + 1) / 2.0;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kLong}) {
    CATCH_INFO(c10::toString(dtype));
    at::Tensor t = c.On(Pattern(23, c.rank + 1, dtype));
    CATCH_REQUIRE(c.grid->world().AllReduce(t, ReduceOp::kSum).ok());
    CATCH_CHECK(Same(t, Pattern(23, sum, dtype)));

    at::Tensor out = c.On(at::zeros({11}, dtype));
    CATCH_REQUIRE(
        c.grid->world().ReduceScatter(out, c.On(Pattern(n * 11, c.rank + 1, dtype, 7)), ReduceOp::kSum).ok());
    CATCH_CHECK(Same(out, Pattern(11, sum, dtype, 7, c.rank * 11)));

    at::Tensor gathered = c.On(at::zeros({n * 12}, dtype));
    CATCH_REQUIRE(c.grid->world().AllGather(gathered, c.On(Pattern(12, c.rank + 1, dtype))).ok());
    std::vector<at::Tensor> blocks;
    for (int64_t q = 0; q < n; ++q) blocks.push_back(Pattern(12, q + 1, dtype));
    CATCH_CHECK(Same(gathered, at::cat(blocks)));

    at::Tensor b = c.On(c.rank == n - 1 ? Pattern(13, 2, dtype) : at::zeros({13}, dtype));
    CATCH_REQUIRE(c.grid->world().Broadcast(b, n - 1).ok());
    CATCH_CHECK(Same(b, Pattern(13, 2, dtype)));

    const int next = (c.rank + 1) % n, prev = (c.rank + n - 1) % n;
    at::Tensor got = c.On(at::zeros({17}, dtype));
    CATCH_REQUIRE(c.grid->world()
                      .SendRecv({P2POp{P2POp::Kind::kSend, c.On(Pattern(17, c.rank + 1, dtype)), next},
                                 P2POp{P2POp::Kind::kRecv, got, prev}})
                      .ok());
    CATCH_CHECK(Same(got, Pattern(17, prev + 1, dtype)));
  }
}

CATCH_TEST_CASE("argument errors name the operation and the sizes, before any communication") {
  Ctx c = World();
  Communicator& world = c.grid->world();
  auto rs = world.ReduceScatter(c.On(at::zeros({2})), c.On(at::zeros({2 * c.n + 1})), ReduceOp::kSum);
  CATCH_REQUIRE_FALSE(rs.ok());
  CATCH_CHECK(std::string(rs.message())
                  .find("reduce_scatter on group world: the input has " + std::to_string(2 * c.n + 1) +
                        " elements; expected group size " + std::to_string(c.n) + " x the output's 2") !=
              std::string::npos);
  auto ag = world.AllGather(c.On(at::zeros({3})), c.On(at::zeros({2})));
  CATCH_CHECK_FALSE(ag.ok());
  auto mixed = world.AllGather(c.On(at::zeros({2 * c.n}, at::kFloat)), c.On(at::zeros({2}, at::kHalf)));
  CATCH_CHECK_FALSE(mixed.ok());
  auto dtype = world.AllReduce(c.On(at::zeros({2}, at::kBool)), ReduceOp::kSum);
  CATCH_REQUIRE_FALSE(dtype.ok());
  CATCH_CHECK(std::string(dtype.message()).find("has dtype Bool; supported: float32, bfloat16") !=
              std::string::npos);
  auto strided = world.AllReduce(c.On(at::zeros({4, 4})).t(), ReduceOp::kSum);
  CATCH_REQUIRE_FALSE(strided.ok());
  CATCH_CHECK(std::string(strided.message()).find("is not contiguous") != std::string::npos);
  CATCH_CHECK_FALSE(world.Broadcast(c.On(at::zeros({1})), c.n).ok());
  CATCH_CHECK_FALSE(world.Send(c.On(at::zeros({1})), -1).ok());
  CATCH_CHECK_FALSE(world.AllReduce(at::Tensor(), ReduceOp::kSum).ok());
  // Nothing was sent: the next collective still matches on every rank.
  CATCH_CHECK(world.Barrier().ok());
}

namespace {

struct Layout {
  ParallelDims dims;
  std::string order;
};

// Layouts tried for each world size.
std::vector<Layout> Layouts(int n) {
  switch (n) {
    case 1:
      return {{{1, 1, 1}, "tp-dp-pp"}};
    case 2:
      return {{{2, 1, 1}, "tp-dp-pp"}, {{1, 2, 1}, "tp-dp-pp"}, {{1, 1, 0}, "tp-dp-pp"}};
    case 3:
      return {{{3, 1, 1}, "tp-dp-pp"}, {{1, 3, 0}, "pp-tp-dp"}};
    case 4:
      return {{{2, 2, 1}, "tp-dp-pp"}, {{2, 1, 2}, "dp-tp-pp"}, {{1, 4, 1}, "tp-dp-pp"}};
    case 8:
      return {
          {{2, 2, 2}, "tp-dp-pp"}, {{2, 2, 2}, "pp-tp-dp"}, {{2, 4, 1}, "tp-dp-pp"}, {{4, 1, 2}, "dp-pp-tp"}};
    default:
      return {{{1, 1, 0}, "tp-dp-pp"}};
  }
}

std::vector<int> Ints(const std::vector<int64_t>& v) { return std::vector<int>(v.begin(), v.end()); }

// Sum of the world ranks of a group, the result of an all-reduce of the world rank over it.
int64_t Sum(const std::vector<int>& ranks) { return std::accumulate(ranks.begin(), ranks.end(), int64_t{0}); }

}  // namespace

CATCH_TEST_CASE("group communicators of several layouts match the topology") {
  const int n = TestRuntime()->world_size();
  for (const Layout& layout : Layouts(n)) {
    CATCH_INFO("tp " << layout.dims.tp << " pp " << layout.dims.pp << " dp " << layout.dims.dp << " "
                     << layout.order << " on " << n << " ranks");
    auto made = MakeGrid(layout.dims, layout.order);
    CATCH_REQUIRE(made.ok());
    ProcessGrid& grid = **made;
    const auto& topo = grid.topology();
    const int rank = grid.rank();
    CATCH_CHECK(grid.coords() == topo.CoordinatesOf(rank));
    struct Check {
      Communicator* comm;
      std::vector<int> want;
    };
    std::vector<Check> checks = {{&grid.world(),
                                  [&] {
                                    std::vector<int> all(n);
                                    std::iota(all.begin(), all.end(), 0);
                                    return all;
                                  }()},
                                 {&grid.tp(), Ints(topo.GroupOf(Dim::kTensor, rank))},
                                 {&grid.pp(), Ints(topo.GroupOf(Dim::kPipeline, rank))},
                                 {&grid.dp(), Ints(topo.GroupOf(Dim::kData, rank))},
                                 {&grid.model(), Ints(topo.ModelGroupOf(rank))}};
    const auto embedding = Ints(topo.EmbeddingGroupOf(rank));
    CATCH_CHECK((grid.embedding() != nullptr) == !embedding.empty());
    if (grid.embedding()) checks.push_back({grid.embedding(), embedding});
    // One collective per group, in the same order on every rank (embedding last: only its
    // members call it).
    for (const Check& check : checks) {
      CATCH_INFO("group " << check.comm->name());
      CATCH_CHECK(check.comm->world_ranks() == check.want);
      CATCH_CHECK(check.comm->world_ranks()[check.comm->rank()] == rank);
      at::Tensor t = at::full({3}, static_cast<int64_t>(rank), at::kLong);
      if (grid.device_index() >= 0) t = t.to(at::Device(at::kCUDA, grid.device_index()));
      CATCH_REQUIRE(check.comm->AllReduce(t, ReduceOp::kSum).ok());
      CATCH_CHECK(t.cpu()[0].item<int64_t>() == Sum(check.want));
    }
    // Activations along the pipeline: each stage sends its rank to the next stage.
    Communicator& pp = grid.pp();
    std::vector<P2POp> ops;
    at::Tensor out = at::full({2}, static_cast<int64_t>(rank), at::kLong);
    at::Tensor in = at::full({2}, int64_t{-1}, at::kLong);
    if (grid.device_index() >= 0) {
      out = out.to(at::Device(at::kCUDA, grid.device_index()));
      in = in.to(at::Device(at::kCUDA, grid.device_index()));
    }
    if (!grid.is_last_stage()) ops.push_back({P2POp::Kind::kSend, out, pp.rank() + 1});
    if (!grid.is_first_stage()) ops.push_back({P2POp::Kind::kRecv, in, pp.rank() - 1});
    if (!ops.empty()) {
      CATCH_REQUIRE(pp.SendRecv(ops).ok());
      if (!grid.is_first_stage()) CATCH_CHECK(in.cpu()[0].item<int64_t>() == pp.world_ranks()[pp.rank() - 1]);
    }
    CATCH_CHECK(grid.world().Barrier().ok());
  }
}

CATCH_TEST_CASE("8 ranks, tp2 pp2 dp2, tp-dp-pp: groups as worked out by hand") {
  const int n = TestRuntime()->world_size();
  if (n != 8) return;
  auto made = MakeGrid({2, 2, 2}, "tp-dp-pp");
  CATCH_REQUIRE(made.ok());
  ProcessGrid& grid = **made;
  // rank = tp + 2 * (dp + 2 * pp):
  //   rank:  0 1 2 3 4 5 6 7        tp groups {0,1} {2,3} {4,5} {6,7}
  //   tp:    0 1 0 1 0 1 0 1        dp groups {0,2} {1,3} {4,6} {5,7}
  //   dp:    0 0 1 1 0 0 1 1        pp groups {0,4} {1,5} {2,6} {3,7} = embedding groups
  //   pp:    0 0 0 0 1 1 1 1        model groups {0,1,4,5} {2,3,6,7}
  const std::map<int, std::vector<std::vector<int>>> table = {
      {0, {{0, 1}, {0, 2}, {0, 4}, {0, 1, 4, 5}}}, {1, {{0, 1}, {1, 3}, {1, 5}, {0, 1, 4, 5}}},
      {2, {{2, 3}, {0, 2}, {2, 6}, {2, 3, 6, 7}}}, {3, {{2, 3}, {1, 3}, {3, 7}, {2, 3, 6, 7}}},
      {4, {{4, 5}, {4, 6}, {0, 4}, {0, 1, 4, 5}}}, {5, {{4, 5}, {5, 7}, {1, 5}, {0, 1, 4, 5}}},
      {6, {{6, 7}, {4, 6}, {2, 6}, {2, 3, 6, 7}}}, {7, {{6, 7}, {5, 7}, {3, 7}, {2, 3, 6, 7}}}};
  const auto& row = table.at(grid.rank());
  CATCH_CHECK(grid.tp().world_ranks() == row[0]);
  CATCH_CHECK(grid.dp().world_ranks() == row[1]);
  CATCH_CHECK(grid.pp().world_ranks() == row[2]);
  CATCH_CHECK(grid.model().world_ranks() == row[3]);
  CATCH_REQUIRE(grid.embedding() != nullptr);
  CATCH_CHECK(grid.embedding()->world_ranks() == row[2]);
  CATCH_CHECK(grid.LogPrefix() ==
              "[rank " + std::to_string(grid.rank()) + " tp" + std::to_string(grid.rank() % 2) + " pp" +
                  std::to_string(grid.rank() / 4) + " dp" + std::to_string((grid.rank() / 2) % 2) + "]");
  if (grid.rank() == 0) {
    const std::string summary = grid.Summary();
    CATCH_CHECK(summary.find("layout: world 8 = tp 2 x pp 2 x dp 2, order tp-dp-pp; backend") !=
                std::string::npos);
    CATCH_CHECK(summary.find("versions: Tessera ") != std::string::npos);
  }
}

CATCH_TEST_CASE("a layout that does not fit the world is an error naming the numbers") {
  const int n = TestRuntime()->world_size();
  auto bad = MakeGrid({static_cast<int64_t>(n) + 1, 1, 1});
  CATCH_REQUIRE_FALSE(bad.ok());
  CATCH_CHECK(
      std::string(bad.status().message()).find("world size " + std::to_string(n) + " != tp x pp x dp") !=
      std::string::npos);
}
