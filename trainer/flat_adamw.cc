// AdamW as in Loshchilov & Hutter / torch.optim.AdamW: decoupled decay p *= 1 - lr*wd, then
// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
#include "trainer/flat_adamw.h"

#include <torch/torch.h>

#include <cmath>

namespace tessera {

FlatAdamW::FlatAdamW(std::vector<NamedParameter> params, AdamWOptions options)
    : options_(options) {
  std::stable_partition(params.begin(), params.end(), [](const NamedParameter& p) { return p.decay; });
  int64_t total = 0;
  for (const NamedParameter& p : params) {
    TORCH_CHECK(p.tensor.scalar_type() == torch::kFloat, "parameter ", p.name, " is not fp32");
    total += p.tensor.numel();
    if (p.decay) decay_numel_ += p.tensor.numel();
  }
  auto options32 = params.empty() ? torch::TensorOptions().dtype(torch::kFloat)
                                  : params.front().tensor.options();
  params_ = torch::empty({total}, options32);
  grads_ = torch::zeros({total}, options32);
  exp_avg_ = torch::zeros({total}, options32);
  exp_avg_sq_ = torch::zeros({total}, options32);
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (NamedParameter& p : params) {
    const int64_t n = p.tensor.numel();
    torch::Tensor slot = params_.narrow(0, offset, n).view(p.tensor.sizes());
    slot.copy_(p.tensor);
    p.tensor.set_data(slot);
    p.tensor.mutable_grad() = grads_.narrow(0, offset, n).view(p.tensor.sizes());
    offset += n;
  }
}

void FlatAdamW::ZeroGrad() { grads_.zero_(); }

double FlatAdamW::GradNorm() const { return grads_.norm().item<double>(); }

void FlatAdamW::Step(double lr, double grad_scale) {
  torch::NoGradGuard no_grad;
  ++step_;
  if (grad_scale != 1.0) grads_.mul_(grad_scale);
  if (options_.weight_decay != 0.0 && decay_numel_ > 0) {
    params_.narrow(0, 0, decay_numel_).mul_(1.0 - lr * options_.weight_decay);
  }
  exp_avg_.lerp_(grads_, 1.0 - options_.beta1);
  exp_avg_sq_.mul_(options_.beta2).addcmul_(grads_, grads_, 1.0 - options_.beta2);
  const double bias1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_));
  const double bias2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step_));
  torch::Tensor denom = (exp_avg_sq_.sqrt() / std::sqrt(bias2)).add_(options_.eps);
  params_.addcdiv_(exp_avg_, denom, -lr / bias1);
}

}  // namespace tessera
