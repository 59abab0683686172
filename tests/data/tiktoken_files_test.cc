// Tests of data/tiktoken_files: rank-file errors name the line, corrupted rank files never
// crash, and metadata files round-trip.
#include "data/tiktoken_files.h"

#include <random>
#include <string>
#include <vector>

#include "data/bpe_tokenizer.h"
#include "tests/catch_compat.h"
#include "tests/data/data_test_util.h"

namespace tessera::data {
namespace {

using testing::TempDir;
using testing::WriteFile;

CATCH_TEST_CASE("rank files: bad lines, duplicate ranks and tokens are errors naming the line") {
  TempDir dir;
  auto load = [&](const std::string& contents) {
    WriteFile(dir / "v.tiktoken", contents);
    return LoadTiktokenRanks(dir / "v.tiktoken");
  };
  CATCH_CHECK(load("YQ== 0\nYg== 1\n").ok());
  auto missing_field = load("YQ== 0\nYg==\n");
  CATCH_CHECK(std::string(missing_field.status().message()).find("v.tiktoken:2:") != std::string::npos);
  CATCH_CHECK(!load("YQ== 0\n!!!! 1\n").ok());  // not base64
  CATCH_CHECK(!load("YQ== 0\nYg== x\n").ok());  // rank not a number
  auto dup_rank = load("YQ== 0\nYg== 0\n");
  CATCH_CHECK(std::string(dup_rank.status().message()).find("duplicate rank 0") != std::string::npos);
  auto dup_token = load("YQ== 0\nYQ== 1\n");
  CATCH_CHECK(std::string(dup_token.status().message()).find("duplicate token") != std::string::npos);
  auto gap = load("YQ== 0\nYg== 5\n");
  CATCH_CHECK(std::string(gap.status().message()).find("out of range") != std::string::npos);
  CATCH_CHECK(!load("").ok());
}

CATCH_TEST_CASE("hostile rank and metadata files: huge ranks and tokens, duplicate or overflowing ids") {
  TempDir dir;
  auto load_error = [&](const std::string& contents) {
    WriteFile(dir / "h.tiktoken", contents);
    auto loaded = LoadTiktokenRanks(dir / "h.tiktoken");
    return loaded.ok() ? std::string() : std::string(loaded.status().message());
  };
  // Ranks beyond int32, negative, or with more digits than any int32: refused, never converted.
  CATCH_CHECK(
      load_error("YQ== 2147483648\n").find("h.tiktoken:1: the rank is not a decimal number below 2^31") !=
      std::string::npos);
  CATCH_CHECK(load_error("YQ== 99999999999999999999999\n").find("below 2^31") != std::string::npos);
  CATCH_CHECK(load_error("YQ== -1\n").find("below 2^31") != std::string::npos);
  // A rank that fits int32 but not the file: the vector of ranks is sized by the line count.
  CATCH_CHECK(load_error("YQ== 2147483647\n").find("rank 2147483647 is out of range") != std::string::npos);
  // One enormous token, refused before decoding: 8 KiB of base64 is 6 KiB of bytes.
  CATCH_CHECK(
      load_error("YQ== 0\n" + std::string(8192, 'A') + " 1\n")
          .find("h.tiktoken:2: the token's base64 has 8192 characters; tokens are at most 4096 bytes") !=
      std::string::npos);
  CATCH_CHECK(load_error(std::string(5464, 'A') + " 0\n").find("tokens are at most 4096 bytes") !=
              std::string::npos);  // 4098 bytes: within the base64 bound, over the byte bound
  CATCH_CHECK(load_error(std::string(5460, 'A') + " 0\n").empty());  // 4095 bytes

  auto metadata_error = [&](const std::string& json, int64_t ranks = 257) {
    WriteFile(dir / "h.json", json);
    auto spec = ReadTokenizerMetadata(dir / "h.json", ranks);
    return spec.ok() ? std::string() : std::string(spec.status().message());
  };
  const std::string pat = R"("pat_str": "x", )";
  CATCH_CHECK(metadata_error("{" + pat + R"("special_tokens": {"<|a|>": 300}, "n_ranks": 257})").empty());
  // An id of INT32_MAX would make the vocabulary size INT32_MAX + 1.
  CATCH_CHECK(metadata_error("{" + pat + R"("special_tokens": {"<|a|>": 2147483647}})")
                  .find("h.json: special token <|a|> has an id that is not an integer in [0, 2147483646]") !=
              std::string::npos);
  for (const char* id : {"-1", "1e300", "2.5", "\"300\"", "1e999"}) {
    CATCH_CAPTURE(id);
    CATCH_CHECK(metadata_error("{" + pat + R"("special_tokens": {"<|a|>": )" + id + "}}").find("h.json: ") !=
                std::string::npos);
  }
  CATCH_CHECK(metadata_error("{" + pat + R"("special_tokens": {"<|a|>": 300, "<|b|>": 300}})")
                  .find("special tokens <|a|> and <|b|> have the same id 300") != std::string::npos);
  CATCH_CHECK(metadata_error("{" + pat + R"("special_tokens": {"<|a|>": 300, "<|a|>": 301}})")
                  .find("special token <|a|> is given twice") != std::string::npos);
  // The vocabulary size the metadata states must be the rank file's, and be a number.
  CATCH_CHECK(metadata_error("{" + pat + R"("n_ranks": 1e300})")
                  .find("\"n_ranks\" is 1e+300 but the rank file "
                        "has 257 ranks") != std::string::npos);
  CATCH_CHECK(metadata_error("{" + pat + R"("n_ranks": "257"})").find("\"n_ranks\" is not a number") !=
              std::string::npos);
}

CATCH_TEST_CASE("randomized corruption of a rank file is an error or a valid vocabulary, never a crash") {
  TempDir dir;
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(std::string(1, static_cast<char>(b)));
  for (const char* m : {"th", "he", "the", "ing", " the"}) tokens.push_back(m);
  CATCH_REQUIRE(WriteTiktokenRanks(dir / "v.tiktoken", tokens).ok());
  const std::string valid = testing::ReadFile(dir / "v.tiktoken");
  std::mt19937 rng(9);
  int errors = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string s = valid;
    for (int e = 0; e < 3; ++e) {
      const size_t at = rng() % s.size();
      if (rng() % 2)
        s[at] = "AZaz09+/= \n-x"[rng() % 14];
      else
        s.erase(at, 1 + rng() % 3);
    }
    WriteFile(dir / "c.tiktoken", s);
    auto loaded = LoadTiktokenRanks(dir / "c.tiktoken");
    if (!loaded.ok()) {
      ++errors;
      CATCH_CHECK(std::string(loaded.status().message()).find("c.tiktoken") != std::string::npos);
      continue;
    }
    // Whatever loads is a consistent vocabulary: distinct tokens, ranks 0..N-1.
    auto t = BpeTokenizer::Create(*loaded, TokenizerSpec{"c", kCl100kPattern, {}, "", "", 0}, "c");
    if (t.ok()) {
      std::vector<int32_t> ids;
      CATCH_CHECK((*t)->EncodeOrdinary("the thing", &ids).ok());
      CATCH_CHECK(*(*t)->Decode(ids) == "the thing");
    }
  }
  CATCH_CHECK(errors > 200);
}

CATCH_TEST_CASE("metadata files round-trip and sit beside the rank file") {
  TempDir dir;
  TokenizerSpec spec;
  spec.name = "t";
  spec.pattern = kO200kPattern;
  spec.specials = {{"<|doc|>", 300}, {"<|quote\"|>", 301}};
  spec.eod = "<|doc|>";
  WriteFile(dir / "t.json", TokenizerMetadataJson(spec, 257));
  auto back = ReadTokenizerMetadata(dir / "t.json", 257);
  CATCH_REQUIRE(back.ok());
  CATCH_CHECK(back->name == "t");
  CATCH_CHECK(back->pattern == kO200kPattern);
  CATCH_CHECK(back->specials == spec.specials);
  CATCH_CHECK(back->eod == "<|doc|>");
  CATCH_CHECK(back->bos.empty());
  auto wrong_count = ReadTokenizerMetadata(dir / "t.json", 258);
  CATCH_CHECK(std::string(wrong_count.status().message()).find("\"n_ranks\" is 257") != std::string::npos);
  CATCH_CHECK(TokenizerMetadataPath("/v/tok.tiktoken") == "/v/tok.json");
  CATCH_CHECK(TokenizerMetadataPath("/v/tok") == "/v/tok.json");
  WriteFile(dir / "t.tiktoken", "YQ== 0\n");
  CATCH_CHECK(FindTokenizerMetadataFile(dir / "t.tiktoken") == dir / "t.json");
  CATCH_CHECK(FindTokenizerMetadataFile(dir / "none.tiktoken").empty());
  WriteFile(dir / "u.model", "YQ== 0\n");
  WriteFile(dir / "u.model.json", "{}");
  CATCH_CHECK(FindTokenizerMetadataFile(dir / "u.model") == dir / "u.model.json");
}

}  // namespace
}  // namespace tessera::data
