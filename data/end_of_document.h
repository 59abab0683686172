// Checks, before training with packed-document options (data.document_mask,
// data.reset_position_ids), that the corpora really end their documents with data.eod_token:
// preprocess appends the tokenizer's end-of-document token after every document, so the first
// non-empty document of each corpus must end with it. A corpus written without one, or by a
// tokenizer with another id, would otherwise train silently as one long document.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "data/sample_stream.h"

namespace tessera::data {

// `key` names the option that needs the token, for the message.
absl::Status CheckEndOfDocumentToken(const SampleStream& stream, int64_t eod_token, const char* key);

}  // namespace tessera::data
