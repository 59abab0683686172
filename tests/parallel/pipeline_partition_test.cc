// Tests of parallel/pipeline/partition: balanced splits worked out by hand (embedding and head
// costs shift layers off the first and last stage), interleaved placement, and every error.
#include "parallel/pipeline/partition.h"

#include <string>

#include "tests/catch_compat.h"

using tessera::parallel::pipeline::BalancedPartition;
using tessera::parallel::pipeline::ExplicitPartition;
using tessera::parallel::pipeline::ModelChunk;
using tessera::parallel::pipeline::Partition;
using tessera::parallel::pipeline::StageCosts;

namespace {

bool Contains(const absl::Status& status, const std::string& text) {
  return std::string(status.message()).find(text) != std::string::npos;
}

}  // namespace

CATCH_TEST_CASE("balanced split of equal layers gives the extra layers to earlier stages") {
  // 10 layers over 4 stages: the best maximum is ceil(10/4) = 3. Among the splits reaching it,
  // [3,3,2,2] puts the two extra layers first ([3,3,3,1] is as good for the maximum but not
  // balanced: the marginal rule never gives a third layer while a stage has one).
  auto p = BalancedPartition(10, 4);
  CATCH_REQUIRE(p.ok());
  CATCH_CHECK(p->layers == std::vector<int64_t>{3, 3, 2, 2});
  CATCH_CHECK(p->FirstLayer(2, 0) == 6);
  CATCH_CHECK(p->num_layers() == 10);
  // One stage holds everything.
  auto one = BalancedPartition(7, 1, 1, {1.0, 5.0, 9.0});
  CATCH_REQUIRE(one.ok());
  CATCH_CHECK(one->layers == std::vector<int64_t>{7});
  CATCH_CHECK(one->RankCost(0, {1.0, 5.0, 9.0}) == 21.0);
}

CATCH_TEST_CASE("the output head's cost moves layers off the last stage") {
  // 32 layers, head worth 4 layers: total 36, so 9 per stage is a perfect balance: three stages
  // of 9 layers and the last one 5 layers + head.
  auto p = BalancedPartition(32, 4, 1, {1.0, 0.0, 4.0});
  CATCH_REQUIRE(p.ok());
  CATCH_CHECK(p->layers == std::vector<int64_t>{9, 9, 9, 5});
  for (int64_t r = 0; r < 4; ++r) CATCH_CHECK(p->RankCost(r, {1.0, 0.0, 4.0}) == 9.0);
  CATCH_CHECK(p->HasHead(3, 0));
  CATCH_CHECK_FALSE(p->HasHead(2, 0));
}

CATCH_TEST_CASE("embedding and head costs together, with a tie broken toward the first stage") {
  // 16 layers over 4 stages, embedding 2 (stage 0), head 3 (stage 3). The stages' costs are
  // k0+2, k1, k2, k3+3. A maximum of 5 allows at most 3+5+5+2 = 15 layers: too few. A maximum
  // of 6 allows 4+6+6+3. The marginal allocation ends at [3,5,5,2] (costs 5,5,5,5) with one
  // layer left; it costs 6 on every stage, and the tie goes to stage 0: [4,5,5,2], costs 6,5,5,5.
  const StageCosts costs{1.0, 2.0, 3.0};
  auto p = BalancedPartition(16, 4, 1, costs);
  CATCH_REQUIRE(p.ok());
  CATCH_CHECK(p->layers == std::vector<int64_t>{4, 5, 5, 2});
  CATCH_CHECK(p->RankCost(0, costs) == 6.0);
  CATCH_CHECK(p->RankCost(3, costs) == 5.0);
  CATCH_CHECK(p->ToString(costs) ==
              "rank 0: layers [0, 4) + embedding (cost 6)\n"
              "rank 1: layers [4, 9) (cost 5)\n"
              "rank 2: layers [9, 14) (cost 5)\n"
              "rank 3: layers [14, 16) + head (cost 5)\n");
}

CATCH_TEST_CASE("a heavy embedding moves layers to the next stage") {
  // 8 layers over 2 stages, embedding worth 4 layers: [2,6] costs 6 and 6.
  auto p = BalancedPartition(8, 2, 1, {1.0, 4.0, 0.0});
  CATCH_REQUIRE(p.ok());
  CATCH_CHECK(p->layers == std::vector<int64_t>{2, 6});
}

CATCH_TEST_CASE("interleaved placement: chunk c of rank r is model chunk c*pp + r") {
  auto p = BalancedPartition(16, 4, 2);
  CATCH_REQUIRE(p.ok());
  CATCH_CHECK(p->layers == std::vector<int64_t>(8, 2));
  CATCH_CHECK(ModelChunk(0, 1, 4) == 4);
  // Rank 0 holds layers [0,2) and [8,10); rank 3 holds [6,8) and [14,16).
  CATCH_CHECK(p->FirstLayer(0, 0) == 0);
  CATCH_CHECK(p->FirstLayer(0, 1) == 8);
  CATCH_CHECK(p->FirstLayer(3, 0) == 6);
  CATCH_CHECK(p->FirstLayer(3, 1) == 14);
  CATCH_CHECK(p->HasEmbedding(0, 0));
  CATCH_CHECK_FALSE(p->HasEmbedding(0, 1));
  CATCH_CHECK(p->HasHead(3, 1));
  CATCH_CHECK_FALSE(p->HasHead(3, 0));
  CATCH_CHECK(p->ToString().rfind(
                  "rank 0: chunk 0 layers [0, 2) + embedding, chunk 1 layers [8, 10) (cost 4)\n", 0) == 0);
}

CATCH_TEST_CASE("explicit layer counts are in model-chunk order") {
  // pp 2, v 2: model chunks 0..3 live on rank 0, rank 1, rank 0, rank 1.
  auto p = ExplicitPartition(8, 2, 2, {3, 1, 2, 2});
  CATCH_REQUIRE(p.ok());
  CATCH_CHECK(p->NumLayers(1, 0) == 1);
  CATCH_CHECK(p->FirstLayer(1, 0) == 3);
  CATCH_CHECK(p->NumLayers(0, 1) == 2);
  CATCH_CHECK(p->FirstLayer(0, 1) == 4);
  CATCH_CHECK(p->FirstLayer(1, 1) == 6);
}

CATCH_TEST_CASE("partition errors name the numbers") {
  auto few = BalancedPartition(6, 4, 2);
  CATCH_REQUIRE_FALSE(few.ok());
  CATCH_CHECK(Contains(few.status(), "cannot split 6 layers over pp 4 x 2 virtual stages = 8 model chunks"));
  auto few_explicit = ExplicitPartition(3, 4, 1, {1, 1, 1, 0});
  CATCH_REQUIRE_FALSE(few_explicit.ok());
  CATCH_CHECK(Contains(few_explicit.status(), "cannot split 3 layers over pp 4 x 1"));
  auto uneven = BalancedPartition(30, 4, 2);
  CATCH_REQUIRE_FALSE(uneven.ok());
  CATCH_CHECK(Contains(uneven.status(), "30 layers % (4 x 2 = 8) = 6"));
  auto length = ExplicitPartition(8, 4, 1, {2, 2, 4});
  CATCH_REQUIRE_FALSE(length.ok());
  CATCH_CHECK(Contains(length.status(), "have 3 entries, expected pp x v = 4 x 1 = 4"));
  auto zero = ExplicitPartition(8, 4, 1, {4, 0, 2, 2});
  CATCH_REQUIRE_FALSE(zero.ok());
  CATCH_CHECK(Contains(zero.status(), "model chunk 1 (rank 1, chunk 0) is 0"));
  auto sum = ExplicitPartition(8, 4, 1, {2, 2, 2, 3});
  CATCH_REQUIRE_FALSE(sum.ok());
  CATCH_CHECK(Contains(sum.status(), "2+2+2+3 sum to 9, expected n_layers = 8"));
  auto stages = BalancedPartition(8, 0);
  CATCH_REQUIRE_FALSE(stages.ok());
  CATCH_CHECK(Contains(stages.status(), "got pp 0, v 1"));
  auto layer_cost = BalancedPartition(8, 2, 1, {0.0, 0.0, 0.0});
  CATCH_REQUIRE_FALSE(layer_cost.ok());
  CATCH_CHECK(Contains(layer_cost.status(), "got layer 0, embedding 0, head 0"));
  CATCH_CHECK_FALSE(BalancedPartition(8, 2, 1, {1.0, -1.0, 0.0}).ok());
}
