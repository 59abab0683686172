// Pure rank arithmetic of the process grid: world = tp x cp x pp x dp ranks laid out by an order
// string such as "tp-cp-dp-pp" (first = innermost, so the ranks of a TP group are consecutive and
// share a node; the context-parallel ranks of one sequence come next). A three-name order
// ("tp-dp-pp") places cp just outside tp, and with cp = 1 everything reads as the 3D grid it is.
// Coordinates of a rank, the rank at coordinates, and the ranks of each group. No communication
// happens here; it is tested without MPI.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::parallel {

enum class Dim { kTensor = 0, kPipeline = 1, kData = 2, kContext = 3 };

struct ParallelDims {
  int64_t tp = 1;
  int64_t pp = 1;
  int64_t dp = 1;
  int64_t cp = 1;  // context parallelism: ranks sharing each sequence (parallel.cp)
};

struct Coordinates {
  int64_t tp = 0;
  int64_t pp = 0;
  int64_t dp = 0;
  int64_t cp = 0;
  bool operator==(const Coordinates&) const = default;
};

class Topology {
 public:
  // `dp` <= 0 means "auto": world / (tp * cp * pp). Errors show the numbers that do not fit.
  static absl::StatusOr<Topology> Create(int64_t world_size, ParallelDims dims,
                                         const std::string& order = "tp-cp-dp-pp");
  // Whether `order` names tp, pp, dp (and optionally cp) once each; the message says what is
  // expected otherwise.
  static absl::Status CheckOrder(const std::string& order);

  int64_t world_size() const { return dims_.tp * dims_.cp * dims_.pp * dims_.dp; }
  const ParallelDims& dims() const { return dims_; }
  int64_t Size(Dim dim) const;

  Coordinates CoordinatesOf(int64_t rank) const;
  int64_t RankOf(const Coordinates& c) const;
  // Ranks that share every coordinate of `rank` except `dim`, ordered by their `dim` index.
  std::vector<int64_t> GroupOf(Dim dim, int64_t rank) const;
  // Every group along `dim`, ordered by their lowest rank.
  std::vector<std::vector<int64_t>> Groups(Dim dim) const;
  // The ranks of one model replica: those sharing `rank`'s dp and cp coordinates (tp x pp ranks),
  // in rank order. Gradient norms and other model-parallel reductions run over it.
  std::vector<int64_t> ModelGroupOf(int64_t rank) const;
  // The first and the last pipeline stage with `rank`'s tp, cp and dp coordinates, where the tied
  // input embedding and output head live: {first, last}; one rank when pp == 1; empty for a
  // middle stage.
  std::vector<int64_t> EmbeddingGroupOf(int64_t rank) const;
  // The ranks holding the same parameter shards as `rank`: those sharing its tp and pp
  // coordinates (dp x cp ranks), in rank order. Context-parallel ranks see different parts of the
  // same sequences, so their gradients are summed with the data-parallel ones and ZeRO shards
  // over all of them.
  std::vector<int64_t> ReplicaGroupOf(int64_t rank) const;
  // The order string, innermost first: "tp-dp-pp" when cp = 1, else e.g. "tp-cp-dp-pp".
  std::string order() const;
  // A human-readable rank table ("rank  tp pp dp", and cp when cp > 1) under a line with the
  // sizes and the order.
  std::string Table() const;
  // "tp 2 x pp 1 x dp 4", with cp between tp and pp when cp > 1.
  std::string SizesLine() const;
  // Every ReplicaGroupOf, ordered by their lowest rank.
  std::vector<std::vector<int64_t>> ReplicaGroups() const;
  // The groups of each kind, one line per kind: "tp groups: [0,1] [2,3] ...".
  std::string GroupsReport() const;

 private:
  Topology(ParallelDims dims, std::array<Dim, 4> order) : dims_(dims), order_(order) {}
  ParallelDims dims_;
  std::array<Dim, 4> order_;  // innermost first
};

}  // namespace tessera::parallel
