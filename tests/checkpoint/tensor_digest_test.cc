// Tests of checkpoint/tensor_digest on checkpoints written as if by several ranks: the FNV-1a
// reference values, the same logical tensors saved in different layouts (tensor-parallel row
// blocks, ZeRO flat ranges, one whole copy) digest equal, one changed element changes the
// digest, the name filter, and damaged data is an error rather than a different digest.
#include "checkpoint/tensor_digest.h"

#include <ATen/ATen.h>

#include <fstream>

#include "checkpoint/checkpoint_reader.h"
#include "tests/catch_compat.h"
#include "tests/checkpoint/checkpoint_test_util.h"

using namespace tessera::checkpoint;
using namespace tessera::checkpoint::testing;

namespace {

// Writes step 7 of `dir` as `ranks` save it and opens it.
std::unique_ptr<CheckpointReader> Write(const std::string& dir, const std::vector<RankSlices>& ranks) {
  absl::Status s = WriteAsRanks(dir, 7, ranks);
  CATCH_REQUIRE(s.ok());
  auto reader = CheckpointReader::Open(StepDirPath(dir, 7));
  CATCH_REQUIRE(reader.ok());
  return std::move(*reader);
}

}  // namespace

CATCH_TEST_CASE("Fnv1a64 is the published FNV-1a and chains over pieces") {
  CATCH_CHECK(Fnv1a64("", 0) == 0xcbf29ce484222325ULL);
  CATCH_CHECK(Fnv1a64("a", 1) == 0xaf63dc4c8601ec8cULL);
  CATCH_CHECK(Fnv1a64("foobar", 6) == 0x85944171f73967e8ULL);
  CATCH_CHECK(Fnv1a64("bar", 3, Fnv1a64("foo", 3)) == Fnv1a64("foobar", 6));
  CATCH_CHECK(DigestHex(0xaf63dc4c8601ec8cULL) == "af63dc4c8601ec8c");
}

CATCH_TEST_CASE("digests do not depend on the layout that saved the tensors") {
  TempDir dir("digest-layouts");
  const at::Tensor w = Logical({6, 4}, 1), n = Logical({5}, 50);
  auto one = Write(dir.path() + "/one", OneRankLayout(w, n));
  auto three = Write(dir.path() + "/three", ThreeRankLayout(w, n));

  auto a = DigestTensors(*one), b = DigestTensors(*three);
  CATCH_REQUIRE(a.ok());
  CATCH_REQUIRE(b.ok());
  CATCH_REQUIRE(a->size() == 3);
  CATCH_REQUIRE(b->size() == 3);
  // Sorted by name; the hash is that of the whole tensor's bytes.
  CATCH_CHECK((*a)[0].name == "n");
  CATCH_CHECK((*a)[1].name == "optim.exp_avg/w");
  CATCH_CHECK((*a)[2].name == "w");
  CATCH_CHECK((*a)[2].shape == std::vector<int64_t>{6, 4});
  CATCH_CHECK((*a)[2].dtype == DType::kFloat32);
  const at::Tensor bytes = w.contiguous();
  CATCH_CHECK((*a)[2].hash == Fnv1a64(bytes.data_ptr(), bytes.nbytes()));
  for (size_t i = 0; i < a->size(); ++i) {
    CATCH_INFO((*a)[i].name);
    CATCH_CHECK((*a)[i].hash == (*b)[i].hash);
  }

  // The filter: parameters only.
  auto params = DigestTensors(*three, [](const std::string& name) { return name.rfind("optim.", 0) != 0; });
  CATCH_REQUIRE(params.ok());
  CATCH_CHECK(params->size() == 2);
}

CATCH_TEST_CASE("one changed element changes the digest") {
  TempDir dir("digest-change");
  const at::Tensor w = Logical({6, 4}, 1), n = Logical({5}, 50);
  at::Tensor changed = w.clone();
  changed[5][3] = changed[5][3].item<float>() + 0.001f;  // the tail: the last element
  auto a = Write(dir.path() + "/a", OneRankLayout(w, n));
  auto b = Write(dir.path() + "/b", ThreeRankLayout(changed, n));
  auto da = DigestTensors(*a), db = DigestTensors(*b);
  CATCH_REQUIRE(da.ok());
  CATCH_REQUIRE(db.ok());
  CATCH_CHECK((*da)[0].hash == (*db)[0].hash);  // n
  CATCH_CHECK((*da)[1].hash != (*db)[1].hash);  // the moment, 2 x w
  CATCH_CHECK((*da)[2].hash != (*db)[2].hash);  // w
}

CATCH_TEST_CASE("a damaged shard is an error, not a different digest") {
  TempDir dir("digest-damage");
  const at::Tensor w = Logical({6, 4}, 1), n = Logical({5}, 50);
  auto reader = Write(dir.path() + "/a", ThreeRankLayout(w, n));
  const ShardRecord& shard = (*reader->Tensor("w"))->shards.front();
  {
    std::fstream f(reader->step_dir() + "/" + shard.file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(shard.byte_offset));
    f.put('\x7f');
  }
  auto digests = DigestTensors(*reader);
  CATCH_REQUIRE_FALSE(digests.ok());
  CATCH_CHECK(std::string(digests.status().message()).find("'w'") != std::string::npos);
}
