// Finds where the last character starts and whether its bytes are all there.
#include "data/utf8_stream.h"

#include <cstddef>

namespace tessera::data {
namespace {

// The length of the sequence a lead byte starts, 0 for a byte that starts none.
size_t SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// How many bytes at the end of `text` are the start of a character still missing bytes: at
// most 3, only a valid lead byte followed by continuation bytes.
size_t IncompleteTail(std::string_view text) {
  for (size_t back = 1; back <= 3 && back <= text.size(); ++back) {
    const auto byte = static_cast<unsigned char>(text[text.size() - back]);
    if ((byte & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t need = SequenceLength(byte);
    return need > back ? back : 0;
  }
  return 0;
}

}  // namespace

std::string Utf8Stream::Push(std::string_view bytes) {
  pending_.append(bytes);
  const size_t keep = IncompleteTail(pending_);
  std::string ready = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return ready;
}

std::string Utf8Stream::Flush() {
  std::string rest;
  rest.swap(pending_);
  return rest;
}

}  // namespace tessera::data
