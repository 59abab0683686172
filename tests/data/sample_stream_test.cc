// Tests of data/sample_stream: the keyed permutation, packing across documents, epochs and
// their shuffling, blend proportions over every window, input validation, DP slices and the
// resume-with-another-layout property (DP 1 -> 2 -> 4, global batch changes): the same sample
// ids are consumed as by the uninterrupted run, none repeated, none skipped.
#include "data/sample_stream.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "data/indexed_dataset.h"
#include "data/loader.h"
#include "tests/catch_compat.h"
#include "tests/data/data_test_util.h"

namespace tessera::data {
namespace {

using testing::TempDir;
using testing::WriteFile;

// Writes a corpus whose tokens encode where they come from: token = base + running position, so
// any sample's tokens can be checked against the documents.
std::vector<std::vector<int32_t>> MakeCorpus(const std::string& prefix, int docs, int32_t base,
                                             uint32_t seed) {
  std::vector<std::vector<int32_t>> out;
  int32_t next = base;
  for (int d = 0; d < docs; ++d) {
    out.emplace_back(1 + (seed * 31 + d * 17) % 23);
    for (auto& t : out.back()) t = next++;
  }
  std::string bin, idx;
  EncodeIndexedDataset(out, TokenDType::kInt32, &bin, &idx);
  WriteFile(prefix + ".bin", bin);
  WriteFile(prefix + ".idx", idx);
  return out;
}

CATCH_TEST_CASE("Permutation is a bijection of 0..n-1 that depends on the key") {
  for (uint64_t n : {1ull, 2ull, 3ull, 17ull, 1000ull, 4097ull}) {
    Permutation p(n, 42);
    std::vector<char> seen(n, 0);
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t v = p(i);
      CATCH_REQUIRE(v < n);
      CATCH_REQUIRE(!seen[v]);
      seen[v] = 1;
    }
  }
  Permutation a(1000, 1), b(1000, 2);
  int same = 0;
  for (uint64_t i = 0; i < 1000; ++i) same += a(i) == b(i);
  CATCH_CHECK(same < 20);
}

CATCH_TEST_CASE("unshuffled samples are consecutive windows packed across documents") {
  TempDir dir;
  auto docs = MakeCorpus(dir / "c", 40, 0, 1);
  SampleStreamOptions options;
  options.corpora = {{dir / "c", 1.0}};
  options.seq_len = 7;
  options.shuffle = false;
  auto stream = SampleStream::Open(options);
  CATCH_REQUIRE(stream.ok());
  int64_t total = 0;
  for (const auto& d : docs) total += static_cast<int64_t>(d.size());
  CATCH_CHECK((*stream)->samples_per_epoch(0) == (total - 1) / 7);
  std::vector<int32_t> sample(8);
  for (int64_t j = 0; j < 3 * (*stream)->samples_per_epoch(0); ++j) {
    CATCH_REQUIRE((*stream)->Read(j, sample.data()).ok());
    const int64_t k = j % (*stream)->samples_per_epoch(0);
    for (int t = 0; t < 8; ++t) CATCH_REQUIRE(sample[t] == k * 7 + t);  // token = stream position
  }
}

CATCH_TEST_CASE("each epoch is a shuffled cover of its windows, different per epoch and seed") {
  TempDir dir;
  std::set<int32_t> doc_starts;
  for (const auto& d : MakeCorpus(dir / "c", 200, 0, 3)) doc_starts.insert(d.front());
  SampleStreamOptions options;
  options.corpora = {{dir / "c", 1.0}};
  options.seq_len = 5;
  options.seed = 11;
  auto stream = *SampleStream::Open(options);
  const int64_t per_epoch = stream->samples_per_epoch(0);
  std::vector<int32_t> sample(6);
  std::vector<std::vector<int32_t>> first_epoch;
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::set<int64_t> windows;
    std::vector<std::vector<int32_t>> samples;
    for (int64_t k = 0; k < per_epoch; ++k) {
      const int64_t j = epoch * per_epoch + k;
      CATCH_REQUIRE(stream->Read(j, sample.data()).ok());
      samples.push_back(sample);
      windows.insert(stream->Origin(j).sample_in_epoch);
      CATCH_CHECK(stream->Origin(j).epoch == epoch);
      // Packed: each token follows its predecessor in the same document, or starts a document.
      for (int t = 1; t < 6; ++t)
        CATCH_CHECK((sample[t] == sample[t - 1] + 1 || doc_starts.contains(sample[t])));
    }
    CATCH_CHECK(static_cast<int64_t>(windows.size()) == per_epoch);  // every window once
    if (epoch == 0)
      first_epoch = samples;
    else
      CATCH_CHECK(samples != first_epoch);
  }
  // The epoch's windows tile its token stream: per_epoch * seq_len + 1 distinct tokens (all but
  // a tail shorter than seq_len).
  std::set<int32_t> seen;
  for (const auto& s : first_epoch) seen.insert(s.begin(), s.end());
  CATCH_CHECK(static_cast<int64_t>(seen.size()) == per_epoch * 5 + 1);
  // Same inputs, same stream; another seed, another order.
  auto again = *SampleStream::Open(options);
  std::vector<int32_t> a(6), b(6);
  for (int64_t j : {0, 5, 77, 1000}) {
    CATCH_REQUIRE(stream->Read(j, a.data()).ok());
    CATCH_REQUIRE(again->Read(j, b.data()).ok());
    CATCH_CHECK(a == b);
  }
  options.seed = 12;
  auto other = *SampleStream::Open(options);
  int differ = 0;
  for (int64_t j = 0; j < 50; ++j) {
    CATCH_REQUIRE(stream->Read(j, a.data()).ok());
    CATCH_REQUIRE(other->Read(j, b.data()).ok());
    differ += a != b;
  }
  CATCH_CHECK(differ > 40);
  CATCH_CHECK(stream->Fingerprint() != other->Fingerprint());
}

CATCH_TEST_CASE("blend proportions match the weights within 1% over every 10000-sample window") {
  TempDir dir;
  MakeCorpus(dir / "text", 50, 0, 1);
  MakeCorpus(dir / "code", 30, 1000000, 2);
  MakeCorpus(dir / "math", 20, 2000000, 3);
  for (const std::vector<double>& weights : {std::vector<double>{0.7, 0.3, 0.0}, std::vector<double>{5, 3, 2},
                                             std::vector<double>{0.98, 0.01, 0.01}}) {
    SampleStreamOptions options;
    options.corpora = {{dir / "text", weights[0]}, {dir / "code", weights[1]}, {dir / "math", weights[2]}};
    options.seq_len = 4;
    auto stream = *SampleStream::Open(options);
    const double total = weights[0] + weights[1] + weights[2];
    const int64_t n = 200000, window = 10000;
    std::vector<int> corpus(n);
    for (int64_t j = 0; j < n; ++j) corpus[j] = stream->Origin(j).corpus;
    for (int d = 0; d < 3; ++d) {
      std::vector<int64_t> prefix(n + 1, 0);
      for (int64_t j = 0; j < n; ++j) prefix[j + 1] = prefix[j] + (corpus[j] == d);
      double worst = 0;
      for (int64_t s = 0; s + window <= n; s += 97) {
        const double share = static_cast<double>(prefix[s + window] - prefix[s]) / window;
        worst = std::max(worst, std::abs(share - weights[d] / total));
      }
      // 1% of the weight, plus two samples of integer rounding per window.
      CATCH_CHECK(worst <= 0.01 * weights[d] / total + 2.0 / window);
    }
    // Each corpus's samples are consumed in order 0, 1, 2, ... with none skipped.
    std::map<int, int64_t> next;
    for (int64_t j = 0; j < n; ++j) {
      const SampleOrigin o = stream->Origin(j);
      CATCH_REQUIRE(o.corpus_sample == next[o.corpus]++);
    }
  }
}

CATCH_TEST_CASE("bad blends and short corpora are clear errors") {
  TempDir dir;
  MakeCorpus(dir / "a", 5, 0, 1);
  SampleStreamOptions options;
  options.seq_len = 4;
  options.corpora = {{dir / "a", -1}};
  CATCH_CHECK(std::string(SampleStream::Open(options).status().message()).find("weight -1") !=
              std::string::npos);
  options.corpora = {{dir / "a", 0}, {dir / "a", 0}};
  CATCH_CHECK(
      std::string(SampleStream::Open(options).status().message()).find("all corpus weights are zero") !=
      std::string::npos);
  options.corpora = {{dir / "a", 1}};
  options.seq_len = 100000;
  CATCH_CHECK(std::string(SampleStream::Open(options).status().message()).find("fewer than one sample") !=
              std::string::npos);
  options.corpora = {{dir / "missing", 1}};
  CATCH_CHECK(!SampleStream::Open(options).ok());
  // Token ids outside the model's vocabulary are reported with their document.
  options.corpora = {{dir / "a", 1}};
  options.seq_len = 4;
  options.vocab_size = 3;
  auto stream = *SampleStream::Open(options);
  std::vector<int32_t> sample(5);
  auto s = stream->Read(0, sample.data());
  CATCH_CHECK(std::string(s.message()).find("outside the vocabulary") != std::string::npos);
}

CATCH_TEST_CASE("DP slices of a global batch are disjoint and cover it") {
  for (int dp : {1, 2, 3, 4, 8}) {
    const int64_t global = 24;
    std::vector<int> hits(global, 0);
    for (int r = 0; r < dp; ++r) {
      auto range = DataParallelSlice(1000, global, r, dp);
      CATCH_REQUIRE(range.ok());
      for (int64_t j = range->begin; j < range->begin + range->count; ++j) ++hits[j - 1000];
    }
    CATCH_CHECK(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
  }
  CATCH_CHECK(!DataParallelSlice(0, 10, 0, 4).ok());  // not a multiple
  CATCH_CHECK(!DataParallelSlice(0, 8, 4, 4).ok());   // rank out of range
}

// The samples every rank reads when a run goes through `phases` of (steps, dp, global batch),
// resuming each phase from the position saved by the previous one.
std::vector<int64_t> ConsumedSamples(std::shared_ptr<const SampleStream> stream,
                                     const std::vector<std::tuple<int, int, int64_t>>& phases,
                                     std::vector<std::vector<int32_t>>* tokens) {
  std::vector<int64_t> consumed;
  std::string saved = DataPosition{0, stream->Fingerprint()}.Serialize();
  for (const auto& [steps, dp, global] : phases) {
    auto position = DataPosition::Parse(saved);
    CATCH_REQUIRE(position.ok());
    CATCH_REQUIRE(position->CheckStream(*stream).ok());
    std::vector<std::unique_ptr<Loader>> loaders;
    for (int r = 0; r < dp; ++r) {
      LoaderOptions o;
      o.global_batch = global;
      o.dp_rank = r;
      o.dp_size = dp;
      o.start_sample = position->samples_consumed;
      loaders.push_back(*Loader::Create(stream, o));
    }
    for (int step = 0; step < steps; ++step) {
      for (auto& loader : loaders) {
        auto batch = loader->Next();
        CATCH_REQUIRE(batch.ok());
        for (int64_t row = 0; row < batch->rows; ++row) {
          consumed.push_back(batch->first_sample + row);
          tokens->emplace_back(batch->row(row), batch->row(row) + batch->sample_tokens);
        }
      }
    }
    for (auto& loader : loaders) CATCH_CHECK(loader->samples_consumed() == loaders[0]->samples_consumed());
    saved = loaders[0]->position().Serialize();
  }
  return consumed;
}

CATCH_TEST_CASE("resuming under another DP degree or global batch consumes exactly the same samples") {
  TempDir dir;
  MakeCorpus(dir / "text", 60, 0, 1);
  MakeCorpus(dir / "code", 40, 1000000, 2);
  SampleStreamOptions options;
  options.corpora = {{dir / "text", 0.7}, {dir / "code", 0.3}};
  options.seq_len = 6;
  options.seed = 5;
  auto stream = *SampleStream::Open(options);
  std::vector<std::vector<int32_t>> reference_tokens, tokens;
  // Uninterrupted: DP 1, global batch 8, 30 steps = 240 samples.
  auto reference = ConsumedSamples(stream, {{30, 1, 8}}, &reference_tokens);
  // DP 1 -> 2 -> 4 with the same global batch.
  auto resumed = ConsumedSamples(stream, {{10, 1, 8}, {10, 2, 8}, {10, 4, 8}}, &tokens);
  CATCH_CHECK(resumed == reference);
  CATCH_CHECK(tokens == reference_tokens);
  // Global batch changes: 8 -> 16 (DP 2) -> 4 (DP 4): 5*8 + 10*16 + 10*4 = 240 samples.
  tokens.clear();
  auto regrouped = ConsumedSamples(stream, {{5, 1, 8}, {10, 2, 16}, {10, 4, 4}}, &tokens);
  CATCH_CHECK(regrouped == reference);
  CATCH_CHECK(tokens == reference_tokens);
  // A position from another stream definition is refused with an explanation.
  options.seq_len = 7;
  auto other = *SampleStream::Open(options);
  auto position = *DataPosition::Parse(DataPosition{240, stream->Fingerprint()}.Serialize());
  CATCH_CHECK(position.samples_consumed == 240);
  CATCH_CHECK(std::string(position.CheckStream(*other).message()).find("seq_len") != std::string::npos);
  CATCH_CHECK(!DataPosition::Parse("samples=3").ok());
}

}  // namespace
}  // namespace tessera::data
