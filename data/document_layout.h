// The documents of packed training samples (data.document_mask, data.reset_position_ids): a
// sample is seq_len + 1 consecutive tokens of documents concatenated with an end-of-document
// token after each, so the documents of a row are found from those tokens alone. Every pipeline
// stage reads the batch's tokens, so each derives the same layout itself and nothing is sent.
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace tessera::data {

// Per token of an input row: which document of the row it belongs to and its position in it.
// A document ends with (and includes) its end-of-document token; the token after one starts
// the next document. A row that begins inside a document counts positions from the row's start
// (the part before it is in another sample).
struct DocumentLayout {
  torch::Tensor segments;   // [rows, seq] int64: 0 for the row's first document, +1 after each eod
  torch::Tensor positions;  // [rows, seq] int64: 0 at each document's first token in the row
};

// inputs: [rows, seq] int64 tokens on the CPU. CPU tensors of the same shape.
DocumentLayout DocumentLayoutOf(const torch::Tensor& inputs, int64_t eod_token);

}  // namespace tessera::data
