// One pass over the rows: widen to int64 and split into inputs and shifted targets.
#include "data/batch_tensors.h"

#include <torch/torch.h>

#include "core/logging.h"

namespace tessera::data {

Batch ToTrainingBatch(const LocalBatch& batch, int64_t first_row, int64_t rows) {
  TS_CHECK(first_row >= 0 && rows >= 0 && first_row + rows <= batch.rows)
      << "rows [" << first_row << ", " << first_row + rows << ") of a batch of " << batch.rows;
  const int64_t seq_len = batch.sample_tokens - 1;
  torch::Tensor inputs = torch::empty({rows, seq_len}, torch::kInt64);
  torch::Tensor targets = torch::empty({rows, seq_len}, torch::kInt64);
  int64_t* in = inputs.data_ptr<int64_t>();
  int64_t* out = targets.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* row = batch.row(first_row + r);
    for (int64_t t = 0; t < seq_len; ++t) {
      in[r * seq_len + t] = row[t];
      out[r * seq_len + t] = row[t + 1];
    }
  }
  return {inputs, targets};
}

}  // namespace tessera::data
