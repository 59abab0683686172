// Tests of data/encodings: the named encodings' specials and sizes as tiktoken and Meta's
// tokenizer.py define them, and the error for an unknown name.
#include "data/encodings.h"

#include <string>

#include "tests/catch_compat.h"

namespace tessera::data {
namespace {

CATCH_TEST_CASE("named encodings carry their patterns, specials and rank counts") {
  auto cl100k = NamedTokenizerSpec("cl100k_base");
  CATCH_REQUIRE(cl100k.ok());
  CATCH_CHECK(cl100k->pattern == kCl100kPattern);
  CATCH_CHECK(cl100k->expected_ranks == 100256);
  CATCH_CHECK(cl100k->eod == "<|endoftext|>");
  CATCH_CHECK(cl100k->specials.front() == std::make_pair(std::string("<|endoftext|>"), 100257));
  auto o200k = NamedTokenizerSpec("o200k_base");
  CATCH_REQUIRE(o200k.ok());
  CATCH_CHECK(o200k->pattern == kO200kPattern);
  CATCH_CHECK(o200k->expected_ranks == 199998);
  auto llama = NamedTokenizerSpec("llama3");
  CATCH_REQUIRE(llama.ok());
  CATCH_CHECK(llama->name == "llama3");
  CATCH_CHECK(llama->pattern == kCl100kPattern);
  CATCH_CHECK(llama->specials.size() == 256);
  CATCH_CHECK(llama->specials[9] == std::make_pair(std::string("<|eot_id|>"), 128009));
  CATCH_CHECK(llama->specials.back() ==
              std::make_pair(std::string("<|reserved_special_token_250|>"), 128255));
  CATCH_CHECK(llama->bos == "<|begin_of_text|>");
  CATCH_CHECK(llama->eod == "<|end_of_text|>");
}

CATCH_TEST_CASE("only the three names are known") {
  for (const std::string& name : KnownTokenizerNames()) {
    CATCH_CHECK(IsKnownTokenizerName(name));
    CATCH_CHECK(NamedTokenizerSpec(name).ok());
  }
  CATCH_CHECK(!IsKnownTokenizerName("gpt2"));
  auto unknown = NamedTokenizerSpec("gpt2");
  CATCH_CHECK(unknown.status().code() == absl::StatusCode::kNotFound);
  CATCH_CHECK(std::string(unknown.status().message()).find("known: cl100k_base, o200k_base, llama3") !=
              std::string::npos);
}

}  // namespace
}  // namespace tessera::data
