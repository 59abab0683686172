// The column-parallel layers' backward overlaps the input gradient's collective with the weight
// gradient (parallel/tensor_parallel/layers.h): checked without a GPU by the order of events on
// each rank, run as one process and under mpirun with 2 and 4 ranks.
//
// The weight-gradient GEMM is seen through ATen's RecordFunction: the aten::mm whose operands are
// [out, tokens] and [tokens, in] (the shapes are chosen so that no other product has them). The
// collectives are seen through the watchdog's records: a collective is in flight from its start
// until its Wait() (MPI records completion there). So "the input gradient's collective is in
// flight at the start and at the end of the weight-gradient GEMM, and nothing is in flight once
// the backward returned" is the order start -> GEMM -> wait. The same layers' gradients are
// compared bit for bit with the composition of kernels::Linear and the mappings (the layers'
// arithmetic without the overlap), in fp32 and bf16, with and without sequence parallelism, in
// one backward and in a zero-bubble schedule's input and weight passes.
#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/linear.h"
#include "kernels/rms_norm.h"
#include "kernels/weight_grad.h"
#include "parallel/process_grid.h"
#include "parallel/tensor_parallel/layers.h"
#include "parallel/tensor_parallel/mappings.h"
#include "parallel/tensor_parallel/norm_column_linear.h"
#include "tests/catch_compat.h"
#include "tests/parallel/comm/comm_test_util.h"

namespace tp = tessera::parallel;
using tessera::parallel::testing::MakeGrid;
using tessera::parallel::testing::TestRuntime;

namespace {

// batch x seq = 16 tokens, 12 input features, 8/n + 2 output rows per rank (10, 6 or 4): the
// weight-gradient product [rows, 16] x [16, 12] is the only one of its shape.
constexpr int64_t kBatch = 2, kSeq = 8, kIn = 12;

// What the watchdog has in flight: "all_reduce of tp", or "nothing".
std::string InFlight() {
  const auto op = TestRuntime()->watchdog().OldestInFlight();
  if (op == nullptr) return "nothing";
  return op->op + " of " + (op->group ? op->group->name : std::string("-"));
}

// The events of one backward pass. RecordFunction takes plain function pointers, so the log is
// file-wide; the tests run on one thread.
struct EventLog {
  std::mutex mu;
  int64_t rows = 0;  // the weight-gradient product's output rows on this rank
  std::vector<std::string> events;
  void Add(std::string event) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(std::move(event));
  }
};
EventLog g_log;

bool IsWeightGradGemm(const at::RecordFunction& fn) {
  if (std::string_view(fn.name()) != "aten::mm") return false;
  const c10::ArrayRef<const c10::IValue> in = fn.inputs();
  if (in.size() < 2 || !in[0].isTensor() || !in[1].isTensor()) return false;
  return in[0].toTensor().sizes() == at::IntArrayRef({g_log.rows, kBatch * kSeq}) &&
         in[1].toTensor().sizes() == at::IntArrayRef({kBatch * kSeq, kIn});
}

// Marks a weight-gradient GEMM for its end callback (the inputs are gone by then).
struct WeightGemm : at::ObserverContext {};

std::unique_ptr<at::ObserverContext> OnStart(const at::RecordFunction& fn) {
  if (!IsWeightGradGemm(fn)) return nullptr;
  g_log.Add("gemm start: " + InFlight());
  return std::make_unique<WeightGemm>();
}

void OnEnd(const at::RecordFunction& /*fn*/, at::ObserverContext* ctx) {
  if (ctx != nullptr) g_log.Add("gemm end: " + InFlight());
}

// Observes the GEMMs of its scope and logs what is in flight when it closes.
class ObservedPass {
 public:
  explicit ObservedPass(int64_t rows) {
    g_log.rows = rows;
    g_log.events.clear();
    handle_ = at::addGlobalCallback(
        at::RecordFunctionCallback(OnStart, OnEnd).needsInputs(true).scopes({at::RecordScope::FUNCTION}));
  }
  ~ObservedPass() { at::removeCallback(handle_); }
  std::vector<std::string> Finish() {
    g_log.Add("returned: " + InFlight());
    return g_log.events;
  }

 private:
  at::CallbackHandle handle_;
};

enum class Variant { kColumn, kNormFolded, kComposition };

// One column layer (two weights, as q|k|v's) over RMSNorm(h), its backward observed.
struct Run {
  at::Tensor output;
  std::vector<at::Tensor> grads;                 // h, the norm's weight, the two weights
  std::vector<std::vector<std::string>> passes;  // one backward, or the input then the weight pass
};

at::Tensor Randn(std::vector<int64_t> shape, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat));
}

at::Tensor Block(const at::Tensor& t, int64_t dim, int parts, int index) {
  const int64_t block = t.size(dim) / parts;
  return t.narrow(dim, index * block, block);
}

at::Tensor Leaf(const at::Tensor& t) { return t.detach().clone().requires_grad_(true); }

// The layer's output from this rank's h.
at::Tensor Forward(Variant variant, const std::vector<at::Tensor>& leaves, at::ScalarType dtype,
                   tp::Communicator* comm, bool sp) {
  const std::vector<at::Tensor> weights = {leaves[2], leaves[3]};
  if (variant == Variant::kNormFolded) {
    return tp::NormColumnParallelLinear(leaves[0], leaves[1], 1e-5, dtype, weights, comm, sp);
  }
  const at::Tensor n =
      tessera::kernels::RmsNorm(leaves[0], tessera::kernels::Fp32Weight(leaves[1]), 1e-5, dtype);
  if (variant == Variant::kColumn) return tp::ColumnParallelLinear(n, weights, comm, sp);
  return tessera::kernels::Linear(sp ? tp::GatherFromSequence(n, comm) : tp::CopyToTensorParallel(n, comm),
                                  weights);
}

Run RunLayer(Variant variant, tp::Communicator* comm, at::ScalarType dtype, bool sp, bool split) {
  const int n = comm->size(), rank = comm->rank();
  const at::Tensor h = Randn({kBatch, kSeq, kIn}, 40);
  std::vector<at::Tensor> leaves = {Leaf(sp ? Block(h, 1, n, rank) : h),
                                    Leaf((Randn({kIn}, 42) * 0.1 + 1.0).to(dtype)),
                                    Leaf(Block(Randn({8, kIn}, 43), 0, n, rank).to(dtype)),
                                    Leaf(Block(Randn({2 * n, kIn}, 44), 0, n, rank).to(dtype))};
  // bf16 parameters get fp32 .grad, as the trainer's gradient buffers give them.
  if (dtype == at::kBFloat16) {
    for (size_t i = 1; i < leaves.size(); ++i) {
      leaves[i].mutable_grad() = at::zeros(leaves[i].sizes(), at::kFloat);
    }
  }
  Run run;
  run.output = Forward(variant, leaves, dtype, comm, sp);
  const int64_t rows = 8 / n + 2;  // the output features on this rank
  const at::Tensor upstream = Randn({kBatch, kSeq, rows}, 41 + rank);
  const at::Tensor loss = (run.output.to(at::kFloat) * upstream).sum();
  if (split) {
    {  // ZB-H1's input pass: the gradient of h alone, the graph kept for the weight pass.
      ObservedPass pass(rows);
      leaves[0].mutable_grad() = torch::autograd::grad({loss}, {leaves[0]}, {}, /*retain_graph=*/true)[0];
      run.passes.push_back(pass.Finish());
    }
    ObservedPass pass(rows);  // the weight pass: the parameters alone
    torch::autograd::backward({loss}, {}, /*retain_graph=*/false, /*create_graph=*/false,
                              std::vector<at::Tensor>(leaves.begin() + 1, leaves.end()));
    run.passes.push_back(pass.Finish());
  } else {
    ObservedPass pass(rows);
    loss.backward();
    run.passes.push_back(pass.Finish());
  }
  for (const at::Tensor& leaf : leaves) run.grads.push_back(leaf.grad());
  return run;
}

}  // namespace

CATCH_TEST_CASE("the column layers' gradients are bit for bit those of Linear and the mappings") {
  for (int tp_size : {1, 2, 4}) {
    if (TestRuntime()->world_size() % tp_size != 0) continue;
    auto grid = MakeGrid({tp_size, 1, 0});
    CATCH_REQUIRE(grid.ok());
    tp::Communicator* comm = &(*grid)->tp();
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      for (bool sp : {false, true}) {
        for (bool split : {false, true}) {
          CATCH_INFO("tp " << tp_size << ", " << c10::toString(dtype) << ", sp " << sp << ", split "
                           << split);
          const Run want = RunLayer(Variant::kComposition, comm, dtype, sp, split);
          for (Variant variant : {Variant::kColumn, Variant::kNormFolded}) {
            CATCH_INFO((variant == Variant::kColumn ? "column layer" : "norm folded into the column layer"));
            const Run got = RunLayer(variant, comm, dtype, sp, split);
            CATCH_CHECK(at::equal(got.output, want.output));
            for (size_t i = 0; i < want.grads.size(); ++i) {
              CATCH_INFO("gradient " << i);
              CATCH_REQUIRE(got.grads[i].defined());
              CATCH_CHECK(at::equal(got.grads[i], want.grads[i]));
            }
          }
        }
      }
    }
  }
}

CATCH_TEST_CASE("the input gradient's collective is in flight during the weight-gradient GEMM") {
  for (int tp_size : {2, 4}) {
    if (TestRuntime()->world_size() % tp_size != 0) continue;
    auto grid = MakeGrid({tp_size, 1, 0});
    CATCH_REQUIRE(grid.ok());
    tp::Communicator* comm = &(*grid)->tp();
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      for (bool sp : {false, true}) {
        CATCH_INFO("tp " << tp_size << ", " << c10::toString(dtype) << ", sp " << sp);
        const std::string collective = std::string(sp ? "reduce_scatter" : "all_reduce") + " of tp";
        const std::vector<std::string> overlapped = {"gemm start: " + collective, "gemm end: " + collective,
                                                     "returned: nothing"};
        for (Variant variant : {Variant::kColumn, Variant::kNormFolded}) {
          CATCH_INFO((variant == Variant::kColumn ? "column layer" : "norm folded into the column layer"));
          CATCH_CHECK(RunLayer(variant, comm, dtype, sp, /*split=*/false).passes ==
                      std::vector<std::vector<std::string>>{overlapped});
          // Split: the input pass forms no weight gradient and waits at once; the weight pass
          // forms the input gradient again (for the norm's weight) and overlaps as one backward.
          CATCH_CHECK(RunLayer(variant, comm, dtype, sp, /*split=*/true).passes ==
                      std::vector<std::vector<std::string>>{{"returned: nothing"}, overlapped});
        }
        // Without the overlap (the composition: the collective is its own node after the
        // product's), nothing is in flight during the GEMM: the observation tells the two apart.
        const std::vector<std::string> serial = {"gemm start: nothing", "gemm end: nothing",
                                                 "returned: nothing"};
        CATCH_CHECK(RunLayer(Variant::kComposition, comm, dtype, sp, /*split=*/false).passes ==
                    std::vector<std::vector<std::string>>{serial});
      }
    }
  }
}
