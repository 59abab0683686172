// Byte tokenizer: ids are the unsigned byte values.
#include "data/byte_tokenizer.h"

namespace tessera::data {

void ByteTokenizer::Encode(std::string_view text, std::vector<int32_t>* out) {
  out->reserve(out->size() + text.size());
  for (char c : text) out->push_back(static_cast<unsigned char>(c));
}

std::string ByteTokenizer::Decode(const std::vector<int32_t>& ids) {
  std::string text;
  text.reserve(ids.size());
  for (int32_t id : ids) {
    if (id >= 0 && id < 256) text.push_back(static_cast<char>(id));
  }
  return text;
}

}  // namespace tessera::data
