// Tests of the pipeline executor (parallel/pipeline/executor.h) as every rank of a real job runs
// it: as one process (pp = 1, chunks passing tensors in memory) and under mpirun with 2 and 4
// ranks (pp = 2 and 4, and pp = 2 x dp = 2). The model is a chain of kLayers Linear + tanh layers
// of varying widths (so every chunk boundary carries a different activation shape), fp32, seeded
// identically on every rank; the loss is the mean squared error against a seeded target, scaled
// by 1/m. Every rank also computes the unsplit model locally, micro-batch after micro-batch, and
// compares the pipeline's total loss and the gradients of its own layers with it.
//
// Tolerance: the pipeline runs the same operations on the same values as the unsplit model,
// micro-batch by micro-batch, and every schedule backwards the micro-batches of a chunk in
// ascending order, so the gradients accumulate in the same order too; the split backward (I, W)
// computes each weight gradient by the same product. The results are expected bitwise equal (and
// were, on this machine); kTol = 1e-6 relative to the largest reference value (about 16 float32
// ulps) only leaves room for a BLAS that picks another kernel for a differently aligned buffer,
// a last-bit change per product compounded over the 8 layers. A real mistake (a wrong or
// missing micro-batch, a gradient dropped or counted twice) changes values by 1e-2 or more.
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "parallel/pipeline/executor.h"
#include "parallel/pipeline/partition.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/pipeline/simulator.h"
#include "parallel/process_grid.h"
#include "tests/catch_compat.h"
#include "tests/parallel/comm/comm_test_util.h"

namespace pl = tessera::parallel::pipeline;
using tessera::parallel::Communicator;
using tessera::parallel::ProcessGrid;
using tessera::parallel::ReduceOp;
using tessera::parallel::testing::MakeGrid;
using tessera::parallel::testing::TestRuntime;

namespace {

constexpr double kTol = 1e-6;  // see the file comment
constexpr int64_t kLayers = 8;
constexpr int64_t kRows = 3;  // rows of one micro-batch

// The width entering layer l (l = kLayers: the output). 4, 6, 5, 4, 6, ...
int64_t Width(int64_t l) { return 4 + (l * 2) % 3; }

at::Tensor Randn(std::vector<int64_t> shape, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat));
}

struct Layer {
  at::Tensor weight, bias;
};

// All kLayers layers, the same on every rank.
std::vector<Layer> MakeLayers() {
  std::vector<Layer> layers;
  for (int64_t l = 0; l < kLayers; ++l) {
    const double scale = 1.0 / std::sqrt(static_cast<double>(Width(l)));
    layers.push_back({(Randn({Width(l + 1), Width(l)}, 1000 + l) * scale).requires_grad_(true),
                      (Randn({Width(l + 1)}, 2000 + l) * 0.1).requires_grad_(true)});
  }
  return layers;
}

at::Tensor Input(int64_t mb) { return Randn({kRows, Width(0)}, 7000 + mb); }
at::Tensor Target(int64_t mb) { return Randn({kRows, Width(kLayers)}, 9000 + mb); }

at::Tensor Apply(const std::vector<Layer>& layers, int64_t first, int64_t count, at::Tensor x) {
  for (int64_t l = first; l < first + count; ++l)
    x = at::tanh(at::linear(x, layers[l].weight, layers[l].bias));
  return x;
}

at::Tensor Loss(const at::Tensor& out, int64_t mb, int64_t m) {
  return (out - Target(mb)).pow(2).mean() / static_cast<double>(m);
}

// The unsplit model, micro-batch after micro-batch, as a single process would train it.
struct Reference {
  double loss = 0;
  std::vector<Layer> grads;
};

Reference ComputeReference(int64_t m) {
  std::vector<Layer> layers = MakeLayers();
  Reference ref;
  for (int64_t mb = 0; mb < m; ++mb) {
    at::Tensor loss = Loss(Apply(layers, 0, kLayers, Input(mb)), mb, m);
    loss.backward();
    ref.loss += loss.item<double>();
  }
  for (const Layer& l : layers) ref.grads.push_back({l.weight.grad(), l.bias.grad()});
  return ref;
}

// The toy model's chunks on one pipeline rank. It holds all layers (identical everywhere) but
// runs only its own; the others must end without gradients.
class ToyStage : public pl::PipelineStage {
 public:
  ToyStage(pl::Partition partition, int64_t rank, int64_t m)
      : partition_(std::move(partition)), rank_(rank), m_(m), layers_(MakeLayers()) {}

  at::Tensor Forward(int chunk, int mb, const at::Tensor& input) override {
    ++forwards_;
    TORCH_CHECK(!(chunk == fail_chunk_ && mb == fail_mb_), "injected failure");
    at::Tensor x = partition_.HasEmbedding(rank_, chunk) ? Input(mb) : input;
    x = Apply(layers_, partition_.FirstLayer(rank_, chunk), partition_.NumLayers(rank_, chunk), x);
    return partition_.HasHead(rank_, chunk) ? Loss(x, mb, m_) : x;
  }
  std::vector<int64_t> ActivationShape(int chunk) const override {
    return {kRows, Width(partition_.FirstLayer(rank_, chunk))};
  }
  at::ScalarType ActivationDtype() const override { return at::kFloat; }
  std::vector<at::Tensor> ChunkParameters(int chunk) const override {
    std::vector<at::Tensor> params;
    const int64_t first = partition_.FirstLayer(rank_, chunk);
    for (int64_t l = first; l < first + partition_.NumLayers(rank_, chunk); ++l) {
      params.push_back(layers_[l].weight);
      params.push_back(layers_[l].bias);
    }
    return params;
  }

  void ZeroGrad() {
    for (Layer& l : layers_) {
      l.weight.mutable_grad().reset();
      l.bias.mutable_grad().reset();
    }
  }
  // Whether layer l is on one of this rank's chunks.
  bool Owns(int64_t l) const {
    for (int64_t c = 0; c < partition_.v; ++c) {
      const int64_t first = partition_.FirstLayer(rank_, c);
      if (l >= first && l < first + partition_.NumLayers(rank_, c)) return true;
    }
    return false;
  }
  const std::vector<Layer>& layers() const { return layers_; }
  int64_t forwards() const { return forwards_; }
  void FailAt(int chunk, int mb) { fail_chunk_ = chunk, fail_mb_ = mb; }

 private:
  pl::Partition partition_;
  int64_t rank_, m_;
  std::vector<Layer> layers_;
  int64_t forwards_ = 0;
  int fail_chunk_ = -1, fail_mb_ = -1;
};

// |got - want| <= kTol * max |want|, elementwise, with the worst difference reported.
void CheckClose(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  CATCH_INFO(what);
  CATCH_REQUIRE(got.defined());
  CATCH_REQUIRE(got.sizes() == want.sizes());
  const double scale = want.abs().max().item<double>();
  const double diff = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  CATCH_INFO("max |difference| " << diff << ", allowed " << kTol * scale);
  CATCH_CHECK(diff <= kTol * scale);
}

// A pipeline group of `pp` ranks (the rest of the world is data-parallel: independent copies).
struct Pipeline {
  std::unique_ptr<ProcessGrid> grid;
  Communicator* comm = nullptr;
  int64_t pp = 1;
  int64_t rank = 0;
};

Pipeline MakePipeline(int64_t pp) {
  Pipeline p;
  auto grid = MakeGrid({1, pp, 0});
  if (!grid.ok()) CATCH_FAIL(std::string(grid.status().message()));
  p.grid = std::move(*grid);
  p.comm = &p.grid->pp();
  p.pp = p.comm->size();
  p.rank = p.comm->rank();
  return p;
}

// The pipeline sizes this world can form.
std::vector<int64_t> Degrees() {
  std::vector<int64_t> degrees;
  for (int64_t n : {1, 2, 4}) {
    if (TestRuntime()->world_size() % n == 0) degrees.push_back(n);
  }
  return degrees;
}

const Reference& ReferenceFor(int64_t m) {
  static std::map<int64_t, Reference> cache;
  auto it = cache.find(m);
  if (it == cache.end()) it = cache.emplace(m, ComputeReference(m)).first;
  return it->second;
}

// Runs `schedule` for two steps (gradients zeroed in between, so the second shows that nothing
// of the first step stayed behind) and compares each with the unsplit model.
void RunAndCompare(Pipeline& p, const pl::Schedule& schedule, const pl::Partition& partition,
                   const std::string& label) {
  CATCH_INFO(label << ", pipeline rank " << p.rank);
  const int64_t m = schedule.microbatches;
  const Reference& ref = ReferenceFor(m);
  ToyStage stage(partition, p.rank, m);
  auto executor = pl::PipelineExecutor::Create(schedule, *p.comm, stage, at::kCPU);
  if (!executor.ok()) CATCH_FAIL(std::string(executor.status().message()));
  for (int step = 0; step < 2; ++step) {
    CATCH_INFO("step " << step);
    stage.ZeroGrad();
    auto loss = (*executor)->RunStep();
    if (!loss.ok()) CATCH_FAIL(std::string(loss.status().message()));
    CATCH_CHECK((*loss != 0) == (*executor)->HoldsLoss());
    // Only the last rank has the loss; the sum over the pipeline is its value.
    at::Tensor total = at::full({1}, *loss, at::kDouble);
    CATCH_REQUIRE(p.comm->AllReduce(total, ReduceOp::kSum).ok());
    CATCH_CHECK(std::abs(total.item<double>() - ref.loss) <= kTol * std::abs(ref.loss));
    for (int64_t l = 0; l < kLayers; ++l) {
      const Layer& got = stage.layers()[l];
      if (!stage.Owns(l)) {
        CATCH_CHECK(!got.weight.grad().defined());
        continue;
      }
      CheckClose(got.weight.grad(), ref.grads[l].weight, "weight gradient of layer " + std::to_string(l));
      CheckClose(got.bias.grad(), ref.grads[l].bias, "bias gradient of layer " + std::to_string(l));
    }
    // Liveness as the simulator counts it, from the list order alone: the same number.
    const pl::PipelineStats& stats = (*executor)->stats();
    CATCH_CHECK(stats.peak_live == (*executor)->prediction().peak_live[p.rank]);
    CATCH_CHECK(stats.timeline.size() == schedule.actions[p.rank].size());
  }
  CATCH_CHECK(stage.forwards() == 2 * m * schedule.v);
}

// One micro-batch count per distinct value of {1, pp, 2pp}.
std::vector<int64_t> MicrobatchCounts(int64_t pp) {
  std::set<int64_t> counts{1, pp, 2 * pp};
  return {counts.begin(), counts.end()};
}

pl::Schedule Parse(const std::string& text) {
  auto schedule = pl::ParseSchedule(text);
  if (!schedule.ok()) CATCH_FAIL(std::string(schedule.status().message()));
  return *schedule;
}

}  // namespace

CATCH_TEST_CASE("every built-in schedule gives the unsplit model's loss and gradients") {
  for (int64_t pp : Degrees()) {
    Pipeline p = MakePipeline(pp);
    for (const std::string name : {"gpipe", "1f1b", "interleaved", "zb-h1"}) {
      const int64_t v = name == "interleaved" ? 2 : 1;
      for (int64_t m : MicrobatchCounts(pp)) {
        if (name == "interleaved" && m % pp != 0) continue;  // the schedule needs m % pp == 0
        auto schedule = pl::MakeSchedule(name, pp, m, v);
        auto partition = pl::BalancedPartition(kLayers, pp, v);
        CATCH_REQUIRE(schedule.ok());
        CATCH_REQUIRE(partition.ok());
        RunAndCompare(
            p, *schedule, *partition,
            name + ", pp " + std::to_string(pp) + ", v " + std::to_string(v) + ", m " + std::to_string(m));
      }
    }
  }
}

CATCH_TEST_CASE("an unbalanced explicit partition runs 1f1b and zb-h1") {
  for (int64_t pp : Degrees()) {
    Pipeline p = MakePipeline(pp);
    const std::vector<int64_t> counts = pp == 1   ? std::vector<int64_t>{8}
                                        : pp == 2 ? std::vector<int64_t>{5, 3}
                                                  : std::vector<int64_t>{1, 3, 2, 2};
    auto partition = pl::ExplicitPartition(kLayers, pp, 1, counts);
    CATCH_REQUIRE(partition.ok());
    for (const std::string name : {"1f1b", "zb-h1"}) {
      auto schedule = pl::MakeSchedule(name, pp, 2 * pp + 1, 1);
      CATCH_REQUIRE(schedule.ok());
      RunAndCompare(p, *schedule, *partition, name + " explicit, pp " + std::to_string(pp));
    }
  }
}

CATCH_TEST_CASE("a schedule parsed from text runs") {
  // Hand-written, not what a generator makes: B and I/W mixed, W deferred past a later B.
  const int64_t world = TestRuntime()->world_size();
  const int64_t pp = world % 2 == 0 ? 2 : 1;
  Pipeline p = MakePipeline(pp);
  const std::string text = pp == 2
                               ? "name hand-mixed\n"
                                 "0F0 0SA0 0F1 0SA1 0RG0 0B0 0F2 0SA2 0RG1 0I1 0W1 0RG2 0B2  # rank 0\n"
                                 "0RA0 0F0 0RA1 0F1 0I0 0SG0 0B1 0SG1 0W0 0RA2 0F2 0I2 0SG2 0W2  # rank 1\n"
                               : "name hand-mixed-v2\n0F0 1F0 1I0 0B0 0F1 1F1 1B1 1W0 0I1 0W1\n";
  const pl::Schedule schedule = Parse(text);
  auto partition = pl::BalancedPartition(kLayers, pp, schedule.v);
  CATCH_REQUIRE(partition.ok());
  RunAndCompare(p, schedule, *partition, schedule.name);
}

CATCH_TEST_CASE("an inconsistent schedule is refused before running, naming rank and action") {
  const int64_t world = TestRuntime()->world_size();
  const int64_t pp = world % 2 == 0 ? 2 : 1;
  Pipeline p = MakePipeline(pp);
  auto partition = pl::BalancedPartition(kLayers, pp, 1);
  CATCH_REQUIRE(partition.ok());
  ToyStage stage(*partition, p.rank, 1);
  auto refused = [&](const pl::Schedule& schedule) {
    auto executor = pl::PipelineExecutor::Create(schedule, *p.comm, stage, at::kCPU);
    CATCH_REQUIRE(!executor.ok());
    return std::string(executor.status().message());
  };
  if (pp == 2) {
    // A backward before its forward (the static checks).
    const std::string order = refused(Parse("0F0 0SA0 0RG0 0B0\n0RA0 0B0 0F0 0SG0\n"));
    CATCH_INFO(order);
    CATCH_CHECK(order.find("rank 1 (line 2) action 2 '0B0'") != std::string::npos);
    // Statically consistent, but each rank waits for the other (the simulation).
    const std::string deadlock = refused(Parse("0RG0 0F0 0SA0 0B0\n0RA0 0F0 0B0 0SG0\n"));
    CATCH_INFO(deadlock);
    CATCH_CHECK(deadlock.find("deadlock") != std::string::npos);
    CATCH_CHECK(deadlock.find("rank 0 (line 1) action 1 '0RG0'") != std::string::npos);
  } else {
    const std::string order = refused(Parse("0B0 0F0\n"));
    CATCH_INFO(order);
    CATCH_CHECK(order.find("rank 0 (line 1) action 1 '0B0'") != std::string::npos);
  }
  // A schedule for another pipeline size.
  auto other = pl::OneFOneBSchedule(pp + 1, 2);
  CATCH_REQUIRE(other.ok());
  const std::string size = refused(*other);
  CATCH_INFO(size);
  CATCH_CHECK(size.find("is for pp " + std::to_string(pp + 1) + " ranks") != std::string::npos);
}

CATCH_TEST_CASE("measured peak live activations and the stats follow the schedule") {
  const int64_t pp = Degrees().back();
  Pipeline p = MakePipeline(pp);
  const int64_t m = 2 * pp;
  auto partition = pl::BalancedPartition(kLayers, pp, 1);
  CATCH_REQUIRE(partition.ok());
  for (const std::string name : {"gpipe", "1f1b"}) {
    CATCH_INFO(name << ", pp " << pp << ", m " << m << ", rank " << p.rank);
    auto schedule = pl::MakeSchedule(name, pp, m, 1);
    CATCH_REQUIRE(schedule.ok());
    ToyStage stage(*partition, p.rank, m);
    auto executor = pl::PipelineExecutor::Create(*schedule, *p.comm, stage, at::kCPU);
    CATCH_REQUIRE(executor.ok());
    CATCH_REQUIRE((*executor)->RunStep().ok());
    const pl::PipelineStats& stats = (*executor)->stats();
    if (name == "gpipe") {
      if (p.rank == 0) CATCH_CHECK(stats.peak_live == m);  // all forwards before any backward
    } else {
      CATCH_CHECK(stats.peak_live <= pp);
      CATCH_CHECK(stats.peak_live == pp - p.rank);
    }
    // One exchange per run of communication actions; compute and waiting are parts of the step.
    const std::vector<pl::Action>& list = schedule->actions[p.rank];
    int64_t exchanges = 0;
    for (size_t i = 0; i < list.size(); ++i)
      exchanges += !list[i].IsCompute() && (i == 0 || list[i - 1].IsCompute());
    CATCH_CHECK(stats.exchanges == exchanges);
    CATCH_CHECK(stats.compute_s > 0);
    CATCH_CHECK(stats.wait_s >= 0);
    CATCH_CHECK(stats.compute_s + stats.wait_s <= stats.step_s);
    CATCH_CHECK(stats.IdleFraction() >= 0);
    CATCH_CHECK(stats.IdleFraction() < 1);
    // Every activation that leaves a rank is a float32 [kRows, width] tensor.
    if (pp > 1 && p.rank == 0)
      CATCH_CHECK(stats.bytes_sent == m * kRows * Width(partition->FirstLayer(1, 0)) * 4);
  }
}

CATCH_TEST_CASE("an exception in the stage becomes an error naming the action, and the next step runs") {
  // pp = 1 with two chunks: no peer is left waiting when this rank stops.
  Pipeline p = MakePipeline(1);
  auto schedule = pl::MakeSchedule("interleaved", 1, 2, 2);
  auto partition = pl::BalancedPartition(kLayers, 1, 2);
  CATCH_REQUIRE(schedule.ok());
  CATCH_REQUIRE(partition.ok());
  ToyStage stage(*partition, 0, 2);
  auto executor = pl::PipelineExecutor::Create(*schedule, *p.comm, stage, at::kCPU);
  CATCH_REQUIRE(executor.ok());
  stage.FailAt(1, 1);
  auto failed = (*executor)->RunStep();
  CATCH_REQUIRE(!failed.ok());
  const std::string message(failed.status().message());
  CATCH_INFO(message);
  CATCH_CHECK(message.find("rank 0") != std::string::npos);
  CATCH_CHECK(message.find("action 6 '1F1' (chunk 1, micro-batch 1)") != std::string::npos);
  CATCH_CHECK(message.find("injected failure") != std::string::npos);
  // The failed step's tensors are gone: a clean step gives the reference again.
  stage.FailAt(-1, -1);
  stage.ZeroGrad();
  auto loss = (*executor)->RunStep();
  CATCH_REQUIRE(loss.ok());
  CATCH_CHECK(std::abs(*loss - ReferenceFor(2).loss) <= kTol * std::abs(ReferenceFor(2).loss));
  for (int64_t l = 0; l < kLayers; ++l) {
    CheckClose(stage.layers()[l].weight.grad(), ReferenceFor(2).grads[l].weight,
               "layer " + std::to_string(l));
  }
}

CATCH_TEST_CASE("a forward-only schedule evaluates: the unsplit model's loss, no gradients kept") {
  for (int64_t pp : Degrees()) {
    Pipeline p = MakePipeline(pp);
    for (int64_t v : {1, 2}) {
      for (int64_t m : MicrobatchCounts(pp)) {
        CATCH_INFO("forward-only, pp " << pp << ", v " << v << ", m " << m << ", pipeline rank " << p.rank);
        auto schedule = pl::ForwardOnlySchedule(pp, m, v);
        auto partition = pl::BalancedPartition(kLayers, pp, v);
        CATCH_REQUIRE(schedule.ok());
        CATCH_REQUIRE(partition.ok());
        ToyStage stage(*partition, p.rank, m);
        auto executor = pl::PipelineExecutor::Create(*schedule, *p.comm, stage, at::kCPU);
        if (!executor.ok()) CATCH_FAIL(std::string(executor.status().message()));
        for (int step = 0; step < 2; ++step) {
          auto loss = (*executor)->RunStep();
          if (!loss.ok()) CATCH_FAIL(std::string(loss.status().message()));
          CATCH_CHECK((*loss != 0) == (*executor)->HoldsLoss());
          at::Tensor total = at::full({1}, *loss, at::kDouble);
          CATCH_REQUIRE(p.comm->AllReduce(total, ReduceOp::kSum).ok());
          const double want = ReferenceFor(m).loss;
          CATCH_CHECK(std::abs(total.item<double>() - want) <= kTol * std::abs(want));
          CATCH_CHECK((*executor)->stats().peak_live == 1);
        }
        for (const Layer& l : stage.layers()) CATCH_CHECK_FALSE(l.weight.grad().defined());
        CATCH_CHECK(stage.forwards() == 2 * m * v);
      }
    }
  }
}
