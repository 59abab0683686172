// Tests of data/bpe_trainer: the first merges of a tiny corpus, determinism (also across thread
// counts), and that a trained, written vocabulary loads and round-trips text.
#include "data/bpe_trainer.h"

#include <string>
#include <vector>

#include "tests/catch_compat.h"
#include "tests/data/data_test_util.h"

namespace tessera::data {
namespace {

using testing::TempDir;
using testing::WriteFile;

CATCH_TEST_CASE("training merges the most frequent pair first, ties by lowest ranks") {
  BpeTrainerOptions options;
  options.vocab_size = 259;
  auto r = TrainBpe({"aaa bbb aaa", "ab ab"}, options);
  CATCH_REQUIRE(r.ok());
  CATCH_REQUIRE(r->tokens.size() == 259);
  // Pieces: "aaa" x2, " bbb", " aaa", "ab" x2, " ab"... counts: "aa" 6, "bb" 2, "ab" 3, " a" 2, ...
  CATCH_CHECK(r->tokens[256] == "aa");
  CATCH_CHECK(r->spec.specials.size() == 1);
  CATCH_CHECK(r->spec.specials[0].second == 259);
}

CATCH_TEST_CASE("training is deterministic and thread-count independent, output loads and round-trips") {
  TempDir dir;
  std::vector<std::string> files;
  for (int i = 0; i < 6; ++i) {
    std::string text;
    for (int k = 0; k < 200; ++k)
      text += "the thing " + std::to_string(k * (i + 1)) + " is in the thing's place.\n";
    files.push_back(dir / ("doc" + std::to_string(i) + ".txt"));
    WriteFile(files.back(), text);
  }
  BpeTrainerOptions options;
  options.vocab_size = 400;
  options.threads = 1;
  auto one = TrainBpeFromFiles(files, options);
  options.threads = 4;
  auto four = TrainBpeFromFiles(files, options);
  CATCH_REQUIRE(one.ok());
  CATCH_REQUIRE(four.ok());
  CATCH_CHECK(one->tokens == four->tokens);
  CATCH_REQUIRE(WriteTrainedTokenizer(dir / "trained.tiktoken", *one).ok());
  auto t = LoadTokenizer(dir / "trained.tiktoken");
  CATCH_REQUIRE(t.ok());
  CATCH_CHECK((*t)->num_ranks() == 400);
  CATCH_CHECK((*t)->eod_id() == 400);
  const std::string text = "the thing 12 is in the thing's place. Ünïcödé too\n";
  std::vector<int32_t> ids;
  CATCH_REQUIRE((*t)->EncodeOrdinary(text, &ids).ok());
  CATCH_CHECK(ids.size() * 3 < text.size() * 2);  // the learned merges compress the text
  CATCH_CHECK(*(*t)->Decode(ids) == text);
  // Invalid UTF-8 in a training file names it.
  WriteFile(dir / "bad.txt", "ok\xff");
  auto bad = TrainBpeFromFiles({dir / "bad.txt"}, options);
  CATCH_CHECK(std::string(bad.status().message()).find("bad.txt") != std::string::npos);
}

}  // namespace
}  // namespace tessera::data
