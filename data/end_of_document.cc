// Reads one token per corpus: the last of its first non-empty document.
#include "data/end_of_document.h"

#include "absl/strings/str_cat.h"

namespace tessera::data {

absl::Status CheckEndOfDocumentToken(const SampleStream& stream, int64_t eod_token, const char* key) {
  for (int c = 0; c < stream.num_corpora(); ++c) {
    const DocumentCorpus& corpus = stream.corpus(c);
    for (int64_t d = 0; d < corpus.num_documents(); ++d) {
      const int64_t length = corpus.document_length(d);
      if (length == 0) continue;
      int32_t last = 0;
      absl::Status read = corpus.Read(d, length - 1, 1, &last);
      if (!read.ok()) return read;
      if (last != eod_token) {
        return absl::InvalidArgumentError(
            absl::StrCat(key, " needs documents that end with data.eod_token = ", eod_token, ", but ",
                         corpus.Where(d), " ends with token ", last,
                         ": the corpus has no end-of-document tokens, or its tokenizer's "
                         "id differs (set data.eod_token to it)"));
      }
      break;
    }
  }
  return absl::OkStatus();
}

}  // namespace tessera::data
