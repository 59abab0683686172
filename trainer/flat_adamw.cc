// AdamW as in Loshchilov & Hutter / torch.optim.AdamW: decoupled decay p *= 1 - lr*wd, then
// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). On CPU one fused pass per range
// (kernels/cpu_loops.h AdamWElements); elsewhere the same arithmetic as LibTorch tensor ops.
// With bf16 parameters p is the range's fp32 master, and the pass also writes the bf16 weights.
#include "trainer/flat_adamw.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu_loops.h"

namespace tessera {

FlatAdamW::FlatAdamW(std::vector<parallel::OwnedRange> ranges, AdamWOptions options) : options_(options) {
  for (const parallel::OwnedRange& r : ranges) {
    const torch::Tensor& updated = r.master.defined() ? r.master : r.params;
    TORCH_CHECK(updated.scalar_type() == torch::kFloat && r.grads.scalar_type() == torch::kFloat,
                "optimizer ranges must be fp32 (or carry an fp32 master)");
    TORCH_CHECK(!r.master.defined() || r.params.scalar_type() == torch::kBFloat16,
                "an fp32 master goes with bf16 parameters, found ", r.params.scalar_type());
    numel_ += r.params.numel();
    decayed_numel_ += r.decayed;
  }
  auto opts = ranges.empty() ? torch::TensorOptions().dtype(torch::kFloat) : ranges.front().grads.options();
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
    if (r.owned.params.numel() == 0) continue;
    if (r.owned.params.is_cpu()) {
      StepRangeFused(r, lr, grad_scale, bias1, bias2);
    } else {
      StepRangeWithTensorOps(r, lr, grad_scale, bias1, bias2);
    }
  }
}

void FlatAdamW::StepRangeFused(Range& r, double lr, double grad_scale, double bias1, double bias2) {
  const bool has_master = r.owned.master.defined();
  float* params = (has_master ? r.owned.master : r.owned.params).data_ptr<float>();
  // bf16 weights as raw bit patterns: cpu_loops.cc does not see LibTorch's types.
  uint16_t* params_bf16 =
      has_master ? reinterpret_cast<uint16_t*>(r.owned.params.data_ptr<at::BFloat16>()) : nullptr;
  const float* grads = r.owned.grads.data_ptr<float>();
  float* exp_avg = r.exp_avg.data_ptr<float>();
  float* exp_avg_sq = r.exp_avg_sq.data_ptr<float>();
  kernels::cpu::AdamWScalars s{static_cast<float>(grad_scale),           1.0f,
                               static_cast<float>(1.0 - options_.beta1), static_cast<float>(options_.beta2),
                               static_cast<float>(1.0 - options_.beta2), static_cast<float>(std::sqrt(bias2)),
                               static_cast<float>(options_.eps),         static_cast<float>(-lr / bias1)};
  kernels::cpu::AdamWScalars decayed = s;
  decayed.decay = static_cast<float>(1.0 - lr * options_.weight_decay);
  const int64_t split = r.owned.decayed;  // elements [0, split) are decayed
  // Memory-bound: chunks of 64K elements (768 KiB of state) keep every core streaming.
  at::parallel_for(0, r.owned.params.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    auto update = [&](int64_t from, int64_t to, const kernels::cpu::AdamWScalars& scalars) {
      if (has_master) {
        kernels::cpu::AdamWElementsBf16(params, params_bf16, grads, exp_avg, exp_avg_sq, from, to, scalars);
      } else {
        kernels::cpu::AdamWElements(params, grads, exp_avg, exp_avg_sq, from, to, scalars);
      }
    };
    if (begin < split) update(begin, std::min(end, split), decayed);
    if (end > split) update(std::max(begin, split), end, s);
  });
}

void FlatAdamW::StepRangeWithTensorOps(Range& r, double lr, double grad_scale, double bias1, double bias2) {
  torch::Tensor& params = r.owned.master.defined() ? r.owned.master : r.owned.params;
  const torch::Tensor grads = grad_scale != 1.0 ? r.owned.grads * grad_scale : r.owned.grads;
  if (options_.weight_decay != 0.0 && r.owned.decayed > 0) {
    params.narrow(0, 0, r.owned.decayed).mul_(1.0 - lr * options_.weight_decay);
  }
  r.exp_avg.lerp_(grads, 1.0 - options_.beta1);
  r.exp_avg_sq.mul_(options_.beta2).addcmul_(grads, grads, 1.0 - options_.beta2);
  torch::Tensor denom = (r.exp_avg_sq.sqrt() / std::sqrt(bias2)).add_(options_.eps);
  params.addcdiv_(r.exp_avg, denom, -lr / bias1);
  if (r.owned.master.defined()) r.owned.params.copy_(params);  // the bf16 weights, rounded once
}

}  // namespace tessera
