// The global stream of training samples and the data position that survives layout changes.
//
// Sample j (j = 0, 1, 2, ...) is seq_len + 1 consecutive tokens, packed across document
// boundaries, and is a pure function of (seed, corpora, weights, seq_len, shuffle, j): nothing
// depends on the data-parallel degree, the batch sizes or the number of processes. A run's data
// position is therefore one number, the count of samples consumed; a run resumed from it with
// any other layout reads exactly the samples the uninterrupted run would have read.
//
// How j maps to tokens:
//   blend   j -> (corpus d, corpus sample i): a fixed table of 2^16 slots in which corpus d owns
//           round(w_d * 2^16) evenly spaced slots, repeated; corpus sample i = block * slots_d +
//           rank of the slot. Stateless, and within ~2 samples of the weights over any window.
//   epochs  i -> (epoch e = i / S_d, k = i % S_d), S_d = (tokens_d - 1) / seq_len samples per epoch.
//   shuffle each epoch orders the documents and the samples by keyed permutations of the seed.
//   packing sample k of an epoch is tokens [k*seq_len, k*seq_len + seq_len + 1) of the epoch's
//           documents concatenated in that order (end-of-document tokens are in the data).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/indexed_dataset.h"

namespace tessera::data {

// A keyed pseudo-random bijection of [0, n): a balanced Feistel network on the smallest even
// number of bits covering n, with cycle walking back into range. O(1) memory and time.
class Permutation {
 public:
  Permutation(uint64_t n, uint64_t key);
  uint64_t operator()(uint64_t i) const;
  uint64_t size() const { return n_; }

 private:
  uint64_t n_;
  int half_bits_;
  uint64_t keys_[4];
};

// Mixes values into a 64-bit key (a chain of SplitMix64 hashes, core/hash.h).
uint64_t MixKey(std::initializer_list<uint64_t> values);

// The documents of one corpus: one .idx/.bin pair or several shards, in shard order.
class DocumentCorpus {
 public:
  // `prefix` as FindShardPrefixes resolves it.
  static absl::StatusOr<std::shared_ptr<const DocumentCorpus>> Open(const std::string& prefix);

  const std::string& name() const { return name_; }
  int64_t num_documents() const { return shard_first_doc_.back(); }
  int64_t num_tokens() const { return num_tokens_; }
  int64_t document_length(int64_t d) const;
  // Tokens [offset, offset + count) of document d.
  absl::Status Read(int64_t d, int64_t offset, int64_t count, int32_t* out) const;
  // Where document d lives, for messages: "PREFIX_00003 document 17".
  std::string Where(int64_t d) const;

 private:
  std::pair<const IndexedDataset*, int64_t> Locate(int64_t d) const;
  std::string name_;
  std::vector<std::unique_ptr<IndexedDataset>> shards_;
  std::vector<int64_t> shard_first_doc_;  // shards + 1 entries
  int64_t num_tokens_ = 0;
};

// Anything that yields sample j; SampleStream is the real one, tests may supply others.
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  // Tokens per sample (seq_len + 1).
  virtual int64_t sample_tokens() const = 0;
  // Writes sample j's tokens to out[0 .. sample_tokens()). Thread-safe.
  virtual absl::Status Read(int64_t j, int32_t* out) const = 0;
  // Identifies the stream definition (seed, corpora sizes, weights, seq_len): positions saved
  // with one fingerprint mean the same samples only under the same fingerprint.
  virtual uint64_t Fingerprint() const = 0;
};

struct CorpusSpec {
  std::string prefix;  // PREFIX of PREFIX.idx/.bin, or of shards PREFIX_00000...
  double weight = 1.0;
};

struct SampleStreamOptions {
  std::vector<CorpusSpec> corpora;
  int64_t seq_len = 0;
  uint64_t seed = 0;
  // Off for evaluation data: documents and samples in file order.
  bool shuffle = true;
  // When > 0, a token id >= vocab_size is an error naming the corpus and document, instead of
  // an out-of-range embedding lookup later.
  int64_t vocab_size = 0;
};

// Where sample j comes from.
struct SampleOrigin {
  int corpus = 0;
  int64_t corpus_sample = 0;  // index among the corpus's samples, over all epochs
  int64_t epoch = 0;
  int64_t sample_in_epoch = 0;  // after shuffling: position of the window in the epoch stream
};

class SampleStream : public SampleSource {
 public:
  static constexpr int kBlendSlotsLog2 = 16;

  // Opens every corpus and validates the options: weights finite and >= 0, not all zero; every
  // corpus with a positive weight holds at least seq_len + 1 tokens.
  static absl::StatusOr<std::shared_ptr<const SampleStream>> Open(const SampleStreamOptions& options);
  static absl::StatusOr<std::shared_ptr<const SampleStream>> Create(
      std::vector<std::shared_ptr<const DocumentCorpus>> corpora, std::vector<double> weights,
      const SampleStreamOptions& options);

  int64_t seq_len() const { return seq_len_; }
  int64_t sample_tokens() const override { return seq_len_ + 1; }
  absl::Status Read(int64_t j, int32_t* out) const override;
  uint64_t Fingerprint() const override { return fingerprint_; }
  SampleOrigin Origin(int64_t j) const;

  int num_corpora() const { return static_cast<int>(corpora_.size()); }
  const DocumentCorpus& corpus(int d) const { return *corpora_[d]; }
  int64_t samples_per_epoch(int d) const { return samples_per_epoch_[d]; }
  // The weights as the slot table realizes them (slots / 2^16).
  std::vector<double> realized_weights() const;
  // One line per corpus: name, documents, tokens, weight, samples per epoch.
  std::string Describe() const;

 private:
  struct EpochIndex;
  SampleStream() = default;
  std::shared_ptr<const EpochIndex> Epoch(int d, int64_t epoch) const;

  std::vector<std::shared_ptr<const DocumentCorpus>> corpora_;
  std::vector<double> weights_;
  std::vector<int64_t> slots_;              // per corpus
  std::vector<uint16_t> slot_corpus_;       // 2^16 entries
  std::vector<uint32_t> slot_rank_;         // k-th slot of its corpus within the block
  std::vector<int64_t> samples_per_epoch_;  // per corpus (0 for weight 0)
  int64_t seq_len_ = 0;
  uint64_t seed_ = 0;
  bool shuffle_ = true;
  int64_t vocab_size_ = 0;
  uint64_t fingerprint_ = 0;
  // A few recent epochs' document indexes per corpus, built on demand.
  mutable std::mutex mu_;
  mutable std::vector<std::deque<std::shared_ptr<const EpochIndex>>> epoch_cache_;
};

// The global samples [begin, begin + count) that one rank reads.
struct SampleRange {
  int64_t begin = 0;
  int64_t count = 0;
};

// DP rank `dp_rank` of `dp_size` reads the contiguous block [batch_start + r*g/n, + g/n) of the
// global batch [batch_start, batch_start + global_batch). The blocks of all ranks are disjoint
// and cover the batch; global_batch must be a multiple of dp_size.
absl::StatusOr<SampleRange> DataParallelSlice(int64_t batch_start, int64_t global_batch, int dp_rank,
                                              int dp_size);

// What a checkpoint stores about the data: the samples consumed (the blend keeps no state) and
// the fingerprint of the stream they were consumed from.
struct DataPosition {
  int64_t samples_consumed = 0;
  uint64_t stream_fingerprint = 0;

  // "samples_consumed=N stream_fingerprint=0123456789abcdef"
  std::string Serialize() const;
  static absl::StatusOr<DataPosition> Parse(std::string_view text);
  // OK when `source` is the stream this position was taken from; otherwise an error that says
  // the data definition changed (the caller may choose to continue anyway).
  absl::Status CheckStream(const SampleSource& source) const;
};

}  // namespace tessera::data
