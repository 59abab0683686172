// Which tokens of a sequence each rank of a context-parallel group holds. The sequence is cut
// into 2 x cp chunks of equal length and rank i holds chunks i and 2 cp - 1 - i, in that order:
// under a causal mask the early chunks attend to few keys and the late ones to many, so pairing
// them gives every rank the same attention work (the layout Llama 3 trained its long context
// with). Pure index arithmetic, no LibTorch; tested without MPI.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::parallel {

class ContextChunks {
 public:
  // `seq`: the whole sequence; `size`: the group's ranks (>= 1); `rank` in [0, size). Fails,
  // naming the numbers, when seq is not a multiple of 2 x size.
  static absl::StatusOr<ContextChunks> Create(int64_t seq, int size, int rank);

  int64_t seq() const { return seq_; }
  int size() const { return size_; }
  int rank() const { return rank_; }
  // Tokens per chunk, and per rank (two chunks).
  int64_t chunk() const { return seq_ / (2 * size_); }
  int64_t local() const { return 2 * chunk(); }
  // The global chunk index of this rank's local chunk `l` (0 or 1): rank, then 2 size - 1 - rank.
  int64_t GlobalChunk(int l) const { return l == 0 ? rank_ : 2 * size_ - 1 - rank_; }
  // The global position of each of this rank's tokens, in local order ([local()]).
  std::vector<int64_t> Positions() const;
  // For each global position p, where token p lies in the all-gathered buffer of every rank's
  // local tokens, rank-major ([seq()]): the index that puts a gathered sequence back in order.
  std::vector<int64_t> GatheredIndexOfGlobal() const;

 private:
  ContextChunks(int64_t seq, int size, int rank) : seq_(seq), size_(size), rank_(rank) {}
  int64_t seq_;
  int size_, rank_;
};

}  // namespace tessera::parallel
