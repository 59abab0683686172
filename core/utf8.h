// UTF-8 validation and decoding helpers shared by the tokenizer, the JSON-lines reader and
// preprocess. Validation follows RFC 3629: no overlong forms, no surrogates (U+D800-DFFF), nothing
// above U+10FFFF, so that "valid" here means exactly what Python's strict decoder accepts.
#pragma once

#include <cstddef>
#include <cstdint>
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

}  // namespace tessera
