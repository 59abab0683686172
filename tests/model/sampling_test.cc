// Tests of model/sampling: each filter against a direct reference written here (sorting the
// probabilities by hand), draw counts against the filtered distribution, greedy's tie rule,
// seeded reproducibility and the option checks.
#include "model/sampling.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "tests/catch_compat.h"

using tessera::FilteredProbabilities;
using tessera::SampleToken;
using tessera::SamplingOptions;

namespace {

const std::vector<double> kLogits = {1.0, 2.5, -0.5, 2.0, 0.3, 1.7, -2.0, 0.9};

torch::Tensor Logits() { return torch::tensor(kLogits, torch::kFloat); }

// softmax(logits / t) in doubles, by hand, of the logits as the fp32 tensor holds them.
std::vector<double> Softmax(double t) {
  std::vector<double> p;
  double sum = 0;
  for (double l : kLogits) sum += std::exp(static_cast<float>(l) / t);
  for (double l : kLogits) p.push_back(std::exp(static_cast<float>(l) / t) / sum);
  return p;
}

// Ids sorted by decreasing probability (no ties in kLogits).
std::vector<int> ByProbability(const std::vector<double>& p) {
  std::vector<int> ids(p.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(), [&](int a, int b) { return p[a] > p[b]; });
  return ids;
}

std::vector<double> ToVector(const torch::Tensor& t) {
  const torch::Tensor d = t.to(torch::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

}  // namespace

CATCH_TEST_CASE("top-k keeps the k most likely tokens in their softmax proportions") {
  const std::vector<double> p = Softmax(0.8);
  const std::vector<int> order = ByProbability(p);
  const std::vector<double> got = ToVector(FilteredProbabilities(Logits(), {.temperature = 0.8, .top_k = 3}));
  const double kept = p[order[0]] + p[order[1]] + p[order[2]];
  for (int rank = 0; rank < 8; ++rank) {
    const int id = order[rank];
    // fp64 softmax of fp32 logits against the same in doubles: 1e-12 is far above the rounding.
    CATCH_CHECK(std::abs(got[id] - (rank < 3 ? p[id] / kept : 0.0)) < 1e-12);
  }
}

CATCH_TEST_CASE("top-p keeps the smallest set of most likely tokens whose probability reaches p") {
  for (double top_p : {0.05, 0.3, 0.5, 0.75, 0.9, 0.999}) {
    const std::vector<double> p = Softmax(1.0);
    const std::vector<int> order = ByProbability(p);
    // The reference: add tokens, most likely first, until their mass reaches p.
    std::vector<bool> expected(8, false);
    double mass = 0;
    for (int id : order) {
      if (mass >= top_p) break;
      expected[id] = true;
      mass += p[id];
    }
    const std::vector<double> got =
        ToVector(FilteredProbabilities(Logits(), {.temperature = 1.0, .top_p = top_p}));
    for (int id = 0; id < 8; ++id) {
      CATCH_INFO("top_p " << top_p << " id " << id);
      CATCH_CHECK((got[id] > 0) == expected[id]);
      if (expected[id]) CATCH_CHECK(std::abs(got[id] - p[id] / mass) < 1e-12);
    }
  }
}

CATCH_TEST_CASE("draws follow the filtered distribution, and a seed fixes them") {
  const SamplingOptions options{.temperature = 0.7, .top_k = 5, .top_p = 0.9};
  const std::vector<double> want = ToVector(FilteredProbabilities(Logits(), options));
  constexpr int kDraws = 20000;
  std::vector<int> counts(8, 0);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(11);
  for (int i = 0; i < kDraws; ++i) ++counts[SampleToken(Logits(), options, generator)];
  int kept = 0;
  for (int id = 0; id < 8; ++id) {
    CATCH_INFO("id " << id << ": " << counts[id] << " draws, expected " << want[id] * kDraws);
    if (want[id] == 0) {
      CATCH_CHECK(counts[id] == 0);  // a filtered token is never drawn
      continue;
    }
    ++kept;
    // Binomial counts: 5 standard deviations, a false failure about once in 1.7 million per id.
    const double sd = std::sqrt(kDraws * want[id] * (1 - want[id]));
    CATCH_CHECK(std::abs(counts[id] - want[id] * kDraws) <= 5 * sd);
  }
  CATCH_CHECK(kept >= 2);  // the filters left a real choice

  auto draw = [&](uint64_t seed) {
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
    std::vector<int64_t> ids;
    for (int i = 0; i < 50; ++i) ids.push_back(SampleToken(Logits(), options, g));
    return ids;
  };
  CATCH_CHECK(draw(5) == draw(5));
  CATCH_CHECK(draw(5) != draw(6));
}

CATCH_TEST_CASE("greedy takes the first largest logit, and the margin is top-1 minus top-2") {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(1);
  CATCH_CHECK(SampleToken(Logits(), {}, generator) == 1);
  const torch::Tensor tied = torch::tensor({0.5f, 3.0f, 1.0f, 3.0f});
  CATCH_CHECK(SampleToken(tied, {}, generator) == 1);
  CATCH_CHECK(tessera::GreedyMargin(tied) == 0.0);
  CATCH_CHECK(std::abs(tessera::GreedyMargin(Logits()) - 0.5) < 1e-12);
}

CATCH_TEST_CASE("invalid sampling options are errors naming the flag and the value") {
  auto message = [](const SamplingOptions& o) {
    return std::string(tessera::ValidateSamplingOptions(o).message());
  };
  CATCH_CHECK(tessera::ValidateSamplingOptions({.temperature = 0.8, .top_k = 4, .top_p = 0.5}).ok());
  CATCH_CHECK(message({.temperature = -1}).find("--temperature") != std::string::npos);
  CATCH_CHECK(message({.temperature = -1}).find("-1") != std::string::npos);
  CATCH_CHECK(message({.top_k = -2}).find("--top-k") != std::string::npos);
  CATCH_CHECK(message({.top_p = 0.0}).find("--top-p") != std::string::npos);
  CATCH_CHECK(message({.top_p = 1.5}).find("1.5") != std::string::npos);
}
