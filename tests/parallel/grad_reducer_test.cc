// Tests of parallel/data_parallel/grad_reducer against a single-rank reference, as every rank of
// a real job sees them: run as one process (DP = 1) and under mpirun with 2 and 4 ranks (the
// whole world is the data-parallel group). Each rank trains a toy model of odd-sized parameters
// (so buckets need padding) on its own data; the reference is the same model's gradient over
// every rank's data computed by plain autograd in one process, in float64. Checked for ZeRO 0, 1
// and 2, with one bucket and with several, with and without gradient accumulation: the flat
// layout (buckets in reverse order of use, padded to a multiple of DP, late parameters last), the
// weight-decay split of every owned range, the reduced gradients (late ones after the caller's
// fix-up), the global gradient norm with its per-parameter weights, and the all-gathers of
// updated parameter shards and of per-element optimizer state.
//
// Tolerance: the reducer works in float32: each local gradient is a float32 product (2^-24
// relative), accumulated over at most 2 micro-batches and averaged over at most 4 ranks in some
// order: a few float32 roundings, < 1e-6 relative to the largest value. 1e-5 leaves 10x; a
// gradient that misses a rank's contribution (or keeps this rank's own) is off by O(1).
//
// The planted fault TESSERA_FAULT_REDUCER_DROP_TAIL=K (grad_reducer.h) must make the reduced-
// gradient checks fail under mpirun, naming the parameter: tests/parallel/CMakeLists.txt runs
// this binary with it on and demands that failure.
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "parallel/data_parallel/grad_reducer.h"
#include "parallel/process_grid.h"
#include "tests/catch_compat.h"
#include "tests/parallel/comm/comm_test_util.h"

using tessera::parallel::Communicator;
using tessera::parallel::DataParallelOptions;
using tessera::parallel::DataParallelParameter;
using tessera::parallel::GradReducer;
using tessera::parallel::OwnedRange;
using tessera::parallel::ProcessGrid;
using tessera::parallel::ReduceOp;
using tessera::parallel::testing::MakeGrid;

namespace {

constexpr double kTol = 1e-5;  // see the file comment

// The toy model's parameters in order of use. Odd sizes: no bucket is a multiple of 2 or 4.
struct Spec {
  const char* name;
  std::vector<int64_t> shape;
  bool decay;
  double norm_weight;
  bool late;
};
const std::vector<Spec>& Specs() {
  static const std::vector<Spec> specs = {
      {"embedding", {37, 8}, true, 1.0, false},
      {"block0.norm", {8}, false, 1.0, false},
      {"block0.w1", {8, 13}, true, 1.0, false},
      {"block0.w2", {13, 8}, true, 1.0, false},
      {"block0.replicated", {5}, false, 0.5, false},  // like a weight replicated over TP = 2
      {"block1.norm", {8}, false, 0.5, true},         // like a sequence-parallel norm weight
      {"block1.w1", {8, 13}, true, 1.0, false},
      {"block1.w2", {13, 8}, true, 1.0, false},
      {"final_norm", {8}, false, 1.0, false},
      {"head_tied_copy", {37, 8}, true, 0.0, true},  // counted once, by the embedding
  };
  return specs;
}
// The late fix-up scales late gradients by this (it must happen before their reduction).
constexpr double kLateScale = 3.0;

at::Tensor Seeded(const std::vector<int64_t>& shape, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat));
}
at::Tensor Initial(size_t p) { return Seeded(Specs()[p].shape, 1000 + p) * 0.5; }
// Rank r's data for parameter p at micro-step m.
at::Tensor Data(size_t p, int rank, int micro) {
  return Seeded(Specs()[p].shape, 7919 * (p + 1) + 104729 * rank + micro);
}

// The loss of one micro-batch is sum_p sum(sin(p) * data): its gradient is cos(p) * data.
at::Tensor ReferenceGrad(size_t p, int world, int micro_steps) {
  at::Tensor sum = at::zeros(Specs()[p].shape, at::kDouble);
  for (int r = 0; r < world; ++r) {
    for (int m = 0; m < micro_steps; ++m)
      sum += Initial(p).to(at::kDouble).cos() * Data(p, r, m).to(at::kDouble);
  }
  return sum / world * (Specs()[p].late ? kLateScale : 1.0);
}

struct Model {
  std::unique_ptr<ProcessGrid> grid;
  std::vector<at::Tensor> tensors;  // the parameters (their storage lives in the reducer's buffer)
  std::unique_ptr<GradReducer> reducer;
  int world = 1;
  int rank = 0;
};

Model Build(int zero, double bucket_mb) {
  Model m;
  auto grid = MakeGrid({1, 1, 0});
  if (!grid.ok()) CATCH_FAIL(std::string(grid.status().message()));
  m.grid = std::move(*grid);
  m.world = m.grid->dp().size();
  m.rank = m.grid->dp().rank();
  std::vector<DataParallelParameter> params;
  for (size_t p = 0; p < Specs().size(); ++p) {
    const Spec& s = Specs()[p];
    m.tensors.push_back(Initial(p).requires_grad_(true));
    params.push_back({s.name, m.tensors.back(), s.decay, s.norm_weight, s.late, 0});
  }
  auto reducer = GradReducer::Create(std::move(params), m.grid->dp(), DataParallelOptions{zero, bucket_mb});
  if (!reducer.ok()) CATCH_FAIL(std::string(reducer.status().message()));
  m.reducer = std::move(*reducer);
  return m;
}

// One optimizer step's backward passes, as the trainer drives them: the passes (their hooks
// launch the bucket reductions), then FinishStep.
void BackwardPasses(Model& m, int micro_steps) {
  m.reducer->ZeroGrad();
  for (int micro = 0; micro < micro_steps; ++micro) {
    if (micro == micro_steps - 1) m.reducer->MarkFinalBackward(0);
    at::Tensor loss = at::zeros({}, at::kFloat);
    for (size_t p = 0; p < m.tensors.size(); ++p)
      loss = loss + (m.tensors[p].sin() * Data(p, m.rank, micro)).sum();
    loss.backward();
  }
}

void FinishStep(Model& m) {
  absl::Status s = m.reducer->FinishBackward([&]() -> absl::Status {
    torch::NoGradGuard no_grad;
    for (size_t p = 0; p < m.tensors.size(); ++p) {
      if (Specs()[p].late) m.tensors[p].mutable_grad().mul_(kLateScale);
    }
    return absl::OkStatus();
  });
  CATCH_REQUIRE(s.ok());
}

void Backward(Model& m, int micro_steps) {
  BackwardPasses(m, micro_steps);
  FinishStep(m);
}

// Element `index` of the flat buffer: "parameter NAME element j", or padding.
std::string Where(const Model& m, int64_t index) {
  for (size_t p = 0; p < m.tensors.size(); ++p) {
    const int64_t begin = m.reducer->flat_offset(static_cast<int>(p));
    if (index >= begin && index < begin + m.tensors[p].numel()) {
      return std::string("parameter ") + Specs()[p].name + " element " + std::to_string(index - begin);
    }
  }
  return "padding element " + std::to_string(index);
}

// A float64 tensor over the flat buffer: parameter p's `values[p]` at its offset, zero padding.
at::Tensor Flat(const Model& m, const std::vector<at::Tensor>& values) {
  at::Tensor flat = at::zeros({m.reducer->flat_numel()}, at::kDouble);
  for (size_t p = 0; p < values.size(); ++p) {
    flat.narrow(0, m.reducer->flat_offset(static_cast<int>(p)), values[p].numel())
        .copy_(values[p].reshape({-1}));
  }
  return flat;
}

// Compares `got` with `want` (elements [first, first + n) of the flat buffer), naming the worst one.
void CheckFlat(const Model& m, const at::Tensor& got, const at::Tensor& want, int64_t first,
               const std::string& what) {
  const at::Tensor diff = (got.to(at::kDouble).reshape({-1}) - want.reshape({-1})).abs();
  if (diff.numel() == 0) return;
  const int64_t worst = diff.argmax().item<int64_t>();
  const double allowed = kTol * std::max(1.0, want.abs().max().item<double>());
  const double d = diff[worst].item<double>();
  if (d > allowed) {
    std::ostringstream message;
    message << what << " differs from the single-rank reference at " << Where(m, first + worst) << ": got "
            << got.reshape({-1})[worst].item<double>() << ", want "
            << want.reshape({-1})[worst].item<double>() << " (|diff| " << d << " > " << allowed << "; rank "
            << m.rank << " of " << m.world << ")";
    CATCH_FAIL_CHECK(message.str());
  }
}

struct Case {
  int zero;
  double bucket_mb;
  int micro_steps;
};
std::vector<Case> Cases() {
  std::vector<Case> cases;
  // 0.0005 MiB = 131 floats: several buckets; 25 MiB: one (plus the late one).
  for (int zero : {0, 1, 2}) {
    for (double mb : {0.0005, 25.0}) {
      for (int micro : {1, 2}) cases.push_back({zero, mb, micro});
    }
  }
  return cases;
}

std::string Describe(const Case& c) {
  std::ostringstream s;
  s << "zero " << c.zero << ", bucket_mb " << c.bucket_mb << ", " << c.micro_steps << " micro-step(s)";
  return s.str();
}

// The bucket [begin, begin + size) of the flat buffer that owned range k belongs to.
std::pair<int64_t, int64_t> BucketOf(const Model& m, const OwnedRange& r) {
  if (m.reducer->zero() == 0) return {r.flat_offset, r.params.numel()};
  return {r.flat_offset - m.rank * r.params.numel(), r.params.numel() * m.world};
}

}  // namespace

CATCH_TEST_CASE("flat layout: buckets in reverse order of use, padded to DP, late parameters last") {
  for (const Case& c : Cases()) {
    if (c.micro_steps != 1) continue;
    CATCH_INFO(Describe(c));
    Model m = Build(c.zero, c.bucket_mb);
    const auto& owned = m.reducer->owned();
    CATCH_CHECK(static_cast<int>(owned.size()) == m.reducer->num_buckets());
    if (c.bucket_mb < 1) CATCH_CHECK(m.reducer->num_buckets() >= 4);
    if (c.bucket_mb > 1) CATCH_CHECK(m.reducer->num_buckets() == 2);  // everything, then the late bucket
    // Buckets tile the flat buffer, each padded to a multiple of DP; ranges are equal shards.
    int64_t next = 0;
    std::vector<std::pair<int64_t, int64_t>> buckets;
    for (const OwnedRange& r : owned) {
      const auto [begin, size] = BucketOf(m, r);
      CATCH_CHECK(begin == next);
      CATCH_CHECK(size % m.world == 0);
      CATCH_CHECK(r.params.numel() == r.grads.numel());
      buckets.push_back({begin, size});
      next = begin + size;
    }
    CATCH_CHECK(next == m.reducer->flat_numel());
    // The parameters' storage is the flat buffer at their offsets.
    const float* base = owned.front().params.data_ptr<float>() - owned.front().flat_offset;
    auto bucket_of = [&](size_t p) {
      const int64_t at = m.reducer->flat_offset(static_cast<int>(p));
      for (size_t b = 0; b < buckets.size(); ++b) {
        if (at >= buckets[b].first && at < buckets[b].first + buckets[b].second) return static_cast<int>(b);
      }
      return -1;
    };
    int previous = static_cast<int>(buckets.size());
    for (size_t p = 0; p < m.tensors.size(); ++p) {
      CATCH_INFO(Specs()[p].name);
      CATCH_CHECK(m.tensors[p].data_ptr<float>() == base + m.reducer->flat_offset(static_cast<int>(p)));
      const int b = bucket_of(p);
      if (Specs()[p].late) {
        CATCH_CHECK(b == static_cast<int>(buckets.size()) - 1);
      } else {
        CATCH_CHECK(b <= previous);  // later in the forward: an earlier (or the same) bucket
        CATCH_CHECK(b < static_cast<int>(buckets.size()) - 1);
        previous = b;
      }
    }
  }
}

CATCH_TEST_CASE(
    "weight decay: every owned range's decayed part is a prefix holding exactly the decayed elements") {
  for (const Case& c : Cases()) {
    if (c.micro_steps != 1) continue;
    CATCH_INFO(Describe(c));
    Model m = Build(c.zero, c.bucket_mb);
    std::vector<at::Tensor> mask;
    int64_t decayed_total = 0;
    for (size_t p = 0; p < Specs().size(); ++p) {
      mask.push_back(at::full(Specs()[p].shape, Specs()[p].decay ? 1.0 : 0.0, at::kDouble));
      if (Specs()[p].decay) decayed_total += m.tensors[p].numel();
    }
    const at::Tensor flat_mask = Flat(m, mask);
    int64_t decayed_here = 0;
    for (const OwnedRange& r : m.reducer->owned()) {
      const at::Tensor range = flat_mask.narrow(0, r.flat_offset, r.params.numel());
      CATCH_CHECK(range.narrow(0, 0, r.decayed).sum().item<double>() == static_cast<double>(r.decayed));
      CATCH_CHECK(range.narrow(0, r.decayed, range.numel() - r.decayed).sum().item<double>() == 0.0);
      decayed_here += r.decayed;
    }
    // Over the DP group, every decayed element is decayed exactly once (zero 0: by every rank).
    at::Tensor total = at::full({1}, decayed_here, at::kLong);
    CATCH_REQUIRE(m.grid->dp().AllReduce(total, ReduceOp::kSum).ok());
    CATCH_CHECK(total.item<int64_t>() == decayed_total * (c.zero == 0 ? m.world : 1));
  }
}

CATCH_TEST_CASE("reduced gradients, norm and gathers equal the single-rank reference") {
  for (const Case& c : Cases()) {
    CATCH_INFO(Describe(c));
    Model m = Build(c.zero, c.bucket_mb);
    Backward(m, c.micro_steps);
    std::vector<at::Tensor> reference;
    for (size_t p = 0; p < Specs().size(); ++p) reference.push_back(ReferenceGrad(p, m.world, c.micro_steps));
    const at::Tensor flat_reference = Flat(m, reference);

    // What this rank's optimizer sees: every owned range's gradients (padding reduces to zero).
    for (const OwnedRange& r : m.reducer->owned()) {
      CheckFlat(m, r.grads, flat_reference.narrow(0, r.flat_offset, r.grads.numel()), r.flat_offset,
                "reduced gradient");
    }
    if (c.zero == 0) {  // and the parameters' own .grad, views of the same buffer
      for (size_t p = 0; p < m.tensors.size(); ++p) {
        CheckFlat(m, m.tensors[p].grad(), reference[p], m.reducer->flat_offset(static_cast<int>(p)),
                  "parameter .grad");
      }
    }

    // The norm counts each parameter with its weight (0: a tied copy; 0.5: replicated twice).
    double squares = 0;
    for (size_t p = 0; p < Specs().size(); ++p) {
      squares += Specs()[p].norm_weight * reference[p].square().sum().item<double>();
    }
    auto norm = m.reducer->GlobalGradNorm(m.grid->world());
    CATCH_REQUIRE(norm.ok());
    CATCH_CHECK(std::abs(*norm - std::sqrt(squares)) <= kTol * std::sqrt(squares));

    // Per-element state of the owned ranges (here: the gradients) assembled over the buffer.
    std::vector<at::Tensor> owned_grads;
    for (const OwnedRange& r : m.reducer->owned()) owned_grads.push_back(r.grads.clone());
    auto gathered = m.reducer->GatherFlat(owned_grads);
    CATCH_REQUIRE(gathered.ok());
    CheckFlat(m, *gathered, flat_reference, 0, "GatherFlat of the reduced gradients");

    // A plain SGD step on the owned ranges, then the all-gather: every rank holds the whole update.
    {
      torch::NoGradGuard no_grad;
      for (const OwnedRange& r : m.reducer->owned()) r.params.sub_(r.grads * 0.5);
    }
    CATCH_REQUIRE(m.reducer->GatherParams().ok());
    for (size_t p = 0; p < m.tensors.size(); ++p) {
      const at::Tensor want = Initial(p).to(at::kDouble) - 0.5 * reference[p];
      CheckFlat(m, m.tensors[p].detach(), want, m.reducer->flat_offset(static_cast<int>(p)),
                "updated parameter");
    }
  }
}

CATCH_TEST_CASE(
    "never marked final, as on the captured micro-step's path, FinishBackward reduces every bucket") {
  // A CUDA graph replays backward without its host callbacks, so the captured path never marks
  // a backward final (trainer/micro_step_graph.h): the hooks must launch nothing, and
  // FinishBackward must then reduce every bucket to the same gradients.
  for (const Case& c : Cases()) {
    if (c.zero > 1) continue;  // zero 2 and 3 do not run captured (trainer/cuda_graph_policy.h)
    CATCH_INFO(Describe(c));
    Model m = Build(c.zero, c.bucket_mb);
    m.reducer->ZeroGrad();
    for (int micro = 0; micro < c.micro_steps; ++micro) {
      at::Tensor loss = at::zeros({}, at::kFloat);
      for (size_t p = 0; p < m.tensors.size(); ++p)
        loss = loss + (m.tensors[p].sin() * Data(p, m.rank, micro)).sum();
      loss.backward();
    }
    CATCH_CHECK(m.reducer->last_events().empty());  // no hook launched a reduction
    FinishStep(m);
    CATCH_CHECK(static_cast<int>(m.reducer->last_events().size()) == m.reducer->num_buckets());
    std::vector<at::Tensor> reference;
    for (size_t p = 0; p < Specs().size(); ++p) reference.push_back(ReferenceGrad(p, m.world, c.micro_steps));
    const at::Tensor flat_reference = Flat(m, reference);
    for (const OwnedRange& r : m.reducer->owned()) {
      CheckFlat(m, r.grads, flat_reference.narrow(0, r.flat_offset, r.grads.numel()), r.flat_offset,
                "reduced gradient");
    }
  }
}

CATCH_TEST_CASE("zero 2: a completed bucket reduction is landed and its buffers freed before the step ends") {
  // Several buckets; every rank launches them all in its hooks. Once all have been issued (the
  // barrier) each completes without this rank waiting on any other, so RetireCompleted alone must
  // land them all and free every gathered copy; FinishBackward then has nothing left to hold, and
  // the gradients are those of the reference.
  Model m = Build(2, 0.0005);
  BackwardPasses(m, 1);
  CATCH_CHECK(m.reducer->PeakPendingBytes() > 0);
  CATCH_REQUIRE(m.grid->dp().Barrier().ok());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (m.reducer->PendingBytes() > 0 && std::chrono::steady_clock::now() < deadline) {
    m.reducer->RetireCompleted();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CATCH_CHECK(m.reducer->PendingBytes() == 0);
  FinishStep(m);
  std::vector<at::Tensor> reference;
  for (size_t p = 0; p < Specs().size(); ++p) reference.push_back(ReferenceGrad(p, m.world, 1));
  const at::Tensor flat_reference = Flat(m, reference);
  for (const OwnedRange& r : m.reducer->owned()) {
    CheckFlat(m, r.grads, flat_reference.narrow(0, r.flat_offset, r.grads.numel()), r.flat_offset,
              "reduced gradient after early retirement");
  }
}

namespace {

// The toy model's zero-3 units: the embedding, the two blocks, the final norm (with the late tied
// copy, which stays gathered).
int UnitOf(size_t p) {
  const std::string name = Specs()[p].name;
  if (name == "embedding") return 0;
  if (name.starts_with("block0.")) return 1;
  if (name.starts_with("block1.")) return 2;
  return 3;
}

Model BuildZero3(int prefetch) {
  Model m;
  auto grid = MakeGrid({1, 1, 0});
  if (!grid.ok()) CATCH_FAIL(std::string(grid.status().message()));
  m.grid = std::move(*grid);
  m.world = m.grid->dp().size();
  m.rank = m.grid->dp().rank();
  std::vector<DataParallelParameter> params;
  for (size_t p = 0; p < Specs().size(); ++p) {
    const Spec& s = Specs()[p];
    m.tensors.push_back(Initial(p).requires_grad_(true));
    params.push_back({s.name, m.tensors.back(), s.decay, s.norm_weight, s.late, 0, UnitOf(p)});
  }
  DataParallelOptions options{3, 0.0005};
  options.prefetch = prefetch;
  auto reducer = GradReducer::Create(std::move(params), m.grid->dp(), options);
  if (!reducer.ok()) CATCH_FAIL(std::string(reducer.status().message()));
  m.reducer = std::move(*reducer);
  return m;
}

// Whether every parameter of `unit` holds `want(p)` exactly (bit for bit).
bool UnitHolds(const Model& m, int unit, const std::function<at::Tensor(size_t)>& want) {
  for (size_t p = 0; p < m.tensors.size(); ++p) {
    if (UnitOf(p) == unit && !Specs()[p].late && !at::equal(m.tensors[p].detach(), want(p))) return false;
  }
  return true;
}

int64_t StorageBytes(const at::Tensor& t) { return static_cast<int64_t>(t.storage().nbytes()); }

}  // namespace

CATCH_TEST_CASE("zero 3: release frees a unit's storage, gathering restores it exactly") {
  Model m = BuildZero3(/*prefetch=*/1);
  // Sharded from the start: every unit's storage is empty, the late bucket stays whole.
  for (size_t p = 0; p < m.tensors.size(); ++p) {
    CATCH_INFO(Specs()[p].name);
    if (Specs()[p].late) {
      CATCH_CHECK(StorageBytes(m.tensors[p]) > 0);
      CATCH_CHECK(at::equal(m.tensors[p].detach(), Initial(p)));
    } else {
      CATCH_CHECK(StorageBytes(m.tensors[p]) == 0);
    }
  }
  CATCH_CHECK(m.reducer->GatheredBytes() == 0);
  // The shards stay: the parameters' bytes are 1/DP of the buffer (plus the whole late bucket).
  CATCH_CHECK((m.world == 1 || m.reducer->ParamBytes() < m.reducer->flat_numel() * 4));
  for (int round = 0; round < 2; ++round) {
    m.reducer->Gather(1);
    CATCH_CHECK(m.reducer->IsGathered(1));
    CATCH_CHECK(!m.reducer->IsGathered(2));
    CATCH_CHECK(UnitHolds(m, 1, Initial));
    CATCH_CHECK(StorageBytes(m.tensors[2]) > 0);  // block0.w1
    CATCH_CHECK(m.reducer->GatheredBytes() >= StorageBytes(m.tensors[2]));
    m.reducer->Release(1);
    CATCH_CHECK(StorageBytes(m.tensors[2]) == 0);
    CATCH_CHECK(m.reducer->GatheredBytes() == 0);
  }
  // Prefetch, then use: the same values; the peak counts both units at once.
  m.reducer->ResetPeakGatheredBytes();
  m.reducer->Gather(0);
  m.reducer->Prefetch(1);
  const int64_t both = m.reducer->GatheredBytes();
  m.reducer->Gather(1);
  CATCH_CHECK(UnitHolds(m, 0, Initial));
  CATCH_CHECK(UnitHolds(m, 1, Initial));
  m.reducer->ReleaseAll();
  CATCH_CHECK(m.reducer->PeakGatheredBytes() == both);
  CATCH_CHECK(m.reducer->GatheredBytes() == 0);
  // An update of the shards is what the next gather brings.
  {
    torch::NoGradGuard no_grad;
    for (const OwnedRange& r : m.reducer->owned()) r.params.add_(1.0);
  }
  CATCH_REQUIRE(m.reducer->GatherParams().ok());
  for (int unit = 0; unit < 3; ++unit) {
    m.reducer->Gather(unit);
    CATCH_CHECK(UnitHolds(m, unit, [](size_t p) { return Initial(p) + 1.0; }));
    m.reducer->Release(unit);
  }
  for (size_t p = 0; p < m.tensors.size(); ++p) {
    if (Specs()[p].late) CATCH_CHECK(at::equal(m.tensors[p].detach(), Initial(p) + 1.0));
  }
}

CATCH_TEST_CASE("zero 3: tensors saved for backward survive a release; gradients as zero 2; units freed") {
  for (int micro_steps : {1, 2}) {
    CATCH_INFO(micro_steps << " micro-step(s)");
    Model m = BuildZero3(/*prefetch=*/0);
    m.reducer->ZeroGrad();
    for (int micro = 0; micro < micro_steps; ++micro) {
      if (micro == micro_steps - 1) m.reducer->MarkFinalBackward(0);
      // Forward unit by unit, releasing each after use (autograd saved the parameters).
      at::Tensor loss = at::zeros({}, at::kFloat);
      for (int unit = 0; unit < 4; ++unit) {
        m.reducer->Gather(unit);
        for (size_t p = 0; p < m.tensors.size(); ++p) {
          if (UnitOf(p) == unit) loss = loss + (m.tensors[p].sin() * Data(p, m.rank, micro)).sum();
        }
        m.reducer->Release(unit);
      }
      CATCH_CHECK(m.reducer->GatheredBytes() == 0);
      // Gathered again before backward: sin's backward reads the saved parameter, a view of the
      // re-gathered storage. Each unit is released as its last gradient accumulator runs.
      for (int unit = 0; unit < 4; ++unit) m.reducer->Gather(unit);
      loss.backward();
      for (int unit = 0; unit < 4; ++unit) {
        CATCH_INFO("unit " << unit);
        CATCH_CHECK(!m.reducer->IsGathered(unit));
      }
      CATCH_CHECK(m.reducer->GatheredBytes() == 0);
    }
    CATCH_REQUIRE(m.reducer
                      ->FinishBackward([&]() -> absl::Status {
                        torch::NoGradGuard no_grad;
                        for (size_t p = 0; p < m.tensors.size(); ++p) {
                          if (Specs()[p].late) m.tensors[p].mutable_grad().mul_(kLateScale);
                        }
                        return absl::OkStatus();
                      })
                      .ok());
    std::vector<at::Tensor> reference;
    for (size_t p = 0; p < Specs().size(); ++p) reference.push_back(ReferenceGrad(p, m.world, micro_steps));
    const at::Tensor flat_reference = Flat(m, reference);
    for (const OwnedRange& r : m.reducer->owned()) {
      CheckFlat(m, r.grads, flat_reference.narrow(0, r.flat_offset, r.grads.numel()), r.flat_offset,
                "zero 3 reduced gradient");
    }
  }
}

CATCH_TEST_CASE("zero 3 layout: no bucket spans two units; the gathered-unit bound") {
  using tessera::parallel::FlatLayout;
  using tessera::parallel::FlatParameter;
  // In order of use: unit 0 (one parameter of 10 elements), units 1..3 (two of 3 each), unit 4
  // (one of 1: smaller than DP, padded with the rest of its bucket), and a late one.
  std::vector<FlatParameter> params = {{10, true, false, 0}, {3, true, false, 1},  {3, false, false, 1},
                                       {3, true, false, 2},  {3, false, false, 2}, {3, true, false, 3},
                                       {3, false, false, 3}, {1, false, false, 4}, {5, false, true, 4}};
  for (int dp : {1, 2, 4}) {
    CATCH_INFO("dp " << dp);
    const FlatLayout split = tessera::parallel::LayOutFlatBuffers(params, dp, /*bucket_mb=*/25, true);
    const FlatLayout merged = tessera::parallel::LayOutFlatBuffers(params, dp, /*bucket_mb=*/25, false);
    CATCH_CHECK(merged.buckets.size() == 2);   // everything, then the late bucket
    CATCH_REQUIRE(split.buckets.size() == 6);  // units 4, 3, 2, 1, 0, then the late bucket
    std::vector<int64_t> unit_padded(5, 0);
    for (const auto& b : split.buckets) {
      CATCH_CHECK(b.padded % dp == 0);
      if (b.late) {
        CATCH_CHECK(b.unit == -1);
        continue;
      }
      for (int p : b.params) CATCH_CHECK(params[p].unit == b.unit);
      unit_padded[b.unit] += b.padded;
    }
    auto round = [&](int64_t n) { return (n + dp - 1) / dp * dp; };
    CATCH_CHECK(unit_padded[4] == round(1));
    // prefetch 0: the worst 2 consecutive units; prefetch 1: 3; tied: plus unit 0 (4 bytes each).
    const int64_t u0 = round(10), u = round(6), u4 = round(1);
    CATCH_CHECK(tessera::parallel::GatheredUnitBound(split, 0, false, false) == 4 * (u0 + u));
    CATCH_CHECK(tessera::parallel::GatheredUnitBound(split, 1, false, false) == 4 * (u0 + 2 * u));
    CATCH_CHECK(tessera::parallel::GatheredUnitBound(split, 1, true, false) ==
                4 * std::max(u0 + 2 * u, u0 + 3 * u));
    CATCH_CHECK(tessera::parallel::GatheredUnitBound(split, 1, true, true) ==
                2 * std::max(u0 + 2 * u, u0 + 3 * u));
    CATCH_CHECK(tessera::parallel::GatheredUnitBound(split, 9, false, false) == 4 * (u0 + 3 * u + u4));
    // Zero 3's static weights: the shards and the late bucket whole.
    const auto bytes = tessera::parallel::StaticBytesOf(split, 3, false);
    CATCH_CHECK(bytes.weights == 4 * (split.shard_total + round(5)));
    CATCH_CHECK(bytes.grads == 4 * split.shard_total);
  }
}

CATCH_TEST_CASE("fused parameters: one run in the order of use, in one bucket, whatever the bucket size") {
  using tessera::parallel::FlatLayout;
  using tessera::parallel::FlatParameter;
  // norm, q, k, v (fused), o, norm, gate, up (fused), down: as one transformer block lists them.
  std::vector<FlatParameter> params = {
      {7, false, false, 1},      {12, true, false, 1, true}, {5, true, false, 1, true},
      {5, true, false, 1},       {12, true, false, 1},       {7, false, false, 1},
      {9, true, false, 1, true}, {9, true, false, 1},        {9, true, false, 1}};
  for (bool split_units : {false, true}) {
    for (double bucket_mb : {25.0, 1e-9}) {  // one bucket; a bucket per parameter or run
      for (int dp : {1, 2, 4}) {
        CATCH_INFO("dp " << dp << ", bucket_mb " << bucket_mb << ", split_units " << split_units);
        const FlatLayout layout = tessera::parallel::LayOutFlatBuffers(params, dp, bucket_mb, split_units);
        for (const auto& [first, last] : {std::pair{1, 3}, std::pair{6, 7}}) {
          for (int i = first; i < last; ++i) {
            CATCH_CHECK(layout.param_bucket[i] == layout.param_bucket[i + 1]);
            CATCH_CHECK(layout.param_offset[i + 1] == layout.param_offset[i] + params[i].numel);
          }
        }
        int64_t numel = 0;
        for (const auto& p : params) numel += p.numel;
        int64_t laid = 0;
        for (const auto& b : layout.buckets) laid += b.numel;
        CATCH_CHECK(laid == numel);
      }
    }
  }
  // A member whose role differs (a late k/v, replicated over TP) is not joined to the run.
  params[2].late = params[3].late = true;
  const FlatLayout layout = tessera::parallel::LayOutFlatBuffers(params, 2, 1e-9, false);
  CATCH_CHECK(layout.param_bucket[1] != layout.param_bucket[2]);
  CATCH_CHECK(layout.param_offset[3] == layout.param_offset[2] + params[2].numel);  // k, v: late, in order
}

CATCH_TEST_CASE("the reducer holds fused parameters as consecutive rows of one buffer, at every zero level") {
  auto grid = MakeGrid({1, 1, 0});
  if (!grid.ok()) CATCH_FAIL(std::string(grid.status().message()));
  const std::vector<std::pair<const char*, std::vector<int64_t>>> shapes = {
      {"norm", {8}},     {"wq", {8, 8}},      {"wk", {4, 8}},    {"wv", {4, 8}},     {"wo", {8, 8}},
      {"ffn_norm", {8}}, {"w_gate", {12, 8}}, {"w_up", {12, 8}}, {"w_down", {8, 12}}};
  for (int zero : {0, 1, 2, 3}) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      CATCH_INFO("zero " << zero << ", " << c10::toString(dtype));
      std::vector<at::Tensor> tensors;
      std::vector<DataParallelParameter> params;
      for (size_t i = 0; i < shapes.size(); ++i) {
        tensors.push_back(Seeded(shapes[i].second, 77 + i).requires_grad_(true));
        const std::string name = shapes[i].first;
        DataParallelParameter p{name, tensors.back(), shapes[i].second.size() == 2, 1.0, false, 0, 0};
        p.fuse_with_next = name == "wq" || name == "wk" || name == "w_gate";
        params.push_back(p);
      }
      DataParallelOptions options{zero, 1e-9};  // a bucket per run: runs must not be cut
      options.param_dtype = dtype;
      auto reducer = GradReducer::Create(std::move(params), (*grid)->dp(), options);
      if (!reducer.ok()) CATCH_FAIL(std::string(reducer.status().message()));
      if (zero == 3) (*reducer)->Gather(0);  // the unit is released until the model uses it
      for (const auto& [first, last] : {std::pair{1, 3}, std::pair{6, 7}}) {
        for (int i = first; i < last; ++i) {
          CATCH_CHECK(tensors[i].scalar_type() == dtype);
          CATCH_CHECK(static_cast<const char*>(tensors[i + 1].data_ptr()) ==
                      static_cast<const char*>(tensors[i].data_ptr()) + tensors[i].nbytes());
        }
      }
      CATCH_CHECK(at::equal(tensors[1].to(at::kFloat), Seeded({8, 8}, 78).to(dtype).to(at::kFloat)));
    }
  }
}
