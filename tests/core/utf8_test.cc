// Tests of core/utf8: acceptance exactly as Python's strict UTF-8 decoder (overlongs,
// surrogates, values above U+10FFFF and truncations rejected, with the right offset), decoding
// of valid text, the ASCII skip and UTF-16 surrogate pairs.
#include "core/utf8.h"

#include <string>

#include "tests/catch_compat.h"

using tessera::AppendUtf8;
using tessera::DecodeValidUtf8;
using tessera::FindInvalidUtf8;
using tessera::SkipAscii;

CATCH_TEST_CASE("valid UTF-8 of every length is accepted") {
  CATCH_CHECK(FindInvalidUtf8("") == std::string::npos);
  CATCH_CHECK(FindInvalidUtf8("plain ascii text, long enough for the word path") == std::string::npos);
  CATCH_CHECK(FindInvalidUtf8("é ü ß — 日本語 🌍 \xf4\x8f\xbf\xbf") == std::string::npos);
  std::string all;
  for (uint32_t cp = 1; cp < 0x110000; cp += 97) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    AppendUtf8(cp, &all);
  }
  CATCH_CHECK(FindInvalidUtf8(all) == std::string::npos);
}

CATCH_TEST_CASE("invalid sequences are found at their offset") {
  CATCH_CHECK(FindInvalidUtf8("abc\xff") == 3);
  CATCH_CHECK(FindInvalidUtf8("ab\x80") == 2);            // lone continuation byte
  CATCH_CHECK(FindInvalidUtf8("\xc0\xaf") == 0);          // overlong '/'
  CATCH_CHECK(FindInvalidUtf8("\xe0\x80\xaf") == 0);      // overlong 3-byte
  CATCH_CHECK(FindInvalidUtf8("xx\xed\xa0\x80") == 2);    // surrogate U+D800
  CATCH_CHECK(FindInvalidUtf8("\xf4\x90\x80\x80") == 0);  // above U+10FFFF
  CATCH_CHECK(FindInvalidUtf8("12345678\xe6\x97") == 8);  // truncated at the end
  CATCH_CHECK(FindInvalidUtf8("\xe6\x97z") == 0);         // truncated in the middle
  CATCH_CHECK(tessera::DescribeInvalidUtf8("ab\xff", 2).find("offset 2") != std::string::npos);
}

CATCH_TEST_CASE("decoding valid text gives back every code point and its length") {
  for (uint32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string text = "a";
    AppendUtf8(cp, &text);
    text += "z";
    size_t pos = 1;
    const uint32_t decoded = DecodeValidUtf8(text, &pos);
    if (decoded != cp || pos != text.size() - 1) {
      CATCH_FAIL("code point " << cp << " decoded as " << decoded << ", next offset " << pos);
    }
  }
  const std::string mixed = "x\xc3\xa9\xe6\x97\xa5\xf0\x9f\x8c\x8d";  // x, U+00E9, U+65E5, U+1F30D
  size_t pos = 0;
  CATCH_CHECK(DecodeValidUtf8(mixed, &pos) == 'x');
  CATCH_CHECK(DecodeValidUtf8(mixed, &pos) == 0xE9);
  CATCH_CHECK(DecodeValidUtf8(mixed, &pos) == 0x65E5);
  CATCH_CHECK(DecodeValidUtf8(mixed, &pos) == 0x1F30D);
  CATCH_CHECK(pos == mixed.size());
}

CATCH_TEST_CASE("SkipAscii stops at the first non-ASCII byte at any alignment") {
  CATCH_CHECK(SkipAscii("", 0) == 0);
  CATCH_CHECK(SkipAscii("only ascii, longer than eight bytes", 0) == 35);
  CATCH_CHECK(SkipAscii("only ascii, longer than eight bytes", 30) == 35);
  for (size_t at = 0; at < 20; ++at) {
    std::string text(24, 'a');
    text[at] = static_cast<char>(0xC3);
    for (size_t from = 0; from <= at; ++from) CATCH_CHECK(SkipAscii(text, from) == at);
    CATCH_CHECK(SkipAscii(text, at + 1) == text.size());
  }
  CATCH_CHECK(tessera::IsUtf8Continuation(0x80));
  CATCH_CHECK(tessera::IsUtf8Continuation(0xBF));
  CATCH_CHECK(!tessera::IsUtf8Continuation(0xC3));
  CATCH_CHECK(!tessera::IsUtf8Continuation('a'));
}

CATCH_TEST_CASE("surrogate pairs combine into the code points above U+FFFF") {
  CATCH_CHECK(tessera::IsHighSurrogate(0xD83C));
  CATCH_CHECK(!tessera::IsHighSurrogate(0xDF0D));
  CATCH_CHECK(tessera::IsLowSurrogate(0xDF0D));
  CATCH_CHECK(!tessera::IsLowSurrogate(0xD83C));
  CATCH_CHECK(tessera::CombineSurrogates(0xD83C, 0xDF0D) == 0x1F30D);  // Python: "\ud83c\udf0d"
  CATCH_CHECK(tessera::CombineSurrogates(0xD800, 0xDC00) == 0x10000);
  CATCH_CHECK(tessera::CombineSurrogates(0xDBFF, 0xDFFF) == 0x10FFFF);
}
