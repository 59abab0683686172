// AdamW as in Loshchilov & Hutter / torch.optim.AdamW: decoupled decay p *= 1 - lr*wd, then
// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
#include "trainer/flat_adamw.h"

#include <torch/torch.h>

#include <cmath>

namespace tessera {

FlatAdamW::FlatAdamW(std::vector<parallel::OwnedRange> ranges, AdamWOptions options) : options_(options) {
  for (const parallel::OwnedRange& r : ranges) {
    TORCH_CHECK(r.params.scalar_type() == torch::kFloat && r.grads.scalar_type() == torch::kFloat,
                "optimizer ranges must be fp32");
    numel_ += r.params.numel();
    decayed_numel_ += r.decayed;
  }
  auto opts = ranges.empty() ? torch::TensorOptions().dtype(torch::kFloat) : ranges.front().params.options();
  exp_avg_ = torch::zeros({numel_}, opts);
  exp_avg_sq_ = torch::zeros({numel_}, opts);
  int64_t offset = 0;
  for (parallel::OwnedRange& r : ranges) {
    const int64_t n = r.params.numel();
    ranges_.push_back({r, exp_avg_.narrow(0, offset, n), exp_avg_sq_.narrow(0, offset, n)});
    offset += n;
  }
}

std::vector<torch::Tensor> FlatAdamW::ExpAvgByRange() const {
  std::vector<torch::Tensor> out;
  for (const Range& r : ranges_) out.push_back(r.exp_avg);
  return out;
}

std::vector<torch::Tensor> FlatAdamW::ExpAvgSqByRange() const {
  std::vector<torch::Tensor> out;
  for (const Range& r : ranges_) out.push_back(r.exp_avg_sq);
  return out;
}

void FlatAdamW::Step(double lr, double grad_scale) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double bias1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_));
  const double bias2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step_));
  for (Range& r : ranges_) {
    torch::Tensor& params = r.owned.params;
    torch::Tensor& grads = r.owned.grads;
    if (params.numel() == 0) continue;
    if (grad_scale != 1.0) grads.mul_(grad_scale);
    if (options_.weight_decay != 0.0 && r.owned.decayed > 0) {
      params.narrow(0, 0, r.owned.decayed).mul_(1.0 - lr * options_.weight_decay);
    }
    r.exp_avg.lerp_(grads, 1.0 - options_.beta1);
    r.exp_avg_sq.mul_(options_.beta2).addcmul_(grads, grads, 1.0 - options_.beta2);
    torch::Tensor denom = (r.exp_avg_sq.sqrt() / std::sqrt(bias2)).add_(options_.eps);
    params.addcdiv_(r.exp_avg, denom, -lr / bias1);
  }
}

}  // namespace tessera
