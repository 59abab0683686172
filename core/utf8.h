// UTF-8 validation and decoding shared by the tokenizer, the JSON readers and preprocess.
// Validation follows RFC 3629: no overlong forms, no surrogates (U+D800-DFFF), nothing above
// U+10FFFF, so that "valid" here means exactly what Python's strict decoder accepts. Decoding
// (DecodeValidUtf8) is for text already validated, and checks nothing, so hot loops stay fast.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace tessera {

// Returns the byte offset of the first invalid or truncated sequence, or npos when `text` is
// valid UTF-8.
size_t FindInvalidUtf8(std::string_view text);
inline bool IsValidUtf8(std::string_view text) { return FindInvalidUtf8(text) == std::string_view::npos; }

// Appends the UTF-8 encoding of `code_point` (which must be a Unicode scalar value).
void AppendUtf8(uint32_t code_point, std::string* out);

// Describes the bytes at `offset` for error messages, e.g. "byte 0xff at offset 17".
std::string DescribeInvalidUtf8(std::string_view text, size_t offset);

// The first offset at or after `pos` that holds a non-ASCII byte, or text.size(). Corpora are
// mostly ASCII, so eight bytes are tested at a time.
inline size_t SkipAscii(std::string_view text, size_t pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  while (pos < n) {
    if (pos + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, s + pos, 8);
      if ((word & 0x8080808080808080ull) == 0) {
        pos += 8;
        continue;
      }
    }
    if (s[pos] >= 0x80) return pos;
    ++pos;
  }
  return n;
}

// True for the bytes 10xxxxxx, which continue a sequence and never start one.
inline bool IsUtf8Continuation(unsigned char byte) { return (byte & 0xC0) == 0x80; }

// The code point that starts at *pos of `text`, which must be valid UTF-8 (FindInvalidUtf8
// accepted it; nothing is checked here); *pos moves past it.
inline uint32_t DecodeValidUtf8(std::string_view text, size_t* pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data()) + *pos;
  const unsigned char c = s[0];
  if (c < 0x80) {
    *pos += 1;
    return c;
  }
  if (c < 0xE0) {
    *pos += 2;
    return (c & 0x1Fu) << 6 | (s[1] & 0x3Fu);
  }
  if (c < 0xF0) {
    *pos += 3;
    return (c & 0x0Fu) << 12 | (s[1] & 0x3Fu) << 6 | (s[2] & 0x3Fu);
  }
  *pos += 4;
  return (c & 0x07u) << 18 | (s[1] & 0x3Fu) << 12 | (s[2] & 0x3Fu) << 6 | (s[3] & 0x3Fu);
}

// UTF-16 surrogates, as JSON's \uXXXX escapes spell code points above U+FFFF: a high surrogate
// (D800-DBFF) followed by a low one (DC00-DFFF).
inline bool IsHighSurrogate(uint32_t unit) { return unit >= 0xD800 && unit <= 0xDBFF; }
inline bool IsLowSurrogate(uint32_t unit) { return unit >= 0xDC00 && unit <= 0xDFFF; }
inline uint32_t CombineSurrogates(uint32_t high, uint32_t low) {
  return 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
}

}  // namespace tessera
