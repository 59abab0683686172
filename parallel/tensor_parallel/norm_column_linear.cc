// RMSNorm + column-parallel linear with the norm's output recomputed (norm_column_linear.h).
#include "parallel/tensor_parallel/norm_column_linear.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <vector>

#include "kernels/linear.h"
#include "kernels/rms_norm.h"
#include "kernels/weight_grad.h"
#include "parallel/tensor_parallel/layers.h"
#include "parallel/tensor_parallel/mappings.h"

namespace tessera::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Options {
  double eps;
  torch::ScalarType dtype;
  Communicator* group;
  bool sequence_parallel;
};

torch::Tensor Normalised(const torch::Tensor& h, const torch::Tensor& norm_weight, const Options& o) {
  return kernels::RmsNorm(h, kernels::Fp32Weight(norm_weight), o.eps, o.dtype);
}

// The product's input: the normalised block gathered along the sequence, or as it is.
torch::Tensor ProductInput(const torch::Tensor& n, const Options& o) {
  return o.sequence_parallel ? AllGatherSequence(n, *o.group) : n;
}

Options OptionsOf(AutogradContext* ctx) {
  return {ctx->saved_data["eps"].toDouble(), static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt()),
          reinterpret_cast<Communicator*>(ctx->saved_data["group"].toInt()), ctx->saved_data["sp"].toBool()};
}

// Inputs: h, then the parameters (the norm's weight, the product's weights), then eps, the norm's
// output dtype, the group and whether sequence parallelism applies.
class NormColumnLinearFunction : public torch::autograd::Function<NormColumnLinearFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& h, at::TensorList params,
                               double eps, int64_t dtype, int64_t group, bool sequence_parallel) {
    ctx->save_for_backward({h});
    ctx->saved_data["params"] = params.vec();  // the parameters themselves: nothing copied
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["dtype"] = dtype;
    ctx->saved_data["group"] = group;
    ctx->saved_data["sp"] = sequence_parallel;
    const Options o = OptionsOf(ctx);
    const torch::Tensor n = Normalised(h, params[0], o);
    return kernels::LinearProduct(ProductInput(n, o), params.slice(1));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const torch::Tensor h = ctx->get_saved_variables()[0];
    const std::vector<torch::Tensor> params = ctx->saved_data["params"].toTensorVector();
    const std::vector<torch::Tensor> weights(params.begin() + 1, params.end());
    const Options o = OptionsOf(ctx);
    variable_list out(1 + params.size() + 4);
    const bool want_h = ctx->needs_input_grad(0) && h.requires_grad();
    const bool want_norm = ctx->needs_input_grad(1) && params[0].requires_grad();
    std::vector<bool> wanted;
    for (size_t i = 0; i < weights.size(); ++i) wanted.push_back(ctx->needs_input_grad(2 + i));
    // The norm again, recorded when its own backward is wanted.
    const torch::Tensor leaf = h.detach().requires_grad_(want_h);
    torch::Tensor n;
    {
      torch::AutoGradMode record(want_h || want_norm);
      n = Normalised(leaf, params[0], o);
    }
    // The product's backward, its input gradient's collective overlapping its weight gradient
    // (layers.h). The gradient of the normalised activations is formed whenever the norm's
    // backward runs: a zero-bubble weight pass forms it again for the norm's weight, as its
    // backward restricted to the parameters does for every layer after this one (keeping it from
    // the input pass would hold two activations per layer until then).
    ColumnLinearGrads got = ColumnParallelLinearBackward(grads[0], n.detach(), weights, want_h || want_norm,
                                                         wanted, o.group, o.sequence_parallel);
    for (size_t i = 0; i < got.weights.size(); ++i) out[2 + i] = std::move(got.weights[i]);
    if (want_h || want_norm) BackwardThroughNorm(got.input, leaf, n, params[0], want_h, want_norm, out);
    return out;
  }

 private:
  // The gradients of h and of the norm's weight through the recorded norm, from the normalised
  // activations' gradient grad_n.
  static void BackwardThroughNorm(const torch::Tensor& grad_n, const torch::Tensor& leaf,
                                  const torch::Tensor& n, const torch::Tensor& norm_weight, bool want_h,
                                  bool want_norm, variable_list& out) {
    std::vector<torch::Tensor> wrt;
    std::vector<size_t> slot;
    if (want_h) {
      wrt.push_back(leaf);
      slot.push_back(0);
    }
    if (want_norm) {
      wrt.push_back(norm_weight);
      slot.push_back(1);
    }
    const variable_list got = torch::autograd::grad({n}, wrt, {grad_n}, /*retain_graph=*/false,
                                                    /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t k = 0; k < got.size(); ++k) out[slot[k]] = got[k];
  }
};

}  // namespace

torch::Tensor NormColumnParallelLinear(const torch::Tensor& h, const torch::Tensor& norm_weight, double eps,
                                       torch::ScalarType norm_dtype, at::TensorList weights,
                                       Communicator* group, bool sequence_parallel) {
  const bool sp = sequence_parallel && GroupSize(group) > 1;
  bool any = h.requires_grad() || norm_weight.requires_grad();
  for (const torch::Tensor& w : weights) any = any || w.requires_grad();
  if (!torch::GradMode::is_enabled() || !any) {
    return ColumnParallelLinear(kernels::RmsNorm(h, kernels::Fp32Weight(norm_weight), eps, norm_dtype),
                                weights, group, sequence_parallel);
  }
  std::vector<torch::Tensor> params = {norm_weight};
  params.insert(params.end(), weights.begin(), weights.end());
  return NormColumnLinearFunction::apply(h, at::TensorList(params), eps, static_cast<int64_t>(norm_dtype),
                                         reinterpret_cast<int64_t>(group), sp);
}

}  // namespace tessera::parallel
