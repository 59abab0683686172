// The vocabulary split over the tensor-parallel group: the embedding table and the output head
// hold rows [r*B, (r+1)*B) of the vocabulary on rank r, B = ceil(vocab / n), the vocabulary
// padded to n*B rows. Rows at or beyond `vocab_size` are padding: zero, never looked up by a
// valid id, and excluded from the softmax, so they never affect the loss or receive gradient.
//
//   function                   forward                                     backward
//   VocabParallelEmbedding     masked local lookup, all-reduce (sum)       identity, then the
//                              (seq-parallel: reduce-scatter along seq)    local lookup's grad
//                                                                          (seq-parallel: all-
//                                                                          gather along seq first)
//   VocabParallelCrossEntropy  all-reduce (max) of the row maxima, one     none: computed locally
//                              all-reduce (sum) of [sum exp, target logit] from the saved softmax
//
// Full logits never exist on one rank. All ranks of the group must call these in the same order
// with the same shapes; communication failures throw c10::Error.
#pragma once

#include <torch/types.h>

#include <cstdint>

#include "parallel/comm/communicator.h"
#include "parallel/tensor_parallel/shard_spec.h"

namespace tessera::parallel {

// The vocabulary rows rank `rank` of `parts` holds: dim 0, block ceil(vocab_size / parts).
ShardSpec VocabShard(int64_t vocab_size, int parts, int rank);
// The padded vocabulary: the smallest multiple of `parts` at least vocab_size.
int64_t PaddedVocabSize(int64_t vocab_size, int parts);

// tokens: int64 [batch, seq] of global ids in [0, vocab_size). weight_shard: this rank's rows
// [B, dim], the first of which is global id `vocab_begin`. Each rank looks up the ids it holds
// (zeros for the others) and the partial rows are summed: returns [batch, seq, dim] on every rank,
// or under sequence parallelism this rank's sequence block [batch, seq/n, dim]. With a group of
// one this is torch::embedding (out-of-range ids are an error there, zeros otherwise).
torch::Tensor VocabParallelEmbedding(const torch::Tensor& tokens, const torch::Tensor& weight_shard,
                                     int64_t vocab_begin, Communicator* group, bool sequence_parallel);

// Per-token cross-entropy -log softmax(logits)[target] over the whole vocabulary, from this
// rank's columns of the logits. logits_shard: [..., B] (any float dtype; all arithmetic in fp32),
// column j is global id vocab_begin + j; columns with ids >= vocab_size are padding and excluded.
// targets: int64 [...], ids in [0, vocab_size). Returns fp32 [...], equal on every rank. The
// gradient (softmax - onehot) * grad is formed from the saved fp32 softmax of this rank's
// columns and returned in the logits' dtype.
torch::Tensor VocabParallelCrossEntropy(const torch::Tensor& logits_shard, const torch::Tensor& targets,
                                        int64_t vocab_begin, int64_t vocab_size, Communicator* group);

}  // namespace tessera::parallel
