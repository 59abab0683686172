// UTF-8 validation with an ASCII fast path (SkipAscii) before the byte-wise state machine, and
// encoding.
#include "core/utf8.h"

#include "absl/strings/str_format.h"

namespace tessera {

size_t FindInvalidUtf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (true) {
    i = SkipAscii(text, i);
    if (i == n) break;
    const unsigned char c = s[i];
    size_t len;
    uint32_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;  // continuation byte in lead position, C0/C1 overlong lead, or F5-FF
    }
    if (i + len > n) return i;
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if (!IsUtf8Continuation(s[i + k])) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string DescribeInvalidUtf8(std::string_view text, size_t offset) {
  if (offset >= text.size()) return absl::StrFormat("truncated sequence at byte offset %d", offset);
  std::string bytes;
  for (size_t k = offset; k < text.size() && k < offset + 4; ++k) {
    absl::StrAppendFormat(&bytes, "%s0x%02x", k == offset ? "" : " ", static_cast<unsigned char>(text[k]));
  }
  return absl::StrFormat("invalid UTF-8 at byte offset %d (bytes %s)", offset, bytes);
}

}  // namespace tessera
