// Tests of data/document_layout: documents and positions of packed rows, written out by hand.
#include "data/document_layout.h"

#include <torch/torch.h>

#include "tests/catch_compat.h"

CATCH_TEST_CASE("document layout: an eod token ends its document, positions restart after it") {
  constexpr int64_t kEod = 9;
  // Row 0 begins inside a document, has two eods in a row (an empty-looking document of just
  // the eod) and ends inside a document; row 1 has no eod at all.
  const torch::Tensor tokens = torch::tensor({5, 9, 3, 4, 9, 9, 7, 1,  //
                                              2, 3, 4, 5, 6, 7, 8, 1},
                                             torch::kInt64)
                                   .view({2, 8});
  const auto layout = tessera::data::DocumentLayoutOf(tokens, kEod);
  const torch::Tensor segments = torch::tensor({0, 0, 1, 1, 1, 2, 3, 3,  //
                                                0, 0, 0, 0, 0, 0, 0, 0},
                                               torch::kInt64)
                                     .view({2, 8});
  const torch::Tensor positions = torch::tensor({0, 1, 0, 1, 2, 0, 0, 1,  //
                                                 0, 1, 2, 3, 4, 5, 6, 7},
                                                torch::kInt64)
                                      .view({2, 8});
  CATCH_CHECK(torch::equal(layout.segments, segments));
  CATCH_CHECK(torch::equal(layout.positions, positions));
}
