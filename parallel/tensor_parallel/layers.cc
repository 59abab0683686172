// Column- and row-parallel linear (layers.h): the conjugate functions around kernels::Linear.
#include "parallel/tensor_parallel/layers.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <vector>

#include "kernels/linear.h"
#include "kernels/swiglu_linear.h"
#include "parallel/tensor_parallel/mappings.h"

namespace tessera::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The sequence-parallel column layer as one autograd function: all-gather x along seq, then the
// product; backward gathers x again from the saved local block instead of keeping the gathered
// copy from forward to backward (tp times the block, per layer and micro-batch in flight), then
// reduce-scatters the input gradient. The arithmetic is kernels::Linear's and GatherFromSequence's,
// in the same order.
class SequenceParallelColumnLinearFunction
    : public torch::autograd::Function<SequenceParallelColumnLinearFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, at::TensorList weights,
                               Communicator* group) {
    ctx->save_for_backward({x});
    // The weights themselves (not saved copies): a bf16 weight's gradient goes to the leaf's .grad.
    ctx->saved_data["weights"] = weights.vec();
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(group);
    return kernels::LinearProduct(AllGatherSequence(x, *group), weights);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const torch::Tensor x = ctx->get_saved_variables()[0];
    const std::vector<torch::Tensor> weights = ctx->saved_data["weights"].toTensorVector();
    Communicator& group = *reinterpret_cast<Communicator*>(ctx->saved_data["group"].toInt());
    const torch::Tensor gathered = AllGatherSequence(x, group);
    torch::Tensor grad_x;
    if (ctx->needs_input_grad(0)) {
      grad_x = ReduceScatterSequence(kernels::LinearInputGrad(grads[0], weights, x.scalar_type()), group);
    }
    std::vector<bool> wanted;
    for (size_t i = 0; i < weights.size(); ++i) wanted.push_back(ctx->needs_input_grad(i + 1));
    variable_list out{grad_x};
    for (torch::Tensor& g : kernels::LinearWeightGrads(grads[0], gathered, weights, wanted)) {
      out.push_back(std::move(g));
    }
    out.emplace_back();  // group
    return out;
  }
};

}  // namespace

torch::Tensor ColumnParallelLinear(const torch::Tensor& x, at::TensorList weight_shards, Communicator* group,
                                   bool sequence_parallel) {
  if (sequence_parallel && GroupSize(group) > 1) {
    return SequenceParallelColumnLinearFunction::apply(x, weight_shards, group);
  }
  return kernels::Linear(CopyToTensorParallel(x, group), weight_shards);
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
