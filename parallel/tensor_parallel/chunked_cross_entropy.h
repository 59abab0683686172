// The output head and the cross-entropy loss fused and computed in chunks of tokens, so that the
// logits [tokens, vocab] never exist whole: forward keeps one chunk's logits at a time and saves
// only the per-token log-sum-exp; backward computes each chunk's logits again (one more head
// product, the price of the memory; Cut Cross-Entropy and Liger's fused loss make the same
// trade) and accumulates the gradients of the hidden states and of the head weight chunk by
// chunk. Vocabulary-parallel under tensor parallelism as VocabParallelCrossEntropy is: the row
// maxima and the sums of exp and target logits are all-reduced over the group per chunk.
//
// Memory: per chunk, the logits in the compute dtype and two fp32 copies (logits, then their
// exp): chunk * (vocab / tp) * (2 or 4 + 8) bytes, against tokens * (vocab / tp) * the same for
// the unchunked head (and its fp32 softmax saved for backward).
#pragma once

#include <torch/types.h>

#include <cstdint>

#include "parallel/comm/communicator.h"

namespace tessera::parallel {

struct ChunkedCrossEntropyOptions {
  int64_t chunk_tokens = 2048;  // rows of hidden per chunk (> 0)
  // This rank's vocabulary columns: weight row j is global id vocab_begin + j; ids at or beyond
  // vocab_size are padding, excluded from the softmax.
  int64_t vocab_begin = 0;
  int64_t vocab_size = 0;
  Communicator* group = nullptr;  // the tensor-parallel group (nullptr: one rank)
  // hidden is this rank's sequence block [batch, seq/tp, dim]: gathered along seq in forward
  // and again in backward (only the block is kept), the input gradient reduce-scattered back.
  bool sequence_parallel = false;
  // PaLM's z-loss: z_loss x log(Z)^2 per token is added to each token's loss (Z the softmax's
  // normaliser, log Z the log-sum-exp the function keeps anyway); 0: plain cross-entropy.
  double z_loss = 0.0;
};

// The mean over tokens of -log softmax(hidden W^T)[target] (+ z_loss x log(Z)^2), with hidden [..., dim]
// (fp32 or bf16: the head's product runs in that dtype, as kernels::Linear does), weight [vocab / tp, dim]
// (this rank's rows; a bf16 weight's gradient goes to its fp32 .grad as kernels::Linear's does)
// and targets int64 with one id per row (of the gathered rows under SP). Returns an fp32 scalar,
// equal on every rank of the group. Without SP the gradient of `hidden` is this rank's part
// only: the caller sums it over the group (CopyToTensorParallel in front of the head does);
// under SP it is already the reduce-scattered sum.
torch::Tensor ChunkedLinearCrossEntropy(const torch::Tensor& hidden, const torch::Tensor& weight,
                                        const torch::Tensor& targets,
                                        const ChunkedCrossEntropyOptions& options);

}  // namespace tessera::parallel
