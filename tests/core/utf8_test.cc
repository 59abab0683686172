// Tests of data/utf8: acceptance exactly as Python's strict UTF-8 decoder (overlongs,
// surrogates, values above U+10FFFF and truncations rejected, with the right offset).
#include "core/utf8.h"

#include <string>

#include "tests/catch_compat.h"

using tessera::AppendUtf8;
using tessera::FindInvalidUtf8;

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
