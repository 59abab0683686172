// Window selection: sequential windows tile the stream (wrapping around); random windows start
// at SplitMix64(seed, j) modulo the number of valid starts.
#include "data/sequence_sampler.h"

#include <torch/torch.h>

namespace tessera::data {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

SequenceSampler::SequenceSampler(const std::vector<int32_t>* tokens, int64_t seq_len,
                                 Sampling sampling, uint64_t seed)
    : tokens_(tokens), seq_len_(seq_len), sampling_(sampling), seed_(seed) {
  TORCH_CHECK(static_cast<int64_t>(tokens->size()) >= seq_len + 1, "token stream of ",
              tokens->size(), " tokens is shorter than one sequence of ", seq_len + 1);
}

int64_t SequenceSampler::WindowStart(int64_t j) const {
  const int64_t n = static_cast<int64_t>(tokens_->size());
  if (sampling_ == Sampling::kSequential) {
    const int64_t windows = (n - 1) / seq_len_;
    return (j % windows) * seq_len_;
  }
  const uint64_t starts = static_cast<uint64_t>(n - seq_len_);  // valid starts: [0, n-seq_len-1]
  return static_cast<int64_t>(SplitMix64(seed_ ^ SplitMix64(static_cast<uint64_t>(j))) % starts);
}

Batch SequenceSampler::Sequences(int64_t first, int64_t count) const {
  torch::Tensor window = torch::empty({count, seq_len_ + 1}, torch::kInt64);
  int64_t* out = window.data_ptr<int64_t>();
  for (int64_t i = 0; i < count; ++i) {
    const int32_t* src = tokens_->data() + WindowStart(first + i);
    for (int64_t t = 0; t <= seq_len_; ++t) out[i * (seq_len_ + 1) + t] = src[t];
  }
  return {window.narrow(1, 0, seq_len_).contiguous(), window.narrow(1, 1, seq_len_).contiguous()};
}

}  // namespace tessera::data
