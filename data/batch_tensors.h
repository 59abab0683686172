// Turns a loader batch (data/loader.h, plain int32 rows of seq_len + 1 tokens) into the int64
// input and target tensors the model trains on. The only part of the new data path that needs
// LibTorch, so it lives in tessera_data rather than tessera_text.
#pragma once

#include <cstdint>

#include "data/loader.h"
#include "data/sequence_sampler.h"  // Batch

namespace tessera::data {

// Rows [first_row, first_row + rows) of `batch` (a micro-batch): inputs are tokens [0, seq_len)
// of each row, targets tokens [1, seq_len]. CPU tensors of shape [rows, seq_len].
Batch ToTrainingBatch(const LocalBatch& batch, int64_t first_row, int64_t rows);

}  // namespace tessera::data
