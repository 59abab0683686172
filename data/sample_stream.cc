// Implementation of the sample stream: Feistel permutations, shard-spanning corpora, the blend
// slot table, per-epoch document indexes and packed reads.
#include "data/sample_stream.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/absl_string_view.h"
#include "core/hash.h"
#include "core/status_macros.h"

namespace tessera::data {
namespace {

// Keys of the two permutations of an epoch.
constexpr uint64_t kDocumentOrderTag = 0x646f63;  // "doc"
constexpr uint64_t kSampleOrderTag = 0x736d70;    // "smp"
// Coarse index stride: one running token offset per this many documents of an epoch's order
// (memory N/16 * 8 bytes per epoch; a lookup walks at most 15 documents).
constexpr int64_t kEpochStride = 16;
// Epoch indexes kept per corpus: the current one and its neighbour at an epoch boundary.
constexpr size_t kCachedEpochs = 2;

}  // namespace

uint64_t MixKey(std::initializer_list<uint64_t> values) {
  uint64_t h = 0x6a09e667f3bcc908ull;
  for (uint64_t v : values) h = SplitMix64Hash(h ^ SplitMix64Hash(v));
  return h;
}

// ---------------------------------------------------------------------------------------------
// Permutation

Permutation::Permutation(uint64_t n, uint64_t key) : n_(n) {
  int bits = 2;
  while (bits < 64 && (uint64_t{1} << bits) < n) ++bits;
  half_bits_ = (bits + 1) / 2;
  for (int r = 0; r < 4; ++r) keys_[r] = MixKey({key, static_cast<uint64_t>(r)});
}

uint64_t Permutation::operator()(uint64_t i) const {
  if (n_ <= 1) return 0;
  const uint64_t mask = (uint64_t{1} << half_bits_) - 1;
  uint64_t x = i;
  // Cycle walking: the network permutes [0, 4^half_bits); iterating it from a value below n
  // returns below n after a few steps on average (the domain is less than 4n).
  do {
    uint64_t left = x >> half_bits_, right = x & mask;
    for (int r = 0; r < 4; ++r) {
      const uint64_t next = left ^ (SplitMix64Hash(right ^ keys_[r]) & mask);
      left = right;
      right = next;
    }
    x = (left << half_bits_) | right;
  } while (x >= n_);
  return x;
}

// ---------------------------------------------------------------------------------------------
// DocumentCorpus

absl::StatusOr<std::shared_ptr<const DocumentCorpus>> DocumentCorpus::Open(const std::string& prefix) {
  TS_ASSIGN_OR_RETURN(std::vector<std::string> prefixes, FindShardPrefixes(prefix));
  auto corpus = std::shared_ptr<DocumentCorpus>(new DocumentCorpus());
  corpus->name_ = prefix;
  corpus->shard_first_doc_.push_back(0);
  for (const std::string& p : prefixes) {
    TS_ASSIGN_OR_RETURN(std::unique_ptr<IndexedDataset> shard, IndexedDataset::Open(p));
    corpus->num_tokens_ += shard->total_tokens();
    corpus->shard_first_doc_.push_back(corpus->shard_first_doc_.back() + shard->num_documents());
    corpus->shards_.push_back(std::move(shard));
  }
  return std::shared_ptr<const DocumentCorpus>(std::move(corpus));
}

std::pair<const IndexedDataset*, int64_t> DocumentCorpus::Locate(int64_t d) const {
  const auto it = std::upper_bound(shard_first_doc_.begin(), shard_first_doc_.end(), d);
  const size_t shard = static_cast<size_t>(it - shard_first_doc_.begin()) - 1;
  return {shards_[shard].get(), d - shard_first_doc_[shard]};
}

int64_t DocumentCorpus::document_length(int64_t d) const {
  auto [shard, local] = Locate(d);
  return shard->sequence_start(shard->document_index(local + 1)) -
         shard->sequence_start(shard->document_index(local));
}

absl::Status DocumentCorpus::Read(int64_t d, int64_t offset, int64_t count, int32_t* out) const {
  auto [shard, local] = Locate(d);
  // A document's sequences are consecutive in the .bin, so its tokens are one range.
  return shard->ReadTokens(shard->sequence_start(shard->document_index(local)) + offset, count, out);
}

std::string DocumentCorpus::Where(int64_t d) const {
  auto [shard, local] = Locate(d);
  return absl::StrCat(shard->prefix(), " document ", local);
}

// ---------------------------------------------------------------------------------------------
// SampleStream

struct SampleStream::EpochIndex {
  int64_t epoch = 0;
  // coarse[m] = epoch-stream offset of the document at order position m * kEpochStride.
  std::vector<int64_t> coarse;
};

absl::StatusOr<std::shared_ptr<const SampleStream>> SampleStream::Open(const SampleStreamOptions& options) {
  if (options.corpora.empty()) return absl::InvalidArgumentError("no corpora given");
  std::vector<std::shared_ptr<const DocumentCorpus>> corpora;
  std::vector<double> weights;
  for (const CorpusSpec& spec : options.corpora) {
    TS_ASSIGN_OR_RETURN(auto corpus, DocumentCorpus::Open(spec.prefix));
    corpora.push_back(std::move(corpus));
    weights.push_back(spec.weight);
  }
  return Create(std::move(corpora), std::move(weights), options);
}

namespace {

// The sum of the weights, after checking that each is finite and >= 0 and one is positive.
absl::StatusOr<double> WeightTotal(const std::vector<std::shared_ptr<const DocumentCorpus>>& corpora,
                                   const std::vector<double>& weights) {
  double total = 0;
  for (size_t d = 0; d < weights.size(); ++d) {
    if (!std::isfinite(weights[d]) || weights[d] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("corpus ", corpora[d]->name(), " has weight ",
                                                     weights[d], ": weights must be finite and >= 0"));
    }
    total += weights[d];
  }
  if (!(total > 0))
    return absl::InvalidArgumentError("all corpus weights are zero: at least one must be positive");
  return total;
}

// Slots per corpus in a block of `block` slots for normalized `weights`: largest remainder of
// w * block, and at least one for every positive weight.
std::vector<int64_t> BlendSlotCounts(const std::vector<double>& weights, int64_t block) {
  const size_t n = weights.size();
  std::vector<int64_t> slots(n, 0);
  std::vector<std::pair<double, size_t>> remainders;
  int64_t assigned = 0;
  for (size_t d = 0; d < n; ++d) {
    const double exact = weights[d] * static_cast<double>(block);
    slots[d] = static_cast<int64_t>(std::floor(exact));
    if (weights[d] > 0 && slots[d] == 0) slots[d] = 1;
    assigned += slots[d];
    remainders.emplace_back(-(exact - std::floor(exact)), d);  // largest remainder first, then lowest d
  }
  std::sort(remainders.begin(), remainders.end());
  for (size_t k = 0; assigned < block; k = (k + 1) % n) {
    if (weights[remainders[k].second] > 0) {
      ++slots[remainders[k].second];
      ++assigned;
    }
  }
  while (assigned > block) {  // only when many tiny weights were raised to one slot
    const size_t d = static_cast<size_t>(std::max_element(slots.begin(), slots.end()) - slots.begin());
    --slots[d];
    --assigned;
  }
  return slots;
}

// Orders the slots of a block: corpus d's k-th slot sits at (k + 1/2) / slots[d] of the block,
// all merged by that position (ties: lower corpus first). Gives each slot's corpus and its k.
void InterleaveSlots(const std::vector<int64_t>& counts, int64_t block, std::vector<uint16_t>* slot_corpus,
                     std::vector<uint32_t>* slot_rank) {
  struct Slot {
    int64_t num, den;  // position (2k+1) / (2 slots)
    uint32_t corpus, rank;
  };
  std::vector<Slot> slots;
  slots.reserve(block);
  for (size_t d = 0; d < counts.size(); ++d) {
    for (int64_t k = 0; k < counts[d]; ++k) {
      slots.push_back({2 * k + 1, 2 * counts[d], static_cast<uint32_t>(d), static_cast<uint32_t>(k)});
    }
  }
  std::sort(slots.begin(), slots.end(), [](const Slot& a, const Slot& b) {
    const int64_t l = a.num * b.den, r = b.num * a.den;
    return l != r ? l < r : a.corpus < b.corpus;
  });
  for (const Slot& slot : slots) {
    slot_corpus->push_back(static_cast<uint16_t>(slot.corpus));
    slot_rank->push_back(slot.rank);
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<const SampleStream>> SampleStream::Create(
    std::vector<std::shared_ptr<const DocumentCorpus>> corpora, std::vector<double> weights,
    const SampleStreamOptions& options) {
  if (corpora.empty() || corpora.size() != weights.size()) {
    return absl::InvalidArgumentError("a sample stream needs one weight per corpus and at least one corpus");
  }
  if (corpora.size() > 65535) return absl::InvalidArgumentError("at most 65535 corpora can be blended");
  if (options.seq_len < 1)
    return absl::InvalidArgumentError(absl::StrCat("seq_len must be >= 1, got ", options.seq_len));
  TS_ASSIGN_OR_RETURN(const double total, WeightTotal(corpora, weights));

  auto s = std::shared_ptr<SampleStream>(new SampleStream());
  s->corpora_ = std::move(corpora);
  s->seq_len_ = options.seq_len;
  s->seed_ = options.seed;
  s->shuffle_ = options.shuffle;
  s->vocab_size_ = options.vocab_size;
  const size_t n = s->corpora_.size();
  for (double w : weights) s->weights_.push_back(w / total);
  const int64_t block = int64_t{1} << kBlendSlotsLog2;
  s->slots_ = BlendSlotCounts(s->weights_, block);
  InterleaveSlots(s->slots_, block, &s->slot_corpus_, &s->slot_rank_);

  uint64_t fp = MixKey({0x7465737365726121ull, options.seed, static_cast<uint64_t>(options.seq_len),
                        static_cast<uint64_t>(options.shuffle), n});
  for (size_t d = 0; d < n; ++d) {
    const DocumentCorpus& c = *s->corpora_[d];
    int64_t per_epoch = 0;
    if (s->slots_[d] > 0) {
      if (c.num_tokens() < options.seq_len + 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("corpus ", c.name(), " holds ", c.num_tokens(),
                         " tokens, fewer than one sample of seq_len + 1 = ", options.seq_len + 1));
      }
      per_epoch = (c.num_tokens() - 1) / options.seq_len;
    }
    s->samples_per_epoch_.push_back(per_epoch);
    fp = MixKey({fp, static_cast<uint64_t>(c.num_documents()), static_cast<uint64_t>(c.num_tokens()),
                 static_cast<uint64_t>(s->slots_[d])});
  }
  s->fingerprint_ = fp;
  s->epoch_cache_.resize(n);
  return std::shared_ptr<const SampleStream>(std::move(s));
}

std::vector<double> SampleStream::realized_weights() const {
  std::vector<double> out;
  for (int64_t slots : slots_)
    out.push_back(static_cast<double>(slots) / static_cast<double>(int64_t{1} << kBlendSlotsLog2));
  return out;
}

std::string SampleStream::Describe() const {
  std::string out;
  for (size_t d = 0; d < corpora_.size(); ++d) {
    absl::StrAppendFormat(&out, "%s: %d documents, %d tokens, weight %.4f, %d samples per epoch\n",
                          corpora_[d]->name(), corpora_[d]->num_documents(), corpora_[d]->num_tokens(),
                          realized_weights()[d], samples_per_epoch_[d]);
  }
  return out;
}

SampleOrigin SampleStream::Origin(int64_t j) const {
  const int64_t block = j >> kBlendSlotsLog2;
  const size_t p = static_cast<size_t>(j & ((int64_t{1} << kBlendSlotsLog2) - 1));
  SampleOrigin o;
  o.corpus = slot_corpus_[p];
  o.corpus_sample = block * slots_[o.corpus] + slot_rank_[p];
  const int64_t per_epoch = samples_per_epoch_[o.corpus];
  o.epoch = o.corpus_sample / per_epoch;
  const int64_t k = o.corpus_sample % per_epoch;
  o.sample_in_epoch = shuffle_ ? static_cast<int64_t>(Permutation(
                                     per_epoch, MixKey({seed_, static_cast<uint64_t>(o.corpus),
                                                        static_cast<uint64_t>(o.epoch), kSampleOrderTag}))(k))
                               : k;
  return o;
}

std::shared_ptr<const SampleStream::EpochIndex> SampleStream::Epoch(int d, int64_t epoch) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : epoch_cache_[d]) {
      if (e->epoch == epoch) return e;
    }
  }
  // Built outside the lock: another thread may build the same epoch concurrently, which only
  // costs time (both results are identical).
  auto index = std::make_shared<EpochIndex>();
  index->epoch = epoch;
  const DocumentCorpus& c = *corpora_[d];
  const int64_t docs = c.num_documents();
  const Permutation order(
      static_cast<uint64_t>(docs),
      MixKey({seed_, static_cast<uint64_t>(d), static_cast<uint64_t>(epoch), kDocumentOrderTag}));
  index->coarse.reserve(docs / kEpochStride + 1);
  int64_t offset = 0;
  for (int64_t i = 0; i < docs; ++i) {
    if (i % kEpochStride == 0) index->coarse.push_back(offset);
    offset += c.document_length(shuffle_ ? static_cast<int64_t>(order(i)) : i);
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto& cache = epoch_cache_[d];
  cache.push_front(index);
  while (cache.size() > kCachedEpochs) cache.pop_back();
  return index;
}

absl::Status SampleStream::Read(int64_t j, int32_t* out) const {
  if (j < 0) return absl::OutOfRangeError(absl::StrCat("sample index ", j, " is negative"));
  const SampleOrigin o = Origin(j);
  const DocumentCorpus& c = *corpora_[o.corpus];
  const std::shared_ptr<const EpochIndex> index = Epoch(o.corpus, o.epoch);
  const Permutation order(
      static_cast<uint64_t>(c.num_documents()),
      MixKey({seed_, static_cast<uint64_t>(o.corpus), static_cast<uint64_t>(o.epoch), kDocumentOrderTag}));
  const int64_t docs = c.num_documents();
  auto doc_at = [&](int64_t i) { return shuffle_ ? static_cast<int64_t>(order(i)) : i; };
  // Unreachable while the index and the corpus agree; checked so a bug cannot read past the end.
  auto ran_out = [&] {
    return absl::InternalError(
        absl::StrCat("sample ", j, " runs past the end of epoch ", o.epoch, " of ", c.name()));
  };
  const int64_t start = o.sample_in_epoch * seq_len_;
  // The last coarse entry at or before `start`, then walk to the document holding it.
  const size_t m = static_cast<size_t>(std::upper_bound(index->coarse.begin(), index->coarse.end(), start) -
                                       index->coarse.begin()) -
                   1;
  int64_t i = static_cast<int64_t>(m) * kEpochStride;
  int64_t doc_start = index->coarse[m];
  int64_t doc = doc_at(i);
  int64_t len = c.document_length(doc);
  while (doc_start + len <= start) {
    doc_start += len;
    if (++i >= docs) return ran_out();
    doc = doc_at(i);
    len = c.document_length(doc);
  }
  int64_t offset = start - doc_start;
  int64_t filled = 0;
  const int64_t need = seq_len_ + 1;
  while (filled < need) {
    if (offset >= len) {  // next document of the epoch (empty ones are skipped this way too)
      if (++i >= docs) return ran_out();
      doc = doc_at(i);
      len = c.document_length(doc);
      offset = 0;
      continue;
    }
    const int64_t take = std::min(need - filled, len - offset);
    TS_RETURN_IF_ERROR(c.Read(doc, offset, take, out + filled));
    if (vocab_size_ > 0) {
      for (int64_t t = 0; t < take; ++t) {
        const int32_t id = out[filled + t];
        if (id < 0 || id >= vocab_size_) {
          return absl::OutOfRangeError(absl::StrCat(c.Where(doc), " token ", offset + t, " is id ", id,
                                                    ", outside the vocabulary [0, ", vocab_size_,
                                                    ") (was the corpus tokenized with another tokenizer?)"));
        }
      }
    }
    filled += take;
    offset += take;
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Layout-independent helpers

absl::StatusOr<SampleRange> DataParallelSlice(int64_t batch_start, int64_t global_batch, int dp_rank,
                                              int dp_size) {
  if (dp_size < 1 || dp_rank < 0 || dp_rank >= dp_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("data-parallel rank ", dp_rank, " of ", dp_size, " is invalid"));
  }
  if (global_batch < 1 || global_batch % dp_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "global batch ", global_batch, " is not a positive multiple of the data-parallel degree ", dp_size));
  }
  if (batch_start < 0) return absl::InvalidArgumentError("negative batch start");
  const int64_t per_rank = global_batch / dp_size;
  return SampleRange{batch_start + dp_rank * per_rank, per_rank};
}

std::string DataPosition::Serialize() const {
  return absl::StrFormat("samples_consumed=%d stream_fingerprint=%016x", samples_consumed,
                         stream_fingerprint);
}

absl::StatusOr<DataPosition> DataPosition::Parse(std::string_view text) {
  DataPosition p;
  bool has_samples = false;
  for (absl::string_view field : absl::StrSplit(AbslView(text), ' ', absl::SkipEmpty())) {
    const size_t eq = field.find('=');
    const absl::string_view key = field.substr(0, eq),
                            value = eq == absl::string_view::npos ? "" : field.substr(eq + 1);
    if (key == "samples_consumed" && absl::SimpleAtoi(value, &p.samples_consumed) &&
        p.samples_consumed >= 0) {
      has_samples = true;
    } else if (key == "stream_fingerprint" && absl::SimpleHexAtoi(value, &p.stream_fingerprint)) {
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("data position '", AbslView(text), "': unexpected field '", field,
                       "' (expected samples_consumed=N stream_fingerprint=HEX)"));
    }
  }
  if (!has_samples)
    return absl::InvalidArgumentError(
        absl::StrCat("data position '", AbslView(text), "' has no samples_consumed"));
  return p;
}

absl::Status DataPosition::CheckStream(const SampleSource& source) const {
  if (source.Fingerprint() == stream_fingerprint) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "the data position was saved from a different sample stream (fingerprint %016x, now %016x): the seed, "
      "seq_len, corpora or weights changed, so sample %d no longer means the same data",
      stream_fingerprint, source.Fingerprint(), samples_consumed));
}

}  // namespace tessera::data
