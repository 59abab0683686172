// Tests of data/sequence_sampler: windows, shifted targets, determinism and independence of the
// batch grouping.
#include "data/sequence_sampler.h"

#include <torch/torch.h>

#include <numeric>

#include "tests/catch_compat.h"

using tessera::data::Sampling;
using tessera::data::SequenceSampler;

CATCH_TEST_CASE("sequential windows tile the stream and targets are inputs shifted by one") {
  std::vector<int32_t> tokens(41);
  std::iota(tokens.begin(), tokens.end(), 0);
  SequenceSampler sampler(&tokens, 10, Sampling::kSequential, 7);
  auto batch = sampler.Sequences(0, 5);  // 4 windows fit in 41 tokens: the 5th wraps
  CATCH_CHECK(batch.inputs[1][0].item<int64_t>() == 10);
  CATCH_CHECK(batch.inputs[3][9].item<int64_t>() == 39);
  CATCH_CHECK(batch.targets[3][9].item<int64_t>() == 40);
  CATCH_CHECK(batch.inputs[4][0].item<int64_t>() == 0);
  CATCH_CHECK(torch::equal(batch.inputs.narrow(1, 1, 9), batch.targets.narrow(1, 0, 9)));
}

CATCH_TEST_CASE("random windows depend on the seed and the sequence index only") {
  std::vector<int32_t> tokens(1000);
  std::iota(tokens.begin(), tokens.end(), 0);
  SequenceSampler a(&tokens, 16, Sampling::kRandom, 42);
  SequenceSampler b(&tokens, 16, Sampling::kRandom, 42);
  SequenceSampler c(&tokens, 16, Sampling::kRandom, 43);
  auto whole = a.Sequences(0, 8);
  auto halves = torch::cat({b.Sequences(0, 4).inputs, b.Sequences(4, 4).inputs});
  CATCH_CHECK(torch::equal(whole.inputs, halves));
  CATCH_CHECK_FALSE(torch::equal(whole.inputs, c.Sequences(0, 8).inputs));
  for (int64_t j = 0; j < 200; ++j) {
    int64_t start = a.WindowStart(j);
    CATCH_CHECK(start >= 0);
    CATCH_CHECK(start + 16 < 1000);  // inputs and the last target fit
  }
}
