// How one parameter tensor held by this rank relates to its logical (unsharded) tensor: the one
// place that checkpoints, gradient norms, gradient synchronisation and resharding read.
//
// A logical tensor of global shape G is split along `dim` into `parts` equal blocks (after
// padding G[dim] up to a multiple of `parts`); this rank holds block `index`. Rows of the block
// at or beyond `global_size` are padding: they are initialised to zero, never affect the loss,
// and are never saved. `replicas` ranks of the tensor-parallel group hold the same block (e.g.
// key/value heads when n_kv_heads < tp): their gradients are partial and must be summed over
// those ranks before the optimizer uses them. A tensor that is not split (dim < 0) is
// replicated over the whole TP group.
#pragma once

#include <cstdint>

namespace tessera::parallel {

struct ShardSpec {
  int dim = -1;             // split dimension; -1: not split (the whole tensor on every TP rank)
  int parts = 1;            // number of blocks along dim
  int index = 0;            // the block this rank holds
  int64_t global_size = 0;  // the logical (unpadded) size along dim
  int replicas = 1;         // TP ranks holding this same block

  bool is_split() const { return dim >= 0 && parts > 1; }
  // Padded size of each block along dim.
  int64_t block_size() const { return (global_size + parts - 1) / parts; }
  // [begin, end) of this block in the logical tensor along dim, clipped to the unpadded size. A
  // block made only of padding (e.g. a vocabulary of 5 over 4 ranks: blocks of 2, the last at
  // 6) is the empty range [begin, begin): begin stays the logical index of the block's row 0.
  int64_t begin() const { return is_split() ? index * block_size() : 0; }
  int64_t end() const {
    if (!is_split()) return global_size;
    const int64_t e = begin() + block_size();
    if (e < global_size) return e;
    return global_size > begin() ? global_size : begin();
  }
  // Rows of the block that are real (not padding): end() - begin().
  int64_t valid_size() const { return end() - begin(); }
};

}  // namespace tessera::parallel
