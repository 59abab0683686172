// ATen operators per transformer layer per micro-step (forward + backward) on the CPU: a proxy for
// the kernels the same code launches on a GPU, where each costs a launch and a pass over memory.
// Counted with a RecordFunction callback: the innermost operators that run a kernel (those that
// call no other such operator), leaving out views, allocations and no-op conversions, which
// launch none, and the autograd engine's records around them. An operator that calls others
// which run kernels is represented by those (the CPU flash attention's backward by what it
// calls), so this is a lower bound of the kernels, and a stable one: the same code gives the
// same count. The weights are the model's own tensors (no flat buffers): q|k|v and gate|up are
// stacked by a copy here (aten::cat), which the trainer's buffers avoid in bf16. Per layer = a 3-layer
// model's count minus a 2-layer model's (the embedding, head and loss cancel). docs/perf.md records the
// counts; each budget below is the count measured when it was set, so an added operator per layer fails here
// and has to be argued for (and a fusion lowers the budget).
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/linear.h"
#include "model/model.h"
#include "tests/catch_compat.h"

namespace {

using tessera::ModelConfig;
using tessera::RecomputeMode;
using tessera::Transformer;

// Operators that launch no kernel when they call no other: views, allocations, and conversions
// or copies to what the tensor already is.
const std::set<std::string>& NoKernel() {
  static const std::set<std::string> names = {"aten::view",
                                              "aten::_unsafe_view",
                                              "aten::_reshape_alias",
                                              "aten::reshape",
                                              "aten::t",
                                              "aten::transpose",
                                              "aten::permute",
                                              "aten::expand",
                                              "aten::as_strided",
                                              "aten::slice",
                                              "aten::select",
                                              "aten::split",
                                              "aten::split_with_sizes",
                                              "aten::unsqueeze",
                                              "aten::squeeze",
                                              "aten::narrow",
                                              "aten::detach",
                                              "aten::alias",
                                              "aten::empty",
                                              "aten::empty_like",
                                              "aten::empty_strided",
                                              "aten::resize_",
                                              "aten::lift_fresh",
                                              "aten::contiguous",
                                              "aten::to",
                                              "aten::unbind",
                                              "aten::chunk",
                                              "aten::flatten",
                                              "aten::result_type",
                                              "aten::size",
                                              "aten::stride",
                                              "aten::numel",
                                              "aten::dim",
                                              "aten::is_same_size",
                                              "aten::expand_as",
                                              "aten::view_as",
                                              "aten::unflatten",
                                              "aten::set_",
                                              "aten::resolve_conj",
                                              "aten::resolve_neg",
                                              "detach",
                                              "aten::_has_compatible_shallow_copy_type"};
  return names;
}

struct Counter {
  std::map<std::string, int64_t> leaves;
};
thread_local std::vector<bool>* frames = nullptr;  // per open operator: whether it called another
Counter* active = nullptr;

// Operators per micro-step (forward + backward) of a seeded batch through `config`.
std::map<std::string, int64_t> CountOps(const ModelConfig& config, torch::ScalarType dtype) {
  Transformer model(config, 32);
  model->InitializeWeights(4);
  model->SetComputeDtype(dtype);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(9);
  const auto tokens = at::randint(0, config.vocab_size, {2, 32}, generator, torch::kInt64);
  const auto targets = at::randint(0, config.vocab_size, {2, 32}, generator, torch::kInt64);
  Counter counter;
  std::vector<bool> stack;
  frames = &stack;
  active = &counter;
  // An operator counts when none of the operators it called ran a kernel (views and the like
  // inside, as mm's resolve_conj, do not make it a wrapper); autograd's own records are wrappers.
  const auto handle =
      at::addGlobalCallback(at::RecordFunctionCallback(
                                [](const at::RecordFunction&) -> std::unique_ptr<at::ObserverContext> {
                                  if (frames != nullptr) frames->push_back(false);
                                  return nullptr;
                                },
                                [](const at::RecordFunction& fn, at::ObserverContext*) {
                                  if (frames == nullptr || frames->empty()) return;
                                  const bool wrapper = frames->back();
                                  frames->pop_back();
                                  const std::string name = fn.name();
                                  const bool launches =
                                      !NoKernel().contains(name) && !name.starts_with("autograd::");
                                  if (launches && !wrapper) ++active->leaves[name];
                                  if ((launches || wrapper) && !frames->empty()) frames->back() = true;
                                })
                                .scopes({at::RecordScope::FUNCTION}));
  model->Loss(tokens, targets).backward();
  at::removeCallback(handle);
  frames = nullptr;
  active = nullptr;
  return counter.leaves;
}

int64_t Total(const std::map<std::string, int64_t>& ops) {
  int64_t n = 0;
  for (const auto& [name, count] : ops) n += count;
  return n;
}

// The per-layer difference, operator by operator, for the failure message.
std::string PerLayer(const std::map<std::string, int64_t>& three, const std::map<std::string, int64_t>& two) {
  std::ostringstream out;
  for (const auto& [name, count] : three) {
    const int64_t d = count - (two.contains(name) ? two.at(name) : 0);
    if (d != 0) out << name << " " << d << "; ";
  }
  return out.str();
}

}  // namespace

CATCH_TEST_CASE("ATen operators per layer per micro-step stay within their budget") {
  // Budgets: measured 2026-12-04 on this code (docs/perf.md), per precision and recompute mode,
  // and for bf16 per CPU product path (kernels/linear.h): the emulated path (CPUs without
  // AVX512-BF16/AMX, or TESSERA_BF16_MATMUL=emulated) rounds and converts operands with more
  // operators than LibTorch's native bf16 GEMM. The test runs on both paths (tests/CMakeLists.txt).
  struct Case {
    torch::ScalarType dtype;
    RecomputeMode mode;
    int64_t native, emulated;
  };
  const Case cases[] = {
      {torch::kFloat, RecomputeMode::kNone, 31, 31},
      {torch::kFloat, RecomputeMode::kSelective, 38, 38},
      {torch::kFloat, RecomputeMode::kFull, 41, 41},
      {torch::kBFloat16, RecomputeMode::kNone, 89, 109},
      {torch::kBFloat16, RecomputeMode::kSelective, 112, 135},
      {torch::kBFloat16, RecomputeMode::kFull, 121, 153},
  };
  const bool native = tessera::kernels::CpuBf16MatmulPath() == tessera::kernels::Bf16MatmulPath::kNative;
  for (const Case& c : cases) {
    ModelConfig config;
    config.dim = 64;
    config.n_heads = 4;
    config.n_kv_heads = 2;
    config.ffn_dim = 192;
    config.vocab_size = 100;
    config.recompute = c.mode;
    config.n_layers = 3;
    const auto three = CountOps(config, c.dtype);
    config.n_layers = 2;
    const auto two = CountOps(config, c.dtype);
    const int64_t per_layer = Total(three) - Total(two);
    CATCH_INFO((native ? "native" : "emulated")
               << " bf16 path, " << c10::toString(c.dtype) << ", recompute " << tessera::EnumName(c.mode)
               << ": " << per_layer << " operators per layer: " << PerLayer(three, two));
    CATCH_CHECK(per_layer > 0);
    CATCH_CHECK(per_layer <= (native ? c.native : c.emulated));
  }
}
