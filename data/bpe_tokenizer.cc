// The BPE core: the rank table, merging pieces (tiktoken's quadratic scan for short pieces, a
// heap for long ones), encoding with and without special tokens, and decoding.
//
// Merging picks the lowest rank and, among equal ranks, the leftmost pair (tiktoken's
// _byte_pair_merge uses a strict `<` scan); a naive port that breaks ties otherwise differs.
#include "data/bpe_tokenizer.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <queue>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/absl_string_view.h"
#include "core/hash.h"
#include "core/status_macros.h"
#include "core/strings.h"
#include "core/utf8.h"
#include "data/split_pattern.h"

namespace tessera::data {
namespace {

constexpr uint32_t kNoRank = 0xFFFFFFFFu;
// Pieces up to this many bytes use tiktoken's quadratic scan on a stack buffer; longer ones
// (long words, digit-free symbol runs) use a heap so that a 1 MB word is not O(n^2).
constexpr size_t kShortPiece = 128;

std::atomic<uint64_t> next_serial{1};

// A fast hash for short byte strings (tokens average a few bytes): 8-byte words folded with
// multiply-xorshift, then the SplitMix64 finalizer.
inline uint64_t HashBytes(const char* p, size_t n) {
  uint64_t h = kSplitMix64Gamma * (n + 1);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * kSplitMix64Multiplier1;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * kSplitMix64Multiplier2;
  }
  return SplitMix64Finalize(h);
}

// Most tokens are a few bytes: a byte loop beats a call to memcmp for them.
inline bool SameBytes(const char* a, const char* b, size_t n) {
  if (n > 16) return std::memcmp(a, b, n) == 0;
  for (size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

inline uint64_t Prefix8(const char* bytes, size_t size) {
  uint64_t v = 0;
  std::memcpy(&v, bytes, size < 8 ? size : 8);
  return v;
}

}  // namespace

// Ids of recently merged pieces (words recur: identifiers in code, common words in prose), so
// that a piece is merged once rather than each time it appears. Bounded; cleared when full. One
// per thread and tokenizer (keyed by serial, so a destroyed tokenizer's address being reused is
// harmless).
struct BpeTokenizer::Scratch {
  absl::flat_hash_map<std::string, std::pair<uint32_t, uint32_t>> piece_ids;  // -> (offset, count)
  std::vector<int32_t> cached_ids;
};

BpeTokenizer::~BpeTokenizer() = default;

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Create(std::vector<std::string> tokens,
                                                                   TokenizerSpec spec, std::string source) {
  if (source.empty()) source = spec.name;
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer());
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return absl::InvalidArgumentError(absl::StrCat(source, ": the vocabulary is empty"));
  if (spec.expected_ranks != 0 && n != spec.expected_ranks) {
    return absl::InvalidArgumentError(absl::StrCat(source, " has ", n, " ranks but ", spec.name,
                                                   "'s rank file has ", spec.expected_ranks,
                                                   ": is it the right file for this encoding?"));
  }
  TS_RETURN_IF_ERROR(t->SetRanks(tokens, source));
  TS_RETURN_IF_ERROR(t->SetSpecials(spec, source));
  TS_ASSIGN_OR_RETURN(t->pattern_, SplitPattern::Compile(spec.pattern, source));
  t->spec_ = std::move(spec);
  t->source_ = std::move(source);
  t->serial_ = next_serial.fetch_add(1);
  return t;
}

absl::Status BpeTokenizer::SetRanks(const std::vector<std::string>& tokens, const std::string& source) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n >= (int64_t{1} << 31) - 1)
    return absl::InvalidArgumentError(absl::StrCat(source, ": too many ranks"));
  size_t total = 0;
  for (const std::string& tok : tokens) total += tok.size();
  if (total >= 0xFFFFFFFFu)
    return absl::InvalidArgumentError(absl::StrCat(source, ": token bytes exceed 4 GiB"));
  arena_.reserve(total);
  offsets_.reserve(n + 1);
  for (const std::string& tok : tokens) {
    offsets_.push_back(static_cast<uint32_t>(arena_.size()));
    arena_ += tok;
  }
  offsets_.push_back(static_cast<uint32_t>(arena_.size()));
  size_t capacity = 1024;
  while (capacity < static_cast<size_t>(n) * 2) capacity *= 2;  // load factor <= 1/2
  slots_.assign(capacity, Slot());
  slot_mask_ = capacity - 1;
  pair_rank_.assign(65536, -1);
  std::fill(std::begin(byte_rank_), std::end(byte_rank_), -1);
  for (int32_t r = 0; r < n; ++r) {
    const std::string_view bytes = TokenBytes(r);
    if (bytes.empty())
      return absl::InvalidArgumentError(absl::StrCat(source, ": rank ", r, " is an empty token"));
    if (bytes.size() > 0xFFFF) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": rank ", r, " is a token of ", bytes.size(),
                                                     " bytes; at most 65535 are supported"));
    }
    if (!Insert(bytes, r)) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": token '", EscapedExcerpt(bytes), "' has two ranks"));
    }
    const auto* u = reinterpret_cast<const unsigned char*>(bytes.data());
    if (bytes.size() == 1) byte_rank_[u[0]] = r;
    if (bytes.size() == 2) pair_rank_[u[0] << 8 | u[1]] = r;
  }
  for (int b = 0; b < 256; ++b) {
    if (byte_rank_[b] < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: the single byte 0x%02x is not a token; a byte-level BPE vocabulary needs all "
                          "256 bytes so that "
                          "any text can be encoded",
                          source, b));
    }
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizer::SetSpecials(const TokenizerSpec& spec, const std::string& source) {
  const int64_t n = num_ranks();
  vocab_size_ = static_cast<int32_t>(n);
  for (const auto& [text, id] : spec.specials) {
    if (text.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": a special token is empty"));
    if (id < n) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": special token ", text, " has id ", id,
                                                     ", which is a rank of the file (ranks 0..", n - 1, ")"));
    }
    if (!special_ids_.emplace(text, id).second || !special_text_.emplace(id, text).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": special token ", text, " or its id ", id, " is given twice"));
    }
    vocab_size_ = std::max(vocab_size_, id + 1);
    if (std::find(special_lengths_.begin(), special_lengths_.end(), text.size()) == special_lengths_.end()) {
      special_lengths_.push_back(text.size());
    }
  }
  std::sort(special_lengths_.rbegin(), special_lengths_.rend());
  for (const std::string* name : {&spec.eod, &spec.bos}) {
    if (!name->empty() && !special_ids_.contains(*name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": '", *name, "' is not one of the special tokens"));
    }
  }
  return absl::OkStatus();
}

int32_t BpeTokenizer::Lookup(const char* bytes, size_t size) const {
  const uint64_t h = HashBytes(bytes, size);
  const uint16_t tag = static_cast<uint16_t>(h >> 48);
  const uint64_t prefix = Prefix8(bytes, size);
  for (uint64_t i = h & slot_mask_;; i = (i + 1) & slot_mask_) {
    const Slot& slot = slots_[i];
    if (slot.rank < 0) return -1;
    if (slot.tag == tag && slot.length == size && slot.prefix == prefix &&
        (size <= 8 || SameBytes(arena_.data() + offsets_[slot.rank] + 8, bytes + 8, size - 8))) {
      return slot.rank;
    }
  }
}

bool BpeTokenizer::Insert(std::string_view bytes, int32_t rank) {
  if (bytes.size() > 0xFFFF) return false;  // no real token is 64 KiB long
  if (Lookup(bytes.data(), bytes.size()) >= 0) return false;
  const uint64_t h = HashBytes(bytes.data(), bytes.size());
  uint64_t i = h & slot_mask_;
  while (slots_[i].rank >= 0) i = (i + 1) & slot_mask_;
  slots_[i] = Slot{Prefix8(bytes.data(), bytes.size()), rank, static_cast<uint16_t>(bytes.size()),
                   static_cast<uint16_t>(h >> 48)};
  return true;
}

std::optional<int32_t> BpeTokenizer::SpecialId(std::string_view text) const {
  if (text.empty()) return std::nullopt;
  auto it = special_ids_.find(AbslView(text));
  if (it == special_ids_.end()) return std::nullopt;
  return it->second;
}

std::optional<int32_t> BpeTokenizer::Rank(std::string_view bytes) const {
  const int32_t r = Lookup(bytes.data(), bytes.size());
  if (r < 0) return std::nullopt;
  return r;
}

BpeTokenizer::Scratch* BpeTokenizer::ThreadScratch() const {
  // More than a few live tokenizers per thread is unusual, so the map is simply cleared when it
  // grows.
  thread_local std::unordered_map<uint64_t, std::unique_ptr<Scratch>> scratch_by_tokenizer;
  if (scratch_by_tokenizer.size() > 16 && !scratch_by_tokenizer.contains(serial_))
    scratch_by_tokenizer.clear();
  std::unique_ptr<Scratch>& slot = scratch_by_tokenizer[serial_];
  if (!slot) slot = std::make_unique<Scratch>();
  return slot.get();
}

absl::Status BpeTokenizer::ForEachMatch(std::string_view text, void (*fn)(void*, std::string_view),
                                        void* arg) const {
  return pattern_->ForEachMatch(text, fn, arg);
}

void BpeTokenizer::EncodePiece(std::string_view piece, std::vector<int32_t>* out, Scratch* cache) const {
  const auto* u = reinterpret_cast<const unsigned char*>(piece.data());
  const size_t n = piece.size();
  if (n == 1) {
    out->push_back(byte_rank_[u[0]]);
    return;
  }
  if (n == 2) {
    const int32_t r = pair_rank_[u[0] << 8 | u[1]];
    if (r >= 0) {
      out->push_back(r);
    } else {
      out->push_back(byte_rank_[u[0]]);
      out->push_back(byte_rank_[u[1]]);
    }
    return;
  }
  if (const int32_t r = Lookup(piece.data(), n); r >= 0) {
    out->push_back(r);
    return;
  }
  if (n > kShortPiece) {
    MergeSlow(piece, out);
    return;
  }
  if (cache != nullptr) {
    if (auto it = cache->piece_ids.find(AbslView(piece)); it != cache->piece_ids.end()) {
      const int32_t* ids = cache->cached_ids.data() + it->second.first;
      out->insert(out->end(), ids, ids + it->second.second);
      return;
    }
  }
  const size_t first_out = out->size();
  MergeScan(piece, out);
  if (cache != nullptr) {
    if (cache->piece_ids.size() >= (1 << 16)) {
      cache->piece_ids.clear();
      cache->cached_ids.clear();
    }
    const uint32_t offset = static_cast<uint32_t>(cache->cached_ids.size());
    cache->cached_ids.insert(cache->cached_ids.end(), out->begin() + first_out, out->end());
    cache->piece_ids.emplace(std::string(piece),
                             std::make_pair(offset, static_cast<uint32_t>(out->size() - first_out)));
  }
}

void BpeTokenizer::MergeScan(std::string_view piece, std::vector<int32_t>* out) const {
  const auto* u = reinterpret_cast<const unsigned char*>(piece.data());
  const size_t n = piece.size();
  auto rank_of = [&](size_t begin, size_t end) -> uint32_t {
    if (end - begin == 2) {
      const int32_t r = pair_rank_[u[begin] << 8 | u[begin + 1]];
      return r < 0 ? kNoRank : static_cast<uint32_t>(r);
    }
    const int32_t r = Lookup(piece.data() + begin, end - begin);
    return r < 0 ? kNoRank : static_cast<uint32_t>(r);
  };
  // parts[i] = (start of part i, rank of the merge of parts i and i+1), as in tiktoken.
  uint32_t start[kShortPiece + 2];
  uint32_t rank[kShortPiece + 2];
  size_t count = 0;
  uint32_t min_rank = kNoRank;
  size_t min_at = 0;
  for (size_t i = 0; i + 1 < n; ++i) {
    start[count] = static_cast<uint32_t>(i);
    rank[count] = rank_of(i, i + 2);
    if (rank[count] < min_rank) {
      min_rank = rank[count];
      min_at = count;
    }
    ++count;
  }
  start[count] = static_cast<uint32_t>(n - 1);
  rank[count++] = kNoRank;
  start[count] = static_cast<uint32_t>(n);
  rank[count++] = kNoRank;
  while (min_rank != kNoRank) {
    const size_t i = min_at;
    // Ranks of the pairs that the merge of parts i and i+1 creates; part i+1 then goes.
    if (i > 0) rank[i - 1] = i + 2 < count ? rank_of(start[i - 1], start[i + 2]) : kNoRank;
    rank[i] = i + 3 < count ? rank_of(start[i], start[i + 3]) : kNoRank;
    std::memmove(start + i + 1, start + i + 2, (count - i - 2) * sizeof(uint32_t));
    std::memmove(rank + i + 1, rank + i + 2, (count - i - 2) * sizeof(uint32_t));
    --count;
    min_rank = kNoRank;
    for (size_t k = 0; k + 1 < count; ++k) {
      if (rank[k] < min_rank) {
        min_rank = rank[k];
        min_at = k;
      }
    }
  }
  for (size_t k = 0; k + 1 < count; ++k) {
    const uint32_t r = rank_of(start[k], start[k + 1]);
    out->push_back(static_cast<int32_t>(r));
  }
}

void BpeTokenizer::MergeSlow(std::string_view piece, std::vector<int32_t>* out) const {
  // Same result as the scan: symbols in a linked list, candidate merges in a min-heap ordered by
  // (rank, start); an entry is stale when its two symbols have changed since it was pushed.
  const size_t n = piece.size();
  struct Symbol {
    uint32_t begin, end;
    int32_t prev, next;
  };
  std::vector<Symbol> sym(n);
  for (size_t i = 0; i < n; ++i) {
    sym[i] = {static_cast<uint32_t>(i), static_cast<uint32_t>(i + 1), static_cast<int32_t>(i) - 1,
              i + 1 < n ? static_cast<int32_t>(i + 1) : -1};
  }
  struct Candidate {
    uint32_t rank, begin, mid, end;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : begin > o.begin; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int32_t left) {
    if (left < 0 || sym[left].next < 0) return;
    const Symbol& a = sym[left];
    const Symbol& b = sym[a.next];
    const int32_t r = Lookup(piece.data() + a.begin, b.end - a.begin);
    if (r >= 0) heap.push({static_cast<uint32_t>(r), a.begin, a.end, b.end});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  // Symbols are indexed by their first byte, which never changes for a live symbol.
  std::vector<char> alive(n, 1);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int32_t left = static_cast<int32_t>(c.begin);
    if (!alive[left] || sym[left].end != c.mid || sym[left].next < 0 || sym[sym[left].next].end != c.end)
      continue;
    const int32_t right = sym[left].next;
    sym[left].end = sym[right].end;
    sym[left].next = sym[right].next;
    if (sym[right].next >= 0) sym[sym[right].next].prev = left;
    alive[right] = 0;
    push(sym[left].prev);
    push(left);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) {
    out->push_back(Lookup(piece.data() + sym[i].begin, sym[i].end - sym[i].begin));
  }
}

absl::Status BpeTokenizer::EncodeChecked(std::string_view text, std::vector<int32_t>* out) const {
  Scratch* cache = ThreadScratch();
  auto encode = [this, out, cache](std::string_view piece) { EncodePiece(piece, out, cache); };
  return Split(text, encode);
}

absl::Status BpeTokenizer::EncodeOrdinary(std::string_view text, std::vector<int32_t>* out) const {
  const size_t bad = FindInvalidUtf8(text);
  if (bad != std::string_view::npos) return absl::InvalidArgumentError(DescribeInvalidUtf8(text, bad));
  return EncodeChecked(text, out);
}

absl::Status BpeTokenizer::EncodeWithSpecials(std::string_view text, std::vector<int32_t>* out) const {
  const size_t bad = FindInvalidUtf8(text);
  if (bad != std::string_view::npos) return absl::InvalidArgumentError(DescribeInvalidUtf8(text, bad));
  if (special_ids_.empty()) return EncodeChecked(text, out);
  bool first_byte[256] = {};
  for (const auto& [special, id] : special_ids_) first_byte[static_cast<unsigned char>(special[0])] = true;
  size_t segment = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (!first_byte[static_cast<unsigned char>(text[i])]) continue;
    for (size_t len : special_lengths_) {  // longest first
      if (i + len > text.size()) continue;
      auto it = special_ids_.find(AbslView(text.substr(i, len)));
      if (it == special_ids_.end()) continue;
      TS_RETURN_IF_ERROR(EncodeChecked(text.substr(segment, i - segment), out));
      out->push_back(it->second);
      segment = i + len;
      i = segment - 1;
      break;
    }
  }
  return EncodeChecked(text.substr(segment), out);
}

absl::StatusOr<std::string> BpeTokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id >= 0 && id < num_ranks()) {
      text.append(TokenBytes(id).data(), TokenBytes(id).size());
      continue;
    }
    auto it = special_text_.find(id);
    if (it == special_text_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("id ", id, " (position ", i, ") is not in the vocabulary of ", source_, ": ranks 0..",
                       num_ranks() - 1, " and ", special_text_.size(), " special tokens"));
    }
    text.append(it->second);
  }
  return text;
}

}  // namespace tessera::data
