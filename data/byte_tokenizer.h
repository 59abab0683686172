// The simplest exact tokenizer: one token per byte (ids 0-255) and an end-of-document token
// (256). Lossless for any byte string; the default until a BPE vocabulary is configured.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::data {

class ByteTokenizer {
 public:
  static constexpr int32_t kEndOfDocument = 256;
  static constexpr int64_t kVocabSize = 257;

  // Appends the ids of `text` to `out`.
  static void Encode(std::string_view text, std::vector<int32_t>* out);
  // Bytes of the ids; the end-of-document token decodes to nothing.
  static std::string Decode(const std::vector<int32_t>& ids);
};

}  // namespace tessera::data
