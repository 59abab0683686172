// Under ZeRO 1 and 2 the all-gather of the updated weights starts at the end of a step and the next
// forward waits for each unit's weights just before using them (grad_reducer.h,
// StartGatherParams; UnitGatherer::Gather from the model's forward). Checked on a small Llama
// model whose whole world is the data-parallel group, as one process and under mpirun with 2 and
// 4 ranks, at zero 1 and 2, in fp32 and bf16:
//
// - overlap, seen without a GPU by the order of events on each rank: ATen's RecordFunction marks
//   every linear product of the next forward, and the watchdog's records say which all-gathers
//   are in flight at its start (MPI records a collective's completion in its Wait). At the first
//   product of block 0 the head's weights are still on their way; at the head's product nothing
//   is. The same observation of the synchronous form (GatherParams: the wait at the end of the
//   step) finds nothing in flight anywhere, so moving the wait back to the step end fails it.
// - bytes: the gathers move the parameters' dtype, read from the watchdog's descriptions of the
//   collectives in flight: bf16, half the bytes of the fp32 run of the same layout.
// - values: the weights after the overlapped gather equal bit for bit those of the synchronous
//   path, and those of the reference "all-gather the fp32 master, then round to bf16 on every
//   rank" (rounding is elementwise, so it commutes with gathering); the next step's loss is bit
//   for bit the synchronous path's. No tolerance anywhere: the same bytes move either way.
#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"
#include "model/sharding.h"
#include "parallel/data_parallel/grad_reducer.h"
#include "parallel/process_grid.h"
#include "tests/catch_compat.h"
#include "tests/parallel/comm/comm_test_util.h"

namespace dp = tessera::parallel;
using tessera::ModelConfig;
using tessera::Transformer;
using tessera::parallel::testing::MakeGrid;
using tessera::parallel::testing::TestRuntime;

namespace {

constexpr int64_t kSeq = 16, kBatch = 2, kLayers = 4, kVocab = 96;  // no other product has 96 rows

ModelConfig Shape() {
  ModelConfig c;
  c.dim = 64;
  c.n_layers = kLayers;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 128;
  c.vocab_size = kVocab;
  c.tie_embeddings = false;
  return c;
}

// The all-gathers of the dp group in flight, with their bytes (from "bfloat16[24] x 2").
struct Gathers {
  int count = 0;
  int64_t bytes = 0;
  std::vector<std::string> dtypes;
};
Gathers InFlightGathers() {
  Gathers g;
  static const std::regex kDetail(R"(^(\w+)\[(\d+)\] x (\d+)$)");
  for (const auto& op : TestRuntime()->watchdog().InFlight()) {
    if (op->op != "all_gather" || op->group == nullptr || op->group->name != "dp") continue;
    std::smatch m;
    CATCH_REQUIRE(std::regex_match(op->detail, m, kDetail));
    const int64_t element = m[1] == "bfloat16" ? 2 : m[1] == "float32" ? 4 : 0;
    ++g.count;
    g.bytes += element * std::stoll(m[2]) * std::stoll(m[3]);
    g.dtypes.push_back(m[1]);
  }
  return g;
}

// One forward observed: at the start of each linear product, its weight's rows and what is in
// flight. RecordFunction takes plain function pointers, so the log is file-wide.
struct EventLog {
  std::mutex mu;
  dp::GradReducer* reducer = nullptr;
  std::vector<std::string> events;
};
EventLog g_log;

std::unique_ptr<at::ObserverContext> OnLinear(const at::RecordFunction& fn) {
  if (std::string_view(fn.name()) != "aten::linear") return nullptr;
  const c10::ArrayRef<const c10::IValue> in = fn.inputs();
  if (in.size() < 2 || !in[1].isTensor()) return nullptr;
  const int64_t rows = in[1].toTensor().size(0);
  const int head = static_cast<int>(kLayers + 1);  // sharding.h's unit of the final norm + head
  const std::string event = std::to_string(rows) + " rows: " +
                            (InFlightGathers().count > 0 ? "gathers in flight" : "nothing in flight") +
                            (g_log.reducer->IsGathered(head) ? ", head whole" : ", head on its way");
  std::lock_guard<std::mutex> lock(g_log.mu);
  g_log.events.push_back(event);
  return nullptr;
}

struct Setup {
  std::unique_ptr<dp::ProcessGrid> grid;
  Transformer model{nullptr};
  std::unique_ptr<dp::GradReducer> reducer;
  std::vector<at::Tensor> params;  // in the reducer's order
};

Setup Build(int zero, at::ScalarType dtype) {
  Setup s;
  auto grid = MakeGrid({1, 1, 0});
  if (!grid.ok()) CATCH_FAIL(std::string(grid.status().message()));
  s.grid = std::move(*grid);
  s.model = Transformer(Shape(), kSeq, tessera::ModelShardOptions{});
  s.model->InitializeWeights(7);
  s.model->SetComputeDtype(dtype);
  std::vector<dp::DataParallelParameter> params;
  for (const tessera::PlannedParameter& p :
       tessera::PlanParameters({s.model->ParameterInfos()}, Shape(), tessera::ShardingContext{})) {
    params.push_back({p.info.name, p.info.tensor, p.role.decay, p.role.norm_weight, p.role.late, p.chunk,
                      p.unit, p.fuse_with_next});
    s.params.push_back(p.info.tensor);
  }
  // Tiny buckets: every parameter (or fused group) has its own, so units never share one.
  dp::DataParallelOptions options;
  options.zero = zero;
  options.bucket_mb = 1e-4;
  options.param_dtype = dtype;
  auto reducer = dp::GradReducer::Create(std::move(params), s.grid->dp(), options);
  if (!reducer.ok()) CATCH_FAIL(std::string(reducer.status().message()));
  s.reducer = std::move(*reducer);
  s.model->SetUnitGatherer(s.reducer.get());
  return s;
}

// This rank's batch `step`: different on every rank, so the reduced gradients mix them.
std::pair<at::Tensor, at::Tensor> Batch(int rank, int step) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(100 * step + rank);
  return {at::randint(kVocab, {kBatch, kSeq}, generator, at::kLong),
          at::randint(kVocab, {kBatch, kSeq}, generator, at::kLong)};
}

// One training step: forward, backward, reduction, a plain SGD update of this rank's shard (its
// fp32 master under bf16, whose rounding becomes the weights, as the optimizer writes them), then
// the gather of the updated weights, overlapped or synchronous.
at::Tensor Step(Setup& s, int step, bool overlapped) {
  const auto [tokens, targets] = Batch(s.grid->dp().rank(), step);
  s.reducer->ZeroGrad();
  s.reducer->MarkFinalBackward(0);
  at::Tensor loss = s.model->Loss(tokens, targets);
  loss.backward();
  CATCH_REQUIRE(s.reducer->FinishBackward({}).ok());
  {
    torch::NoGradGuard no_grad;
    for (const dp::OwnedRange& r : s.reducer->owned()) {
      if (r.master.defined()) {
        r.master.sub_(r.grads, 0.05);
        r.params.copy_(r.master);
      } else {
        r.params.sub_(r.grads, 0.05);
      }
    }
  }
  CATCH_REQUIRE((overlapped ? s.reducer->StartGatherParams() : s.reducer->GatherParams()).ok());
  return loss.detach();
}

// The next step's forward, observed.
struct Observed {
  at::Tensor loss;
  std::vector<std::string> events;
};
Observed ObservedForward(Setup& s) {
  g_log.reducer = s.reducer.get();
  g_log.events.clear();
  const auto handle = at::addGlobalCallback(
      at::RecordFunctionCallback(OnLinear).needsInputs(true).scopes({at::RecordScope::FUNCTION}));
  const auto [tokens, targets] = Batch(s.grid->dp().rank(), 2);
  Observed o;
  {
    torch::NoGradGuard no_grad;
    o.loss = s.model->Loss(tokens, targets);
  }
  at::removeCallback(handle);
  o.events = g_log.events;
  return o;
}

at::Tensor FlatWeights(const Setup& s) {
  std::vector<at::Tensor> parts;
  for (const at::Tensor& t : s.params) parts.push_back(t.detach().reshape({-1}));
  return at::cat(parts);
}

}  // namespace

CATCH_TEST_CASE(
    "zero 1 and 2: the next forward waits for each unit's weights while later ones are gathered") {
  if (TestRuntime()->world_size() < 2) return;  // one rank gathers nothing
  for (int zero : {1, 2}) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      CATCH_INFO("zero " << zero << ", " << c10::toString(dtype));
      Setup overlapped = Build(zero, dtype);
      Step(overlapped, 1, /*overlapped=*/true);
      CATCH_CHECK(overlapped.reducer->ParamsPending());
      const Observed got = ObservedForward(overlapped);
      CATCH_CHECK(!overlapped.reducer->ParamsPending());
      // Block 0's first product (q|k|v: 128 rows) runs while the head's weights are on their way;
      // by the head's product (96 rows) every gather has landed.
      CATCH_REQUIRE(got.events.size() == 4 * kLayers + 1);
      CATCH_CHECK(got.events.front() == "128 rows: gathers in flight, head on its way");
      CATCH_CHECK(got.events.back() == "96 rows: nothing in flight, head whole");

      // The wait at the end of the step: nothing is in flight during the forward.
      Setup synchronous = Build(zero, dtype);
      Step(synchronous, 1, /*overlapped=*/false);
      CATCH_CHECK(!synchronous.reducer->ParamsPending());
      const Observed want = ObservedForward(synchronous);
      CATCH_REQUIRE(want.events.size() == got.events.size());
      CATCH_CHECK(want.events.front() == "128 rows: nothing in flight, head whole");
      CATCH_CHECK(want.events.back() == "96 rows: nothing in flight, head whole");
      // The same bytes arrived: the same loss, bit for bit.
      CATCH_CHECK(at::equal(got.loss, want.loss));
      CATCH_CHECK(at::equal(FlatWeights(overlapped), FlatWeights(synchronous)));
    }
  }
}

CATCH_TEST_CASE(
    "zero 1 and 2: bf16 weights are gathered as bf16, half the bytes, bit for bit the rounded master") {
  const int world = TestRuntime()->world_size();
  for (int zero : {1, 2}) {
    CATCH_INFO("zero " << zero);
    int64_t bytes[2] = {0, 0};
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      CATCH_INFO(c10::toString(dtype));
      Setup s = Build(zero, dtype);
      Step(s, 1, /*overlapped=*/true);
      const int64_t element = dtype == at::kBFloat16 ? 2 : 4;
      CATCH_CHECK(s.reducer->last_gather_bytes() == s.reducer->flat_numel() * element);
      if (world > 1) {
        // What the communicator has on the wire, by its own description.
        const Gathers g = InFlightGathers();
        CATCH_CHECK(g.count == s.reducer->num_buckets());
        CATCH_CHECK(g.bytes == s.reducer->last_gather_bytes());
        for (const std::string& d : g.dtypes)
          CATCH_CHECK(d == (dtype == at::kBFloat16 ? "bfloat16" : "float32"));
      }
      bytes[dtype == at::kBFloat16] = s.reducer->last_gather_bytes();
      CATCH_REQUIRE(s.reducer->WaitParams().ok());
      // The reference: every rank's updated fp32 values (the master under bf16), gathered in fp32,
      // then rounded to the weights' dtype on every rank.
      std::vector<at::Tensor> owned;
      for (const dp::OwnedRange& r : s.reducer->owned())
        owned.push_back(r.master.defined() ? r.master : r.params);
      auto full = s.reducer->GatherFlat(owned);
      CATCH_REQUIRE(full.ok());
      for (size_t i = 0; i < s.params.size(); ++i) {
        const at::Tensor& t = s.params[i];
        CATCH_INFO("parameter " << i);
        CATCH_CHECK(t.scalar_type() == dtype);
        CATCH_CHECK(
            at::equal(t.detach().reshape({-1}),
                      full->narrow(0, s.reducer->flat_offset(static_cast<int>(i)), t.numel()).to(dtype)));
      }
    }
    CATCH_CHECK(bytes[1] * 2 == bytes[0]);
  }
}

CATCH_TEST_CASE("zero 1 and 2: readers outside the forward see the gather pending until WaitParams") {
  for (int zero : {1, 2}) {
    CATCH_INFO("zero " << zero);
    Setup s = Build(zero, at::kBFloat16);
    Step(s, 1, /*overlapped=*/true);
    // What evaluation, generation and checkpoints check before reading the weights.
    CATCH_CHECK(s.reducer->ParamsPending());
    CATCH_CHECK(!s.reducer->AllGathered());
    CATCH_CHECK(!s.model->ParametersWhole());
    CATCH_REQUIRE(s.reducer->WaitParams().ok());
    CATCH_CHECK(!s.reducer->ParamsPending());
    CATCH_CHECK(s.model->ParametersWhole());
    // HoldAll (evaluation's entry) waits too.
    Step(s, 2, /*overlapped=*/true);
    s.reducer->HoldAll();
    CATCH_CHECK(s.model->ParametersWhole());
    s.reducer->EndHold();
  }
}
