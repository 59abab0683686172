// Printing decoded tokens as they come: a byte-level BPE token may end in the middle of a UTF-8
// character (the rest comes with the next token), so bytes are held back until the character
// they start is complete. Bytes that can never complete a character pass through unchanged.
#pragma once

#include <string>
#include <string_view>

namespace tessera::data {

class Utf8Stream {
 public:
  // Appends `bytes` and returns what can be printed now: everything except a trailing
  // incomplete (but so far valid) UTF-8 sequence, which is kept for the next call.
  std::string Push(std::string_view bytes);
  // Whatever is still held (an incomplete sequence at the end of the text).
  std::string Flush();

 private:
  std::string pending_;
};

}  // namespace tessera::data
