// Vocabulary-parallel embedding and cross-entropy (vocab_parallel.h).
#include "parallel/tensor_parallel/vocab_parallel.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <algorithm>
#include <limits>

#include "kernels/weight_grad.h"
#include "parallel/tensor_parallel/mappings.h"

namespace tessera::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void ThrowIfError(const absl::Status& status, const char* op, const Communicator& group) {
  TORCH_CHECK(status.ok(), "vocab-parallel cross-entropy: ", op, " on group ", group.name(), " (",
              group.size(), " ranks) failed: ", status.ToString());
}

// Forward: the row maxima (all-reduce max), then the sums of exp and the target logits (one
// all-reduce sum of both). Backward: local, from the saved softmax of this rank's columns.
class VocabParallelCrossEntropyFunction
    : public torch::autograd::Function<VocabParallelCrossEntropyFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& targets, int64_t vocab_begin, int64_t vocab_size,
                               Communicator* group) {
    const int64_t block = logits.size(-1);
    // A fp32 copy of this rank's columns: it becomes the softmax in place.
    torch::Tensor probs = logits.to(torch::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();
    const int64_t valid = std::clamp<int64_t>(vocab_size - vocab_begin, 0, block);
    if (valid < block) probs.narrow(-1, valid, block - valid).fill_(-std::numeric_limits<float>::infinity());

    // Shift by the global row maximum so exp never overflows.
    torch::Tensor row_max = std::get<0>(probs.max(-1)).contiguous();
    if (GroupSize(group) > 1)
      ThrowIfError(group->AllReduce(row_max, ReduceOp::kMax), "all-reduce (max)", *group);
    probs.sub_(row_max.unsqueeze(-1));

    // The (shifted) target logit: held by exactly one rank, zero elsewhere, so a sum gathers it.
    const torch::Tensor local_target = targets.to(torch::kLong) - vocab_begin;
    const torch::Tensor outside = (local_target < 0) | (local_target >= valid);
    const torch::Tensor index = local_target.masked_fill(outside, 0).unsqueeze(-1);
    const torch::Tensor target_logit = probs.gather(-1, index).squeeze(-1).masked_fill(outside, 0.0);

    probs.exp_();
    torch::Tensor sums = torch::stack({probs.sum(-1), target_logit});  // [2, ...]: one collective
    if (GroupSize(group) > 1)
      ThrowIfError(group->AllReduce(sums, ReduceOp::kSum), "all-reduce (sum)", *group);
    const torch::Tensor sum_exp = sums[0];
    probs.div_(sum_exp.unsqueeze(-1));

    ctx->save_for_backward({probs, index, outside});
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits.scalar_type());
    return sum_exp.log() - sums[1];
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& probs = saved[0];
    const torch::Tensor& index = saved[1];
    const torch::Tensor& outside = saved[2];
    const torch::Tensor g = grads[0].to(torch::kFloat);
    // d loss / d logit_j = softmax_j - [j == target], times the incoming gradient.
    torch::Tensor grad = probs * g.unsqueeze(-1);
    grad.scatter_add_(-1, index, (-g).masked_fill(outside, 0.0).unsqueeze(-1));
    const auto dtype = static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grad.to(dtype), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

ShardSpec VocabShard(int64_t vocab_size, int parts, int rank) {
  ShardSpec spec;
  spec.dim = 0;
  spec.parts = parts;
  spec.index = rank;
  spec.global_size = vocab_size;
  return spec;
}

int64_t PaddedVocabSize(int64_t vocab_size, int parts) { return (vocab_size + parts - 1) / parts * parts; }

torch::Tensor VocabParallelEmbedding(const torch::Tensor& tokens, const torch::Tensor& weight_shard,
                                     int64_t vocab_begin, Communicator* group, bool sequence_parallel) {
  if (GroupSize(group) == 1)
    return kernels::Embedding(weight_shard, vocab_begin == 0 ? tokens : tokens - vocab_begin);
  const int64_t rows = weight_shard.size(0);
  const torch::Tensor outside = (tokens < vocab_begin) | (tokens >= vocab_begin + rows);
  const torch::Tensor local = (tokens - vocab_begin).masked_fill(outside, 0);
  const torch::Tensor partial =
      kernels::Embedding(weight_shard, local).masked_fill(outside.unsqueeze(-1), 0.0);
  return sequence_parallel ? ReduceScatterToSequence(partial, group)
                           : ReduceFromTensorParallel(partial, group);
}

torch::Tensor VocabParallelCrossEntropy(const torch::Tensor& logits_shard, const torch::Tensor& targets,
                                        int64_t vocab_begin, int64_t vocab_size, Communicator* group) {
  TORCH_CHECK(
      logits_shard.dim() >= 1 && targets.sizes() == logits_shard.sizes().slice(0, logits_shard.dim() - 1),
      "vocab-parallel cross-entropy: logits ", logits_shard.sizes(), " and targets ", targets.sizes(),
      " must agree on every dimension but the last");
  return VocabParallelCrossEntropyFunction::apply(logits_shard, targets, vocab_begin, vocab_size, group);
}

}  // namespace tessera::parallel
