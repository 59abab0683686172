// Tests of core/strings: edit distances, the "did you mean" hint of unknown-key messages and
// escaped excerpts.
#include "core/strings.h"

#include <string>
#include <vector>

#include "tests/catch_compat.h"

using tessera::DidYouMean;
using tessera::DottedKeyDistance;
using tessera::EditDistance;

CATCH_TEST_CASE("edit distance counts insertions, deletions and substitutions") {
  CATCH_CHECK(EditDistance("", "") == 0);
  CATCH_CHECK(EditDistance("", "abc") == 3);
  CATCH_CHECK(EditDistance("abc", "") == 3);
  CATCH_CHECK(EditDistance("grid", "grid") == 0);
  CATCH_CHECK(EditDistance("kitten", "sitting") == 3);
  CATCH_CHECK(EditDistance("gird", "grid") == 2);  // a transposition is two edits
  CATCH_CHECK(EditDistance("train.lrr", "train.lr") == 1);
  CATCH_CHECK(EditDistance("flaw", "lawn") == EditDistance("lawn", "flaw"));
}

CATCH_TEST_CASE("dotted keys with the same last component are one edit apart") {
  CATCH_CHECK(DottedKeyDistance("model.lr", "train.lr") == 1);
  CATCH_CHECK(DottedKeyDistance("lr", "train.lr") == 1);
  CATCH_CHECK(DottedKeyDistance("train.lr", "train.lr") == 0);
  CATCH_CHECK(DottedKeyDistance("model.dimm", "model.dim") == 1);
  CATCH_CHECK(DottedKeyDistance("data.seq_len", "model.dim") == EditDistance("data.seq_len", "model.dim"));
}

CATCH_TEST_CASE("did you mean names the nearest known name below the limit") {
  const std::vector<std::string> keys = {"name", "base", "grid", "list", "random", "slurm"};
  CATCH_CHECK(DidYouMean("gird", keys, 3) == " (did you mean 'grid'?)");
  CATCH_CHECK(DidYouMean("slurn", keys, 3) == " (did you mean 'slurm'?)");
  CATCH_CHECK(DidYouMean("completely_different", keys, 3).empty());
  CATCH_CHECK(DidYouMean("grid", {}, 3).empty());
  // The limit is exclusive: at distance 2, a limit of 2 says nothing.
  CATCH_CHECK(DidYouMean("gird", keys, 2).empty());
  // Equally near names: the first one wins.
  CATCH_CHECK(DidYouMean("bast", {"best", "base"}, 3) == " (did you mean 'best'?)");
  const std::vector<std::string> dotted = {"model.dim", "train.lr", "train.steps"};
  CATCH_CHECK(DidYouMean("optim.lr", dotted, 4, DottedKeyDistance) == " (did you mean 'train.lr'?)");
  CATCH_CHECK(DidYouMean("optim.lr", dotted, 4).empty());
}

CATCH_TEST_CASE("escaped excerpts keep any bytes on one line and mark a cut") {
  CATCH_CHECK(tessera::EscapedExcerpt("") == "");
  CATCH_CHECK(tessera::EscapedExcerpt("abc") == "abc");
  CATCH_CHECK(tessera::EscapedExcerpt("a\nb\xff\"") == "a\\nb\\xff\\\"");
  CATCH_CHECK(tessera::EscapedExcerpt("abcdef", 4) == "abcd...");
  CATCH_CHECK(tessera::EscapedExcerpt("abcd", 4) == "abcd");
  CATCH_CHECK(tessera::EscapedExcerpt(std::string(100, 'x')) == std::string(60, 'x') + "...");
}
