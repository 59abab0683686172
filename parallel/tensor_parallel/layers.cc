// Column- and row-parallel linear (layers.h): the conjugate functions around kernels::Linear.
#include "parallel/tensor_parallel/layers.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <algorithm>
#include <vector>

#include "kernels/linear.h"
#include "kernels/swiglu_linear.h"
#include "parallel/tensor_parallel/mappings.h"

namespace tessera::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The column layer as one autograd function, so that its backward can overlap the input
// gradient's collective with the weight gradient (ColumnParallelLinearBackward). Forward: the
// product, after the all-gather of x along seq under sequence parallelism. Backward gathers x
// again from the saved local block instead of keeping the gathered copy from forward to backward
// (tp times the block, per layer and micro-batch in flight). The arithmetic is kernels::Linear's
// with CopyToTensorParallel's or GatherFromSequence's collectives, in the same order.
class ColumnParallelLinearFunction : public torch::autograd::Function<ColumnParallelLinearFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, at::TensorList weights,
                               Communicator* group, bool sequence_parallel) {
    ctx->save_for_backward({x});
    // The weights themselves (not saved copies): a bf16 weight's gradient goes to the leaf's .grad.
    ctx->saved_data["weights"] = weights.vec();
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(group);
    ctx->saved_data["sp"] = sequence_parallel;
    return kernels::LinearProduct(sequence_parallel ? AllGatherSequence(x, *group) : x, weights);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const torch::Tensor x = ctx->get_saved_variables()[0];
    const std::vector<torch::Tensor> weights = ctx->saved_data["weights"].toTensorVector();
    Communicator* group = reinterpret_cast<Communicator*>(ctx->saved_data["group"].toInt());
    std::vector<bool> wanted;
    for (size_t i = 0; i < weights.size(); ++i) wanted.push_back(ctx->needs_input_grad(i + 1));
    ColumnLinearGrads got = ColumnParallelLinearBackward(grads[0], x, weights, ctx->needs_input_grad(0),
                                                         wanted, group, ctx->saved_data["sp"].toBool());
    variable_list out{std::move(got.input)};
    for (torch::Tensor& g : got.weights) out.push_back(std::move(g));
    out.emplace_back();  // group
    out.emplace_back();  // sequence_parallel
    return out;
  }
};

// Whether ColumnParallelLinearFunction's arithmetic is kernels::Linear's for these operands: a
// bf16 x (Linear's own bf16 functions), or weights of x's dtype. Otherwise (fp32 x with bf16
// weights) Linear casts the weights inside autograd, which rounds their gradient to bf16.
bool SameArithmeticAsLinear(const torch::Tensor& x, at::TensorList weights) {
  if (x.scalar_type() == torch::kBFloat16) return true;
  for (const torch::Tensor& w : weights) {
    if (w.scalar_type() != x.scalar_type()) return false;
  }
  return true;
}

}  // namespace

ColumnLinearGrads ColumnParallelLinearBackward(const torch::Tensor& grad_y, const torch::Tensor& x,
                                               at::TensorList weights, bool want_input,
                                               const std::vector<bool>& want_weights, Communicator* group,
                                               bool sequence_parallel) {
  torch::NoGradGuard no_grad;
  const bool sp = sequence_parallel && GroupSize(group) > 1;
  const bool any_weight = std::find(want_weights.begin(), want_weights.end(), true) != want_weights.end();
  // The gathered input first, blocking: the weight gradient cannot start without it, and the
  // group's collectives keep their order (all-gather, then the input gradient's).
  const torch::Tensor product_input = sp && any_weight ? AllGatherSequence(x, *group) : x;
  PendingCollective input_grad{torch::Tensor()};
  if (want_input) {
    const torch::Tensor partial = kernels::LinearInputGrad(grad_y, weights, x.scalar_type());
    input_grad = sp ? ReduceScatterSequenceAsync(partial, *group) : AllReduceSumAsync(partial, group);
  }
  // While the input gradient's collective is in flight (nothing here reads it): the weight
  // gradient, none when no weight wants one (a zero-bubble input pass), so the wait follows at once.
  ColumnLinearGrads out;
  out.weights = kernels::LinearWeightGrads(grad_y, product_input, weights, want_weights);
  out.input = input_grad.Wait();
  return out;
}

torch::Tensor ColumnParallelLinear(const torch::Tensor& x, at::TensorList weight_shards, Communicator* group,
                                   bool sequence_parallel) {
  const bool sp = sequence_parallel && GroupSize(group) > 1;
  if (GroupSize(group) == 1 || (!sp && !SameArithmeticAsLinear(x, weight_shards))) {
    return kernels::Linear(CopyToTensorParallel(x, group), weight_shards);
  }
  return ColumnParallelLinearFunction::apply(x, weight_shards, group, sp);
}

torch::Tensor RowParallelLinear(const torch::Tensor& x, const torch::Tensor& weight_shard,
                                Communicator* group, bool sequence_parallel) {
  const torch::Tensor partial = kernels::Linear(x, weight_shard);
  return sequence_parallel ? ReduceScatterToSequence(partial, group)
                           : ReduceFromTensorParallel(partial, group);
}

torch::Tensor RowParallelSwigluLinear(const torch::Tensor& gate_up, const torch::Tensor& weight_shard,
                                      Communicator* group, bool sequence_parallel) {
  const torch::Tensor partial = kernels::SwigluLinear(gate_up, weight_shard);
  return sequence_parallel ? ReduceScatterToSequence(partial, group)
                           : ReduceFromTensorParallel(partial, group);
}

}  // namespace tessera::parallel
