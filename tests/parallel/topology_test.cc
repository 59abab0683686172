// Tests of parallel/topology against rank tables worked out by hand.
#include "parallel/topology.h"

#include "tests/catch_compat.h"

using tessera::parallel::Coordinates;
using tessera::parallel::Dim;
using tessera::parallel::Topology;

CATCH_TEST_CASE("tp-dp-pp on 8 ranks with tp2 pp2 dp2 puts TP innermost") {
  auto topo = Topology::Create(8, {2, 2, 2}, "tp-dp-pp");
  CATCH_REQUIRE(topo.ok());
  // rank = tp + 2 * (dp + 2 * pp), worked out by hand:
  //   rank: 0 1 2 3 4 5 6 7
  //   tp:   0 1 0 1 0 1 0 1
  //   dp:   0 0 1 1 0 0 1 1
  //   pp:   0 0 0 0 1 1 1 1
  const int64_t tp[] = {0, 1, 0, 1, 0, 1, 0, 1};
  const int64_t dp[] = {0, 0, 1, 1, 0, 0, 1, 1};
  const int64_t pp[] = {0, 0, 0, 0, 1, 1, 1, 1};
  for (int64_t r = 0; r < 8; ++r) {
    Coordinates c = topo->CoordinatesOf(r);
    CATCH_CHECK(c == Coordinates{tp[r], pp[r], dp[r]});
    CATCH_CHECK(topo->RankOf(c) == r);
  }
  CATCH_CHECK(topo->Groups(Dim::kTensor) ==
              std::vector<std::vector<int64_t>>{{0, 1}, {2, 3}, {4, 5}, {6, 7}});
  CATCH_CHECK(topo->Groups(Dim::kData) == std::vector<std::vector<int64_t>>{{0, 2}, {1, 3}, {4, 6}, {5, 7}});
  CATCH_CHECK(topo->Groups(Dim::kPipeline) ==
              std::vector<std::vector<int64_t>>{{0, 4}, {1, 5}, {2, 6}, {3, 7}});
}

CATCH_TEST_CASE("dp-tp-pp order with tp4 pp1 dp2 and dp auto") {
  auto topo = Topology::Create(8, {4, 1, 0}, "dp-tp-pp");
  CATCH_REQUIRE(topo.ok());
  CATCH_CHECK(topo->dims().dp == 2);
  // rank = dp + 2 * tp: TP groups are strided by 2.
  CATCH_CHECK(topo->GroupOf(Dim::kTensor, 1) == std::vector<int64_t>{1, 3, 5, 7});
  CATCH_CHECK(topo->GroupOf(Dim::kData, 6) == std::vector<int64_t>{6, 7});
  CATCH_CHECK(topo->GroupOf(Dim::kPipeline, 5) == std::vector<int64_t>{5});
}

CATCH_TEST_CASE("pp-tp-dp on 12 ranks: tp3 pp2 dp2") {
  auto topo = Topology::Create(12, {3, 2, 2}, "pp-tp-dp");
  CATCH_REQUIRE(topo.ok());
  // rank = pp + 2 * (tp + 3 * dp); rank 7 = 1 + 2 * (0 + 3 * 1) -> pp1 tp0 dp1.
  CATCH_CHECK(topo->CoordinatesOf(7) == Coordinates{0, 1, 1});
  CATCH_CHECK(topo->GroupOf(Dim::kTensor, 7) == std::vector<int64_t>{7, 9, 11});
  CATCH_CHECK(topo->GroupOf(Dim::kData, 7) == std::vector<int64_t>{1, 7});
}

CATCH_TEST_CASE("topology errors show the numbers") {
  auto bad = Topology::Create(8, {3, 1, 0});
  CATCH_REQUIRE_FALSE(bad.ok());
  CATCH_CHECK(std::string(bad.status().message()).find("not divisible by tp x pp = 3 x 1 = 3") !=
              std::string::npos);
  auto mismatch = Topology::Create(8, {2, 2, 3});
  CATCH_REQUIRE_FALSE(mismatch.ok());
  CATCH_CHECK(
      std::string(mismatch.status().message()).find("world size 8 != tp x pp x dp = 2 x 2 x 3 = 12") !=
      std::string::npos);
  CATCH_CHECK_FALSE(Topology::Create(4, {2, 1, 2}, "tp-tp-dp").ok());
  CATCH_CHECK_FALSE(Topology::Create(4, {2, 1, 2}, "tp-dp").ok());
}

CATCH_TEST_CASE("model and embedding groups on 8 ranks, tp2 pp2 dp2, tp-dp-pp") {
  auto topo = Topology::Create(8, {2, 2, 2}, "tp-dp-pp");
  CATCH_REQUIRE(topo.ok());
  // From the table of the first test: dp0 = ranks 0 1 4 5, dp1 = ranks 2 3 6 7.
  CATCH_CHECK(topo->ModelGroupOf(0) == std::vector<int64_t>{0, 1, 4, 5});
  CATCH_CHECK(topo->ModelGroupOf(6) == std::vector<int64_t>{2, 3, 6, 7});
  // pp2: every rank is a first or last stage; its pair shares tp and dp.
  CATCH_CHECK(topo->EmbeddingGroupOf(0) == std::vector<int64_t>{0, 4});
  CATCH_CHECK(topo->EmbeddingGroupOf(4) == std::vector<int64_t>{0, 4});
  CATCH_CHECK(topo->EmbeddingGroupOf(3) == std::vector<int64_t>{3, 7});
  CATCH_CHECK(topo->EmbeddingGroupOf(7) == std::vector<int64_t>{3, 7});
  CATCH_CHECK(topo->order() == "tp-dp-pp");
}

CATCH_TEST_CASE("embedding groups skip middle stages: tp2 pp4 dp1 on 8 ranks") {
  auto topo = Topology::Create(8, {2, 4, 1}, "tp-dp-pp");
  CATCH_REQUIRE(topo.ok());
  // rank = tp + 2 * pp (dp has size 1):
  //   rank: 0 1 2 3 4 5 6 7
  //   tp:   0 1 0 1 0 1 0 1
  //   pp:   0 0 1 1 2 2 3 3
  CATCH_CHECK(topo->EmbeddingGroupOf(0) == std::vector<int64_t>{0, 6});
  CATCH_CHECK(topo->EmbeddingGroupOf(7) == std::vector<int64_t>{1, 7});
  for (int64_t middle : {2, 3, 4, 5}) CATCH_CHECK(topo->EmbeddingGroupOf(middle).empty());
  CATCH_CHECK(topo->GroupOf(Dim::kPipeline, 3) == std::vector<int64_t>{1, 3, 5, 7});
  CATCH_CHECK(topo->ModelGroupOf(5) == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7});
}

CATCH_TEST_CASE("pp1: the embedding group is the rank alone, and dp-pp-tp on 8 ranks") {
  auto topo = Topology::Create(8, {4, 1, 2}, "dp-pp-tp");
  CATCH_REQUIRE(topo.ok());
  // rank = dp + 2 * (pp + 1 * tp) = dp + 2 * tp:
  //   rank: 0 1 2 3 4 5 6 7
  //   dp:   0 1 0 1 0 1 0 1
  //   tp:   0 0 1 1 2 2 3 3
  CATCH_CHECK(topo->CoordinatesOf(5) == Coordinates{2, 0, 1});
  CATCH_CHECK(topo->EmbeddingGroupOf(5) == std::vector<int64_t>{5});
  CATCH_CHECK(topo->GroupOf(Dim::kTensor, 5) == std::vector<int64_t>{1, 3, 5, 7});
  CATCH_CHECK(topo->ModelGroupOf(5) == std::vector<int64_t>{1, 3, 5, 7});
  CATCH_CHECK(topo->Groups(Dim::kData) == std::vector<std::vector<int64_t>>{{0, 1}, {2, 3}, {4, 5}, {6, 7}});
  CATCH_CHECK(topo->Table().find("world 8 = tp 4 x pp 1 x dp 2, order dp-pp-tp") == 0);
}

CATCH_TEST_CASE("context parallelism: tp2 cp2 pp2 dp2 on 16 ranks, default order tp-cp-dp-pp") {
  auto topo = Topology::Create(16, {2, 2, 2, 2});
  CATCH_REQUIRE(topo.ok());
  // rank = tp + 2 * (cp + 2 * (dp + 2 * pp)), by hand: rank 13 = 1 + 2 * (0 + 2 * (1 + 2 * 1)).
  CATCH_CHECK(topo->CoordinatesOf(13) == Coordinates{1, 1, 1, 0});
  CATCH_CHECK(topo->RankOf(Coordinates{1, 1, 1, 0}) == 13);
  CATCH_CHECK(topo->GroupOf(Dim::kContext, 13) == std::vector<int64_t>{13, 15});
  CATCH_CHECK(topo->GroupOf(Dim::kData, 13) == std::vector<int64_t>{9, 13});
  // Rank 13 is tp 1, cp 0, dp 1, pp 1. Its model replica shares dp 1 and cp 0: tp + 4 (1 + 2 pp)
  // for tp, pp in {0, 1}: ranks 4 5 12 13.
  CATCH_CHECK(topo->ModelGroupOf(13) == std::vector<int64_t>{4, 5, 12, 13});
  // Gradients go over dp x cp: tp 1, pp 1: 9 11 13 15.
  CATCH_CHECK(topo->ReplicaGroupOf(13) == std::vector<int64_t>{9, 11, 13, 15});
  CATCH_CHECK(topo->EmbeddingGroupOf(13) == std::vector<int64_t>{5, 13});
  CATCH_CHECK(topo->order() == "tp-cp-dp-pp");
  CATCH_CHECK(topo->ReplicaGroups().size() == 4);
}

CATCH_TEST_CASE("a three-name order puts cp just outside tp; cp 1 reads as the 3D grid") {
  auto four = Topology::Create(8, {2, 1, 2, 2}, "dp-tp-pp");
  CATCH_REQUIRE(four.ok());
  // dp-tp-cp-pp: rank = dp + 2 * (tp + 2 * cp): rank 6 = 0 + 2 * (1 + 2 * 1).
  CATCH_CHECK(four->CoordinatesOf(6) == Coordinates{1, 0, 0, 1});
  CATCH_CHECK(four->order() == "dp-tp-cp-pp");
  auto three = Topology::Create(8, {2, 2, 2}, "tp-cp-dp-pp");
  CATCH_REQUIRE(three.ok());
  CATCH_CHECK(three->order() == "tp-dp-pp");
  CATCH_CHECK(three->ReplicaGroupOf(0) == three->GroupOf(Dim::kData, 0));
  CATCH_CHECK(three->Table().find("cp") == std::string::npos);
  CATCH_CHECK_FALSE(Topology::Create(8, {2, 1, 2, 2}, "tp-cp-dp").ok());
  CATCH_CHECK_FALSE(Topology::Create(8, {2, 1, 2, 2}, "tp-cp-cp-pp").ok());
  auto bad = Topology::Create(6, {2, 1, 0, 2});
  CATCH_REQUIRE_FALSE(bad.ok());
  CATCH_CHECK(std::string(bad.status().message()).find("tp x cp x pp = 2 x 2 x 1 = 4") != std::string::npos);
}
