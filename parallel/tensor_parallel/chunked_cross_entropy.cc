// The chunked head + cross-entropy (chunked_cross_entropy.h).
#include "parallel/tensor_parallel/chunked_cross_entropy.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "kernels/linear.h"
#include "kernels/weight_grad.h"
#include "parallel/tensor_parallel/mappings.h"

namespace tessera::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void AllReduceOrThrow(Communicator* group, torch::Tensor& t, ReduceOp op, const char* what) {
  if (GroupSize(group) == 1) return;
  const absl::Status status = group->AllReduce(t, op);
  TORCH_CHECK(status.ok(), "chunked cross-entropy: ", what, " on group ", group->name(), " (", group->size(),
              " ranks) failed: ", status.ToString());
}

// One chunk's logits in fp32, with the padding columns at -inf. `valid`: this rank's real columns.
torch::Tensor ChunkLogits(const torch::Tensor& hidden_chunk, const torch::Tensor& weight, int64_t valid) {
  torch::Tensor logits =
      kernels::LinearProduct(hidden_chunk, weight).to(torch::kFloat, /*non_blocking=*/false, /*copy=*/true);
  const int64_t block = logits.size(-1);
  if (valid < block) logits.narrow(-1, valid, block - valid).fill_(-std::numeric_limits<float>::infinity());
  return logits;
}

// The hidden states as [tokens, dim] rows; under sequence parallelism this rank's block
// [batch, seq/tp, dim] gathered along seq first.
torch::Tensor Rows(const torch::Tensor& hidden, Communicator* group, bool sequence_parallel) {
  const torch::Tensor full =
      sequence_parallel && GroupSize(group) > 1 ? AllGatherSequence(hidden, *group) : hidden;
  return full.reshape({-1, full.size(-1)});
}

struct TargetColumns {
  torch::Tensor index;    // [rows, 1]: the target's local column (0 where outside)
  torch::Tensor outside;  // [rows]: the target is not among this rank's valid columns
};

TargetColumns LocalTargets(const torch::Tensor& targets, int64_t vocab_begin, int64_t valid) {
  const torch::Tensor local = targets.to(torch::kLong) - vocab_begin;
  const torch::Tensor outside = (local < 0) | (local >= valid);
  return {local.masked_fill(outside, 0).unsqueeze(-1), outside};
}

class ChunkedLinearCrossEntropyFunction
    : public torch::autograd::Function<ChunkedLinearCrossEntropyFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& local_hidden,
                               const torch::Tensor& weight, const torch::Tensor& targets_any_shape,
                               int64_t chunk_tokens, int64_t vocab_begin, int64_t vocab_size,
                               Communicator* group, bool sequence_parallel, double z_loss) {
    const torch::Tensor hidden = Rows(local_hidden, group, sequence_parallel);
    const torch::Tensor targets = targets_any_shape.reshape({-1});
    TORCH_CHECK(targets.size(0) == hidden.size(0), "chunked cross-entropy: ", targets.size(0),
                " targets for ", hidden.size(0), " rows of hidden states");
    const int64_t rows = hidden.size(0);
    const int64_t valid = std::clamp<int64_t>(vocab_size - vocab_begin, 0, weight.size(0));
    torch::Tensor lse = torch::empty({rows}, hidden.options().dtype(torch::kFloat));
    torch::Tensor losses = torch::empty({rows}, lse.options());
    for (int64_t begin = 0; begin < rows; begin += chunk_tokens) {
      const int64_t n = std::min(chunk_tokens, rows - begin);
      torch::Tensor logits = ChunkLogits(hidden.narrow(0, begin, n), weight, valid);
      // The same steps as VocabParallelCrossEntropy: shift by the global row maximum, then one
      // all-reduce of [sum exp, target logit] (the target is held by exactly one rank).
      torch::Tensor row_max = std::get<0>(logits.max(-1)).contiguous();
      AllReduceOrThrow(group, row_max, ReduceOp::kMax, "all-reduce (max)");
      logits.sub_(row_max.unsqueeze(-1));
      const TargetColumns t = LocalTargets(targets.narrow(0, begin, n), vocab_begin, valid);
      const torch::Tensor target_logit = logits.gather(-1, t.index).squeeze(-1).masked_fill(t.outside, 0.0);
      torch::Tensor sums = torch::stack({logits.exp_().sum(-1), target_logit});
      AllReduceOrThrow(group, sums, ReduceOp::kSum, "all-reduce (sum)");
      const torch::Tensor log_sum = sums[0].log();
      lse.narrow(0, begin, n).copy_(log_sum + row_max);
      losses.narrow(0, begin, n).copy_(log_sum - sums[1]);
    }
    if (z_loss != 0.0) losses.add_(lse.square() * z_loss);
    // Under SP only this rank's sequence block is kept: backward gathers it again.
    ctx->save_for_backward({local_hidden, targets, lse});
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(group);
    ctx->saved_data["sequence_parallel"] = sequence_parallel;
    // The weight itself, not a saved copy of it: unpacked from save_for_backward it would not be
    // the leaf whose fp32 .grad a bf16 weight's gradient goes to.
    ctx->saved_data["weight"] = weight;
    ctx->saved_data["chunk_tokens"] = chunk_tokens;
    ctx->saved_data["vocab_begin"] = vocab_begin;
    ctx->saved_data["valid"] = valid;
    ctx->saved_data["z_loss"] = z_loss;
    return losses.mean();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &local_hidden = saved[0], &targets = saved[1], &lse = saved[2];
    Communicator* group = reinterpret_cast<Communicator*>(ctx->saved_data["group"].toInt());
    const bool sequence_parallel = ctx->saved_data["sequence_parallel"].toBool();
    const torch::Tensor hidden = Rows(local_hidden, group, sequence_parallel);
    const torch::Tensor weight = ctx->saved_data["weight"].toTensor();
    const int64_t chunk_tokens = ctx->saved_data["chunk_tokens"].toInt();
    const int64_t vocab_begin = ctx->saved_data["vocab_begin"].toInt();
    const int64_t valid = ctx->saved_data["valid"].toInt();
    const double z_loss = ctx->saved_data["z_loss"].toDouble();
    const int64_t rows = hidden.size(0);
    // d mean / d logit_j = (softmax_j - [j == target]) / rows, times the incoming gradient; the
    // z-loss adds z * 2 log Z * softmax_j: the softmax scaled by 1 + 2 z log Z.
    const torch::Tensor scale = grads[0].to(torch::kFloat) / static_cast<double>(rows);
    const bool want_hidden = ctx->needs_input_grad(0), want_weight = ctx->needs_input_grad(1);
    torch::Tensor grad_hidden = want_hidden ? torch::empty_like(hidden) : torch::Tensor();
    // An fp32 weight's gradient goes back through autograd: summed over chunks here. A bf16
    // weight's goes straight into its fp32 .grad, chunk by chunk (kernels/weight_grad.h).
    const bool accumulate_in_grad =
        weight.scalar_type() != torch::kFloat && weight.scalar_type() != torch::kDouble;
    torch::Tensor grad_weight;
    for (int64_t begin = 0; begin < rows; begin += chunk_tokens) {
      const int64_t n = std::min(chunk_tokens, rows - begin);
      const torch::Tensor h = hidden.narrow(0, begin, n);
      torch::Tensor d = ChunkLogits(h, weight, valid);
      d.sub_(lse.narrow(0, begin, n).unsqueeze(-1)).exp_();
      if (z_loss != 0.0) d.mul_(lse.narrow(0, begin, n).mul(2.0 * z_loss).add_(1.0).unsqueeze(-1));
      const TargetColumns t = LocalTargets(targets.narrow(0, begin, n), vocab_begin, valid);
      d.scatter_add_(-1, t.index,
                     torch::ones({n, 1}, d.options()).neg_().masked_fill_(t.outside.unsqueeze(-1), 0.0));
      d.mul_(scale);
      // The head's backward in the product's dtype, as kernels::Linear's.
      const torch::Tensor d_in_dtype = d.to(hidden.scalar_type());
      if (want_hidden)
        grad_hidden.narrow(0, begin, n)
            .copy_(kernels::LinearInputGrad(d_in_dtype, weight, hidden.scalar_type()));
      if (want_weight) {
        torch::Tensor part = kernels::LinearWeightGradFp32(d_in_dtype, h);
        if (accumulate_in_grad) {
          kernels::AccumulateWeightGrad(weight, part);
        } else if (grad_weight.defined()) {
          grad_weight.add_(part);
        } else {
          grad_weight = std::move(part);
        }
      }
    }
    if (grad_weight.defined()) grad_weight = grad_weight.to(weight.scalar_type());
    if (grad_hidden.defined()) {
      // Back to the input's shape; under SP the sum over the group of this rank's block.
      if (sequence_parallel) {
        std::vector<int64_t> gathered = local_hidden.sizes().vec();
        gathered[1] *= GroupSize(group);
        grad_hidden = ReduceScatterSequence(grad_hidden.view(gathered), *group);
      } else {
        grad_hidden = grad_hidden.view(local_hidden.sizes());
      }
    }
    return {grad_hidden,     grad_weight,     torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor ChunkedLinearCrossEntropy(const torch::Tensor& hidden, const torch::Tensor& weight,
                                        const torch::Tensor& targets,
                                        const ChunkedCrossEntropyOptions& options) {
  TORCH_CHECK(hidden.dim() >= 2 && weight.dim() == 2 && hidden.size(-1) == weight.size(1),
              "chunked cross-entropy: hidden [..., dim] and weight [vocab, dim] expected, got ",
              hidden.sizes(), " and ", weight.sizes());
  const bool sp = options.sequence_parallel && GroupSize(options.group) > 1;
  TORCH_CHECK(!sp || hidden.dim() == 3, "chunked cross-entropy: under sequence parallelism hidden is ",
              "[batch, seq/tp, dim], got ", hidden.sizes());
  const int64_t rows = hidden.numel() / hidden.size(-1) * (sp ? GroupSize(options.group) : 1);
  TORCH_CHECK(targets.numel() == rows, "chunked cross-entropy: targets ", targets.sizes(), " must hold ",
              rows, " ids, one per row of hidden states");
  TORCH_CHECK(options.chunk_tokens > 0, "chunked cross-entropy: chunk_tokens must be positive, got ",
              options.chunk_tokens);
  return ChunkedLinearCrossEntropyFunction::apply(hidden, weight, targets, options.chunk_tokens,
                                                  options.vocab_begin, options.vocab_size, options.group, sp,
                                                  options.z_loss);
}

}  // namespace tessera::parallel
