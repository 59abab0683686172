// Turns a loader batch (data/loader.h, plain int32 rows of seq_len + 1 tokens) into the int64
// input and target tensors the model trains on. The only part of the new data path that needs
// LibTorch, so it lives in its own library (tessera_data_tensors).
#pragma once

#include <torch/types.h>

#include <cstdint>

#include "data/loader.h"

namespace tessera::data {

// One micro-batch as the model trains on it.
struct Batch {
  torch::Tensor inputs;   // [batch, seq_len] int64
  torch::Tensor targets;  // [batch, seq_len] int64
};

// Rows [first_row, first_row + rows) of `batch` (a micro-batch): inputs are tokens [0, seq_len)
// of each row, targets tokens [1, seq_len]. CPU tensors of shape [rows, seq_len].
Batch ToTrainingBatch(const LocalBatch& batch, int64_t first_row, int64_t rows);

}  // namespace tessera::data
