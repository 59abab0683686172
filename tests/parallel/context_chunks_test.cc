// Tests of parallel/context_parallel/chunks: the load-balanced chunk layout, worked by hand, and
// the gather index against the layout it inverts.
#include "parallel/context_parallel/chunks.h"

#include <string>
#include <vector>

#include "tests/catch_compat.h"

using tessera::parallel::ContextChunks;

CATCH_TEST_CASE("cp 2 over 16 tokens: rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2") {
  auto r0 = ContextChunks::Create(16, 2, 0);
  auto r1 = ContextChunks::Create(16, 2, 1);
  CATCH_REQUIRE(r0.ok());
  CATCH_REQUIRE(r1.ok());
  CATCH_CHECK(r0->chunk() == 4);
  CATCH_CHECK(r0->local() == 8);
  CATCH_CHECK(r0->Positions() == std::vector<int64_t>{0, 1, 2, 3, 12, 13, 14, 15});
  CATCH_CHECK(r1->Positions() == std::vector<int64_t>{4, 5, 6, 7, 8, 9, 10, 11});
  // The gathered buffer is rank 0's 8 tokens then rank 1's: global 4 is rank 1's first (8), global
  // 12 is rank 0's fifth (4).
  CATCH_CHECK(r0->GatheredIndexOfGlobal() ==
              std::vector<int64_t>{0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 4, 5, 6, 7});
  CATCH_CHECK(r1->GatheredIndexOfGlobal() == r0->GatheredIndexOfGlobal());
}

CATCH_TEST_CASE("every token has one owner, and the gather index puts the sequence back in order") {
  for (int cp : {1, 2, 3, 4, 8}) {
    const int64_t seq = 2 * cp * 5;
    std::vector<int64_t> gathered;  // every rank's positions, rank-major: what an all-gather holds
    int64_t work_first = -1;
    for (int r = 0; r < cp; ++r) {
      auto chunks = ContextChunks::Create(seq, cp, r);
      CATCH_REQUIRE(chunks.ok());
      const std::vector<int64_t> mine = chunks->Positions();
      gathered.insert(gathered.end(), mine.begin(), mine.end());
      // Causal work: a token at position p attends to p + 1 keys. Balanced: the same on every rank.
      int64_t work = 0;
      for (int64_t p : mine) work += p + 1;
      if (r == 0) work_first = work;
      CATCH_CHECK(work == work_first);
    }
    const std::vector<int64_t> index = ContextChunks::Create(seq, cp, 0)->GatheredIndexOfGlobal();
    CATCH_REQUIRE(static_cast<int64_t>(index.size()) == seq);
    for (int64_t p = 0; p < seq; ++p) CATCH_CHECK(gathered[index[p]] == p);
  }
}

CATCH_TEST_CASE("a sequence that does not cut into 2 x cp chunks is refused, naming the numbers") {
  auto bad = ContextChunks::Create(36, 4, 0);
  CATCH_REQUIRE_FALSE(bad.ok());
  CATCH_CHECK(std::string(bad.status().message()).find("2 x cp = 8 chunks, but the sequence has 36 tokens") !=
              std::string::npos);
  CATCH_CHECK_FALSE(ContextChunks::Create(16, 2, 2).ok());
}
