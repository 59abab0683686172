// Layer partitioning over pipeline ranks and virtual chunks (see partition.h for the rules).
#include "parallel/pipeline/partition.h"

#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace tessera::parallel::pipeline {
namespace {

absl::Status CheckShape(int64_t n_layers, int64_t pp, int64_t v) {
  if (pp < 1 || v < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline ranks and virtual stages must be >= 1, got pp ", pp, ", v ", v));
  }
  if (n_layers < pp * v) {
    return absl::InvalidArgumentError(absl::StrCat("cannot split ", n_layers, " layers over pp ", pp, " x ",
                                                   v, " virtual stages = ", pp * v,
                                                   " model chunks: every chunk needs at least one layer"));
  }
  return absl::OkStatus();
}

}  // namespace

int64_t Partition::num_layers() const { return std::accumulate(layers.begin(), layers.end(), int64_t{0}); }

int64_t Partition::FirstLayer(int64_t rank, int64_t chunk) const {
  const int64_t k = ModelChunk(rank, chunk, pp);
  return std::accumulate(layers.begin(), layers.begin() + k, int64_t{0});
}

double Partition::RankCost(int64_t rank, const StageCosts& costs) const {
  double total = 0;
  for (int64_t c = 0; c < v; ++c) {
    total += NumLayers(rank, c) * costs.layer;
    if (HasEmbedding(rank, c)) total += costs.embedding;
    if (HasHead(rank, c)) total += costs.head;
  }
  return total;
}

std::string Partition::ToString(const StageCosts& costs) const {
  std::string out;
  for (int64_t r = 0; r < pp; ++r) {
    std::vector<std::string> parts;
    for (int64_t c = 0; c < v; ++c) {
      const int64_t first = FirstLayer(r, c);
      std::string part = v > 1 ? absl::StrCat("chunk ", c, " ") : "";
      absl::StrAppend(&part, "layers [", first, ", ", first + NumLayers(r, c), ")");
      if (HasEmbedding(r, c)) absl::StrAppend(&part, " + embedding");
      if (HasHead(r, c)) absl::StrAppend(&part, " + head");
      parts.push_back(std::move(part));
    }
    absl::StrAppendFormat(&out, "rank %d: %s (cost %g)\n", r, absl::StrJoin(parts, ", "), RankCost(r, costs));
  }
  return out;
}

absl::StatusOr<Partition> BalancedPartition(int64_t n_layers, int64_t pp, int64_t v,
                                            const StageCosts& costs) {
  if (absl::Status s = CheckShape(n_layers, pp, v); !s.ok()) return s;
  if (!(costs.layer > 0) || !std::isfinite(costs.layer) || !(costs.embedding >= 0) ||
      !std::isfinite(costs.embedding) || !(costs.head >= 0) || !std::isfinite(costs.head)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("stage costs must be finite with layer > 0, embedding >= 0, head >= 0; got "
                        "layer %g, embedding %g, head %g",
                        costs.layer, costs.embedding, costs.head));
  }
  Partition p{pp, v, {}};
  if (v > 1) {
    // Interleaved schedules assume equal chunk durations, so the balanced split is equal chunks.
    if (n_layers % (pp * v) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("a balanced interleaved split needs n_layers divisible by pp x v: ", n_layers,
                       " layers % (", pp, " x ", v, " = ", pp * v, ") = ", n_layers % (pp * v),
                       "; give explicit layer counts per chunk instead"));
    }
    p.layers.assign(pp * v, n_layers / (pp * v));
    return p;
  }
  // Layers are identical, so only the counts matter; stage s with k layers costs
  // k * layer + extra[s]. Start every stage at one layer and hand out the rest one at a time to
  // the stage whose cost after taking it is lowest (the earliest stage on a tie). For
  // non-decreasing stage costs this marginal allocation reaches the minimum of the maximum cost
  // (each step keeps the current maximum as low as any allocation of that many layers can), and
  // the tie rule gives earlier stages the extra layers.
  std::vector<double> extra(pp, 0.0);
  extra[0] += costs.embedding;
  extra[pp - 1] += costs.head;
  p.layers.assign(pp, 1);
  for (int64_t left = n_layers - pp; left > 0; --left) {
    int64_t best = 0;
    double best_cost = 0;
    for (int64_t s = 0; s < pp; ++s) {
      const double cost = (p.layers[s] + 1) * costs.layer + extra[s];
      if (s == 0 || cost < best_cost) best = s, best_cost = cost;
    }
    ++p.layers[best];
  }
  return p;
}

absl::StatusOr<Partition> ExplicitPartition(int64_t n_layers, int64_t pp, int64_t v,
                                            const std::vector<int64_t>& layers) {
  if (absl::Status s = CheckShape(n_layers, pp, v); !s.ok()) return s;
  if (static_cast<int64_t>(layers.size()) != pp * v) {
    return absl::InvalidArgumentError(absl::StrCat("explicit layer counts have ", layers.size(),
                                                   " entries, expected pp x v = ", pp, " x ", v, " = ",
                                                   pp * v, " (one per model chunk)"));
  }
  for (size_t k = 0; k < layers.size(); ++k) {
    if (layers[k] < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "explicit layer count of model chunk ", k, " (rank ", RankOfModelChunk(k, pp), ", chunk ",
          LocalChunkOf(k, pp), ") is ", layers[k], "; every chunk needs at least one layer"));
    }
  }
  const int64_t sum = std::accumulate(layers.begin(), layers.end(), int64_t{0});
  if (sum != n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("explicit layer counts ", absl::StrJoin(layers, "+"),
                                                   " sum to ", sum, ", expected n_layers = ", n_layers));
  }
  return Partition{pp, v, layers};
}

}  // namespace tessera::parallel::pipeline
