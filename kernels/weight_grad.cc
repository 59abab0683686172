// fp32 gradient accumulation for low-precision parameters (weight_grad.h).
#include "kernels/weight_grad.h"

#include <torch/autograd.h>
#include <torch/torch.h>

namespace tessera::kernels {
namespace {

class Fp32WeightFunction : public torch::autograd::Function<Fp32WeightFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& weight) {
    ctx->saved_data["weight"] = weight;
    return weight.to(torch::kFloat);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {AccumulateWeightGrad(ctx->saved_data["weight"].toTensor(), grads[0].to(torch::kFloat))};
  }
};

class EmbeddingFunction : public torch::autograd::Function<EmbeddingFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& weight,
                               const torch::Tensor& indices) {
    ctx->saved_data["weight"] = weight;
    ctx->save_for_backward({indices});
    return torch::embedding(weight, indices).to(torch::kFloat);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor weight = ctx->saved_data["weight"].toTensor();
    const torch::Tensor indices = ctx->get_saved_variables()[0];
    // The dense scatter-add autograd runs for an fp32 embedding, in fp32 here too.
    torch::Tensor grad = torch::embedding_dense_backward(grads[0].to(torch::kFloat), indices, weight.size(0),
                                                         /*padding_idx=*/-1, /*scale_grad_by_freq=*/false);
    return {AccumulateWeightGrad(weight, grad), torch::Tensor()};
  }
};

bool IsLowPrecision(const torch::Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kHalf;
}

}  // namespace

torch::Tensor AccumulateWeightGrad(const torch::Tensor& weight, const torch::Tensor& grad) {
  if (!grad.defined() || !IsLowPrecision(weight) || !weight.requires_grad()) return grad;
  TORCH_CHECK(weight.is_leaf(), "a ", weight.scalar_type(),
              " weight must be a leaf parameter to take its gradient in fp32");
  torch::NoGradGuard no_grad;
  torch::Tensor& into = weight.mutable_grad();
  if (!into.defined()) {
    into = grad.to(torch::kFloat).reshape(weight.sizes()).clone(at::MemoryFormat::Contiguous);
  } else {
    TORCH_CHECK(into.scalar_type() == torch::kFloat, "the gradient of a ", weight.scalar_type(),
                " parameter must be fp32, found ", into.scalar_type());
    into.add_(grad.view(weight.sizes()));
  }
  return torch::Tensor();
}

torch::Tensor Fp32Weight(const torch::Tensor& weight) {
  if (!IsLowPrecision(weight)) return weight;
  return Fp32WeightFunction::apply(weight);
}

torch::Tensor Embedding(const torch::Tensor& weight, const torch::Tensor& indices) {
  if (!IsLowPrecision(weight)) return torch::embedding(weight, indices);
  return EmbeddingFunction::apply(weight, indices);
}

}  // namespace tessera::kernels
