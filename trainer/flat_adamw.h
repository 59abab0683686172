// AdamW over flat buffers. At construction every parameter's storage moves into one contiguous
// fp32 buffer (decayed parameters first, then the rest) and its .grad becomes a view of one
// contiguous gradient buffer, so that the gradient norm, clipping and the update are a handful
// of whole-buffer operations instead of a loop over tensors. The same layout is what a sharded
// optimizer slices by data-parallel rank.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

struct NamedParameter {
  std::string name;
  torch::Tensor tensor;
  bool decay;  // receives weight decay
};

class FlatAdamW {
 public:
  FlatAdamW(std::vector<NamedParameter> params, AdamWOptions options);

  void ZeroGrad();
  // L2 norm of all gradients (fp32 accumulation).
  double GradNorm() const;
  // Scales gradients by `grad_scale` (clipping), then applies one AdamW update at `lr`.
  void Step(double lr, double grad_scale);

  int64_t numel() const { return params_.numel(); }
  int64_t decayed_numel() const { return decay_numel_; }
  int64_t step_count() const { return step_; }
  // Bytes of optimizer state (two moments) held by this process.
  int64_t StateBytes() const { return 2 * numel() * static_cast<int64_t>(sizeof(float)); }
  const torch::Tensor& flat_params() const { return params_; }
  const torch::Tensor& flat_grads() const { return grads_; }

 private:
  AdamWOptions options_;
  torch::Tensor params_, grads_, exp_avg_, exp_avg_sq_;
  int64_t decay_numel_ = 0;
  int64_t step_ = 0;
};

}  // namespace tessera
