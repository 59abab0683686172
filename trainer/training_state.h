// What a training checkpoint holds, in logical terms, and how this rank's part of it is saved and
// restored: the model's parameters and AdamW's two moments as logical tensors (named as the
// model names them; "optim.exp_avg/NAME", "optim.exp_avg_sq/NAME"), each rank writing the
// slice it owns once (data-parallel rank 0, the first of any tensor-parallel replicas, never a
// tied copy), plus the step, the data position and the loop's counters. Restoring reads, for
// whatever layout this run has, exactly this rank's slices through the manifest, so a
// checkpoint saved with any (tp, pp, dp, zero, virtual_stages) loads into any other.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_writer.h"
#include "model/model.h"
#include "parallel/data_parallel/grad_reducer.h"
#include "parallel/process_grid.h"
#include "trainer/flat_adamw.h"

namespace tessera {

// The loop's own counters, saved as a blob (text, one "key value" per line).
struct LoopState {
  int64_t step = 0;  // optimizer steps completed
  int64_t skipped_total = 0;
  int64_t consecutive_skips = 0;
  int64_t adam_steps = 0;  // updates applied (AdamW's bias correction counts these)
  std::deque<double> recent_losses;

  std::string Serialize() const;
  static absl::StatusOr<LoopState> Parse(const std::string& text, const std::string& where);
};

// This rank's parameters, in the reducer's order, with their sharding.
struct RankParameters {
  std::vector<ParameterInfo> infos;  // index i is the reducer's parameter i
};

// This rank's slices of the checkpoint (collective over DP under ZeRO: the moments' shards are
// gathered onto DP rank 0 of each (tp, pp) position).
absl::StatusOr<std::vector<checkpoint::TensorSlice>> CollectStateSlices(const RankParameters& params,
                                                                        parallel::GradReducer& reducer,
                                                                        const FlatAdamW& optimizer,
                                                                        parallel::ProcessGrid& grid);

// Loads this rank's parameters and moments from `reader` (any layout). Moments missing from the
// checkpoint (one written by import-hf), or not asked for (`weights_only`: checkpoint.init_from),
// leave the optimizer fresh; `*had_optimizer` says which.
absl::Status RestoreState(const checkpoint::CheckpointReader& reader, const RankParameters& params,
                          parallel::GradReducer& reducer, FlatAdamW& optimizer, bool* had_optimizer,
                          bool weights_only = false);

// Refuses a checkpoint of another model shape, naming the key and both values.
absl::Status CheckCheckpointModel(const checkpoint::Manifest& manifest, const ModelConfig& model,
                                  const std::string& where);

}  // namespace tessera
