// Pure rank arithmetic of the 3D process grid: world = tp x pp x dp, laid out by an order string
// such as "tp-dp-pp" (first = innermost, so the ranks of a TP group are consecutive and share a
// node). Coordinates of a rank, the rank at coordinates, and the ranks of each group. No
// communication happens here; it is tested without MPI.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::parallel {

enum class Dim { kTensor = 0, kPipeline = 1, kData = 2 };

struct ParallelDims {
  int64_t tp = 1;
  int64_t pp = 1;
  int64_t dp = 1;
};

struct Coordinates {
  int64_t tp = 0;
  int64_t pp = 0;
  int64_t dp = 0;
  bool operator==(const Coordinates&) const = default;
};

class Topology {
 public:
  // `dp` <= 0 means "auto": world / (tp * pp). Errors show the numbers that do not fit.
  static absl::StatusOr<Topology> Create(int64_t world_size, ParallelDims dims,
                                         const std::string& order = "tp-dp-pp");

  int64_t world_size() const { return dims_.tp * dims_.pp * dims_.dp; }
  const ParallelDims& dims() const { return dims_; }
  int64_t Size(Dim dim) const;

  Coordinates CoordinatesOf(int64_t rank) const;
  int64_t RankOf(const Coordinates& c) const;
  // Ranks that share every coordinate of `rank` except `dim`, ordered by their `dim` index.
  std::vector<int64_t> GroupOf(Dim dim, int64_t rank) const;
  // Every group along `dim`, ordered by their lowest rank.
  std::vector<std::vector<int64_t>> Groups(Dim dim) const;
  // The ranks of one model replica: those sharing `rank`'s dp coordinate (tp x pp ranks), in
  // rank order. Gradient norms and other model-parallel reductions run over it.
  std::vector<int64_t> ModelGroupOf(int64_t rank) const;
  // The first and the last pipeline stage with `rank`'s tp and dp coordinates, where the tied
  // input embedding and output head live: {first, last}; one rank when pp == 1; empty for a
  // middle stage.
  std::vector<int64_t> EmbeddingGroupOf(int64_t rank) const;
  // The order string, e.g. "tp-dp-pp" (innermost first).
  std::string order() const;
  // A human-readable rank table ("rank  tp pp dp") under a line with the sizes and the order.
  std::string Table() const;
  // The groups of each kind, one line per kind: "tp groups: [0,1] [2,3] ...".
  std::string GroupsReport() const;

 private:
  Topology(ParallelDims dims, std::array<Dim, 3> order) : dims_(dims), order_(order) {}
  ParallelDims dims_;
  std::array<Dim, 3> order_;  // innermost first
};

}  // namespace tessera::parallel
