// One pass per row: count end-of-document tokens before each position.
#include "data/document_layout.h"

#include <torch/torch.h>

#include "core/logging.h"

namespace tessera::data {

DocumentLayout DocumentLayoutOf(const torch::Tensor& inputs, int64_t eod_token) {
  TS_CHECK(inputs.dim() == 2 && inputs.scalar_type() == torch::kLong && inputs.device().is_cpu())
      << "document layout of int64 CPU tokens [rows, seq]";
  const torch::Tensor tokens = inputs.contiguous();
  const int64_t rows = tokens.size(0), seq = tokens.size(1);
  torch::Tensor segments = torch::empty({rows, seq}, torch::kInt64);
  torch::Tensor positions = torch::empty({rows, seq}, torch::kInt64);
  const int64_t* in = tokens.data_ptr<int64_t>();
  int64_t* seg = segments.data_ptr<int64_t>();
  int64_t* pos = positions.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    int64_t document = 0, start = 0;
    for (int64_t t = 0; t < seq; ++t) {
      const int64_t i = r * seq + t;
      seg[i] = document;
      pos[i] = t - start;
      // The eod token closes its document: the next token opens another.
      if (in[i] == eod_token) {
        ++document;
        start = t + 1;
      }
    }
  }
  return {segments, positions};
}

}  // namespace tessera::data
