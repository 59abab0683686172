// Tests of data/utf8_stream: text of 1- to 4-byte characters pushed in every split and byte by
// byte comes out whole, each printed piece valid UTF-8, nothing lost or added; invalid bytes
// pass through.
#include "data/utf8_stream.h"

#include <string>

#include "core/utf8.h"
#include "tests/catch_compat.h"

using tessera::data::Utf8Stream;

namespace {
// a, é (2 bytes), € (3 bytes), 😀 (4 bytes), and ASCII around them.
const std::string kText = "a\xC3\xA9 \xE2\x82\xAC-\xF0\x9F\x98\x80!";
}  // namespace

CATCH_TEST_CASE("pushed in two pieces at every byte, each printed piece is whole characters") {
  for (size_t cut = 0; cut <= kText.size(); ++cut) {
    Utf8Stream stream;
    const std::string first = stream.Push(kText.substr(0, cut));
    const std::string second = stream.Push(kText.substr(cut));
    CATCH_INFO("cut at byte " << cut);
    CATCH_CHECK(tessera::IsValidUtf8(first));
    CATCH_CHECK(tessera::IsValidUtf8(second));
    CATCH_CHECK(first + second == kText);
    CATCH_CHECK(stream.Flush().empty());
  }
}

CATCH_TEST_CASE("pushed byte by byte, a character is printed when its last byte comes") {
  Utf8Stream stream;
  std::string out;
  for (size_t i = 0; i < kText.size(); ++i) {
    const std::string piece = stream.Push(kText.substr(i, 1));
    CATCH_CHECK(tessera::IsValidUtf8(piece));
    const bool ends_character = i + 1 == kText.size() || !tessera::IsUtf8Continuation(kText[i + 1]);
    CATCH_CHECK(piece.empty() != ends_character);
    out += piece;
  }
  CATCH_CHECK(out == kText);
}

CATCH_TEST_CASE("bytes that cannot complete a character pass through, and a cut-off end is flushed") {
  Utf8Stream stream;
  CATCH_CHECK(stream.Push("x\xFF") == "x\xFF");  // 0xFF starts nothing
  CATCH_CHECK(stream.Push("\x80y") == "\x80y");  // a stray continuation byte
  CATCH_CHECK(stream.Push("\xE2\x82").empty());  // two of €'s three bytes
  CATCH_CHECK(stream.Flush() == "\xE2\x82");
  CATCH_CHECK(stream.Flush().empty());
}
