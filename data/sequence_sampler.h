// Turns a token stream into training sequences. Sequence j of the stream is a window of
// seq_len + 1 tokens (inputs and shifted targets); which window is a pure function of
// (seed, j), never of the batch layout, so any grouping of sequences into batches reads the
// same data.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace tessera::data {

enum class Sampling { kRandom, kSequential };

struct Batch {
  torch::Tensor inputs;   // [batch, seq_len] int64
  torch::Tensor targets;  // [batch, seq_len] int64
};

class SequenceSampler {
 public:
  // `tokens` must outlive the sampler and hold at least seq_len + 1 tokens.
  SequenceSampler(const std::vector<int32_t>* tokens, int64_t seq_len, Sampling sampling,
                  uint64_t seed);

  // Start offset of sequence j in the token stream.
  int64_t WindowStart(int64_t j) const;
  // Sequences first, first+1, ..., first+count-1 as one batch (CPU tensors).
  Batch Sequences(int64_t first, int64_t count) const;

 private:
  const std::vector<int32_t>* tokens_;
  int64_t seq_len_;
  Sampling sampling_;
  uint64_t seed_;
};

}  // namespace tessera::data
