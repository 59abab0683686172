// Byte-level BPE tokenizer that reads tiktoken-format rank files (Llama 3's tokenizer.model,
// cl100k_base, o200k_base, or one trained by `tessera tokenizer train`) and produces exactly the
// ids tiktoken does: the text is split with the encoding's pattern (split_pattern.h), and each
// piece is merged by lowest rank, leftmost first. Special tokens are matched only where the
// caller allows them. LoadTokenizer builds one from a description ("llama3:PATH", a rank file).
// No LibTorch: this builds into the small tessera_data library.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "data/encodings.h"

namespace tessera::data {

class SplitPattern;

class BpeTokenizer {
 public:
  // `tokens[r]` holds the bytes of rank r. Every single byte must be a token (so any text can be
  // encoded) and special ids must not collide with ranks. `source` names the origin for errors.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Create(std::vector<std::string> tokens,
                                                              TokenizerSpec spec, std::string source = "");
  ~BpeTokenizer();
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  // Appends the ids of `text` (valid UTF-8), treating special-token text as ordinary text
  // (tiktoken's encode_ordinary). The error for invalid UTF-8 gives the byte offset.
  absl::Status EncodeOrdinary(std::string_view text, std::vector<int32_t>* out) const;
  // Like EncodeOrdinary, but text equal to a special token becomes that token's id (tiktoken's
  // encode with allowed_special="all").
  absl::Status EncodeWithSpecials(std::string_view text, std::vector<int32_t>* out) const;
  // Bytes of the ids, concatenated; an id that is neither a rank nor a special is an error.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const;

  // Number of ranks in the file.
  int32_t num_ranks() const { return static_cast<int32_t>(offsets_.size()) - 1; }
  // One past the largest id, specials included: the embedding table's minimum size.
  int32_t vocab_size() const { return vocab_size_; }
  std::optional<int32_t> SpecialId(std::string_view text) const;
  // Id of spec().eod, or nullopt when the encoding has no end-of-document token.
  std::optional<int32_t> eod_id() const { return SpecialId(spec_.eod); }
  const TokenizerSpec& spec() const { return spec_; }
  const std::string& source() const { return source_; }
  // Bytes of rank r (0 <= r < num_ranks()).
  std::string_view TokenBytes(int32_t rank) const {
    return std::string_view(arena_).substr(offsets_[rank], offsets_[rank + 1] - offsets_[rank]);
  }
  std::optional<int32_t> Rank(std::string_view bytes) const;

  // Splits `text` (valid UTF-8, not checked) with the pattern, calling `piece` for each match:
  // the pieces that encoding merges within.
  template <typename F>
  absl::Status Split(std::string_view text, F&& piece) const;

 private:
  struct Scratch;
  BpeTokenizer() = default;
  absl::Status SetRanks(const std::vector<std::string>& tokens, const std::string& source);
  absl::Status SetSpecials(const TokenizerSpec& spec, const std::string& source);
  absl::Status ForEachMatch(std::string_view text, void (*fn)(void*, std::string_view), void* arg) const;
  Scratch* ThreadScratch() const;
  void EncodePiece(std::string_view piece, std::vector<int32_t>* out, Scratch* cache) const;
  void MergeScan(std::string_view piece, std::vector<int32_t>* out) const;
  void MergeSlow(std::string_view piece, std::vector<int32_t>* out) const;
  absl::Status EncodeChecked(std::string_view text, std::vector<int32_t>* out) const;

  TokenizerSpec spec_;
  std::string source_;
  std::string arena_;              // bytes of all ranks, concatenated
  std::vector<uint32_t> offsets_;  // rank r is arena_[offsets_[r], offsets_[r+1])
  // Open-addressing table from token bytes to rank. A slot holds the token's first 8 bytes, its
  // length and a hash tag, so a lookup of a token of up to 8 bytes (most of them) touches one
  // cache line; lookups dominate encoding time, and a general hash map costs three misses.
  struct Slot {
    uint64_t prefix = 0;  // first min(8, length) bytes, zero-padded
    int32_t rank = -1;    // -1: empty
    uint16_t length = 0;
    uint16_t tag = 0;
  };
  std::vector<Slot> slots_;
  uint64_t slot_mask_ = 0;
  int32_t Lookup(const char* bytes, size_t size) const;
  bool Insert(std::string_view bytes, int32_t rank);
  std::vector<int32_t> pair_rank_;  // 65536 entries: rank of a two-byte token, or -1
  int32_t byte_rank_[256];
  absl::flat_hash_map<std::string, int32_t> special_ids_;
  absl::flat_hash_map<int32_t, std::string> special_text_;
  std::vector<size_t> special_lengths_;  // distinct lengths, longest first
  int32_t vocab_size_ = 0;
  std::unique_ptr<SplitPattern> pattern_;
  uint64_t serial_ = 0;  // identifies this tokenizer in per-thread piece caches
};

template <typename F>
absl::Status BpeTokenizer::Split(std::string_view text, F&& piece) const {
  using Fn = std::remove_reference_t<F>;
  return ForEachMatch(
      text, [](void* arg, std::string_view p) { (*static_cast<Fn*>(arg))(p); },
      const_cast<void*>(static_cast<const void*>(&piece)));
}

// Loads a tokenizer from a description:
//   "NAME:PATH"  a named encoding (cl100k_base, o200k_base, llama3) with its rank file;
//   "PATH"       a rank file; its pattern and specials come from a metadata file beside it
//                (PATH with .tiktoken/.model replaced by .json, or PATH.json, in the format of
//                tiktoken's {"pat_str", "special_tokens"}; tiktoken_files.h), else the cl100k
//                pattern with Llama 3's specials for a 128000-rank file and `<|endoftext|>` = N
//                otherwise.
// A bare NAME is an error that explains the rank file is data the user supplies.
absl::StatusOr<std::unique_ptr<BpeTokenizer>> LoadTokenizer(std::string_view description);
// Same with the name (or file) and the rank file given separately; `rank_file` may be empty.
absl::StatusOr<std::unique_ptr<BpeTokenizer>> LoadTokenizer(std::string_view name_or_file,
                                                            std::string_view rank_file);

}  // namespace tessera::data
