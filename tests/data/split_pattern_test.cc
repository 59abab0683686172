// Tests of data/split_pattern: pieces as tiktoken's engine cuts them whatever PCRE2's Unicode
// tables are, and compile errors that name the tokenizer.
#include "data/split_pattern.h"

#include <string>
#include <vector>

#include "data/encodings.h"
#include "tests/catch_compat.h"

namespace tessera::data {
namespace {

std::vector<std::string> Pieces(const SplitPattern& p, const std::string& text) {
  std::vector<std::string> pieces;
  CATCH_REQUIRE(p.ForEach(text, [&](std::string_view piece) { pieces.emplace_back(piece); }).ok());
  return pieces;
}

CATCH_TEST_CASE("split patterns use Unicode 16 categories whatever PCRE2's tables are") {
  auto p = SplitPattern::Compile(kCl100kPattern, "cl100k");
  CATCH_REQUIRE(p.ok());
  // U+31350 (CJK Extension H, Unicode 15) is a letter to tiktoken: "'s" after it is a contraction
  // piece, so the apostrophe is not glued to the ideograph.
  CATCH_CHECK(Pieces(**p, "\xf0\xb1\x8d\x90's") == std::vector<std::string>{"\xf0\xb1\x8d\x90", "'s"});
  // U+180E is not White_Space (PCRE2's \s would take it).
  CATCH_CHECK(Pieces(**p, "a\xe1\xa0\x8e b") == std::vector<std::string>{"a", "\xe1\xa0\x8e", " b"});
  CATCH_CHECK(Pieces(**p, "Hello world, 12345!") ==
              std::vector<std::string>{"Hello", " world", ",", " ", "123", "45", "!"});
  CATCH_CHECK(Pieces(**p, "").empty());
}

CATCH_TEST_CASE("unmatched text is skipped and empty matches step over one character") {
  auto digits = SplitPattern::Compile(R"(\p{N}+)", "digits");
  CATCH_REQUIRE(digits.ok());
  CATCH_CHECK(Pieces(**digits,
                     "a1b22\xc3\xa9"
                     "3") == std::vector<std::string>{"1", "22", "3"});
  auto maybe = SplitPattern::Compile("x*", "maybe");
  CATCH_REQUIRE(maybe.ok());
  CATCH_CHECK(Pieces(**maybe, "\xc3\xa9xx\xe6\x97\xa5x") == std::vector<std::string>{"xx", "x"});
}

CATCH_TEST_CASE("a pattern that does not compile is an error naming the tokenizer") {
  auto bad = SplitPattern::Compile("(unclosed", "my tokenizer");
  CATCH_REQUIRE(!bad.ok());
  CATCH_CHECK(std::string(bad.status().message()).find("my tokenizer: the split pattern does not compile") ==
              0);
  auto negated = SplitPattern::Compile(R"([\S])", "t");
  CATCH_CHECK(std::string(negated.status().message()).find("negated class escape") != std::string::npos);
}

}  // namespace
}  // namespace tessera::data
