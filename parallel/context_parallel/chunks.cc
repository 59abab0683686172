// ContextChunks (chunks.h): the load-balanced chunk layout of context parallelism.
#include "parallel/context_parallel/chunks.h"

#include "absl/strings/str_cat.h"

namespace tessera::parallel {

absl::StatusOr<ContextChunks> ContextChunks::Create(int64_t seq, int size, int rank) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("context parallelism: rank ", rank, " of ", size));
  }
  if (seq <= 0 || seq % (2 * size) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "context parallelism over cp = ", size, " ranks cuts each sequence into 2 x cp = ", 2 * size,
        " chunks, but the sequence has ", seq, " tokens: it must be a multiple of ", 2 * size));
  }
  return ContextChunks(seq, size, rank);
}

std::vector<int64_t> ContextChunks::Positions() const {
  std::vector<int64_t> out;
  out.reserve(local());
  for (int l = 0; l < 2; ++l) {
    for (int64_t j = 0; j < chunk(); ++j) out.push_back(GlobalChunk(l) * chunk() + j);
  }
  return out;
}

std::vector<int64_t> ContextChunks::GatheredIndexOfGlobal() const {
  std::vector<int64_t> out(seq_);
  for (int r = 0; r < size_; ++r) {
    // Rank r's buffer starts at r x local and holds its chunk r, then its chunk 2 size - 1 - r.
    const int64_t chunks[2] = {r, 2 * size_ - 1 - r};
    for (int l = 0; l < 2; ++l) {
      for (int64_t j = 0; j < chunk(); ++j) out[chunks[l] * chunk() + j] = r * local() + l * chunk() + j;
    }
  }
  return out;
}

}  // namespace tessera::parallel
