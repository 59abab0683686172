// Splits a model's transformer layers over pipeline ranks: `pp` ranks, each holding `v` model
// chunks (v > 1 for interleaved schedules). The first model chunk also holds the token embedding,
// the last one the final norm, the output head and the loss. Pure arithmetic, no LibTorch.
//
// Placement (Megatron's interleaved order): local chunk c of pipeline rank r is model chunk
// c * pp + r, so with pp = 4, v = 2 rank 0 holds model chunks 0 and 4, rank 3 chunks 3 and 7.
//
// Balanced split (v == 1): layers are identical, so a split is a vector of layer counts; it is
// chosen to minimise the largest stage cost (layers * layer + embedding on stage 0 + head on the
// last stage), exactly, with ties going to earlier stages having more layers. With v > 1 the
// balanced split is equal chunks and requires n_layers % (pp * v) == 0: interleaved schedules
// assume every chunk takes the same time. Any other split is given as explicit counts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::parallel::pipeline {

// The model chunk held as local chunk `chunk` by pipeline rank `rank`.
inline int64_t ModelChunk(int64_t rank, int64_t chunk, int64_t pp) { return chunk * pp + rank; }
// The pipeline rank and the local chunk index holding model chunk `model_chunk`.
inline int64_t RankOfModelChunk(int64_t model_chunk, int64_t pp) { return model_chunk % pp; }
inline int64_t LocalChunkOf(int64_t model_chunk, int64_t pp) { return model_chunk / pp; }

// Relative costs, in any unit (flops per token, say). For a Llama-style model of width `dim`,
// sequence `seq` and vocabulary `vocab`, roughly: layer 24*dim^2 + 4*seq*dim, head 2*dim*vocab
// (plus the norm and the loss, small), embedding ~0 (a lookup).
struct StageCosts {
  double layer = 1.0;      // one transformer layer; must be > 0
  double embedding = 0.0;  // on model chunk 0; >= 0
  double head = 0.0;       // on the last model chunk; >= 0
};

struct Partition {
  int64_t pp = 1;
  int64_t v = 1;
  // Layer counts of the model chunks in model order (pp * v entries, each >= 1).
  std::vector<int64_t> layers;

  int64_t num_layers() const;
  // The first global layer index and the layer count of local chunk `chunk` of `rank`.
  int64_t FirstLayer(int64_t rank, int64_t chunk) const;
  int64_t NumLayers(int64_t rank, int64_t chunk) const { return layers[ModelChunk(rank, chunk, pp)]; }
  bool HasEmbedding(int64_t rank, int64_t chunk) const { return ModelChunk(rank, chunk, pp) == 0; }
  bool HasHead(int64_t rank, int64_t chunk) const { return ModelChunk(rank, chunk, pp) == pp * v - 1; }
  // The cost of everything `rank` holds (all its chunks).
  double RankCost(int64_t rank, const StageCosts& costs) const;
  // One line per rank: "rank 0: layers [0, 9) + embedding (cost 9)"; with v > 1 one entry per chunk.
  std::string ToString(const StageCosts& costs = {}) const;
};

// The balanced split described at the top of this file. Errors name the numbers: fewer layers
// than pp * v chunks, v > 1 with n_layers not divisible by pp * v, costs out of range.
absl::StatusOr<Partition> BalancedPartition(int64_t n_layers, int64_t pp, int64_t v = 1,
                                            const StageCosts& costs = {});

// An explicit split: `layers` holds one count per model chunk in model order (pp * v entries,
// so with v > 1 entry c * pp + r is chunk c of rank r), each >= 1, summing to n_layers.
absl::StatusOr<Partition> ExplicitPartition(int64_t n_layers, int64_t pp, int64_t v,
                                            const std::vector<int64_t>& layers);

}  // namespace tessera::parallel::pipeline
