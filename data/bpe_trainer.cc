// BPE training with incremental pair counts. Pieces (pattern matches) are counted once; each
// distinct piece is a "word" with a multiplicity. A merge rewrites only the words that contain
// the merged pair (found through a pair -> words index) and adjusts pair counts by subtracting
// the word's old pairs and adding its new ones. The best pair comes from a max-heap whose stale
// entries are re-checked against the live counts when popped.
#include "data/bpe_trainer.h"

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <queue>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "core/utf8.h"
#include "data/split_pattern.h"
#include "data/tiktoken_files.h"

namespace tessera::data {
namespace {

using Pair = uint64_t;
Pair MakePair(int32_t a, int32_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }
int32_t Left(Pair p) { return static_cast<int32_t>(p >> 32); }
int32_t Right(Pair p) { return static_cast<int32_t>(p & 0xFFFFFFFFu); }

absl::StatusOr<std::unique_ptr<SplitPattern>> Splitter(const std::string& pattern, std::string* resolved) {
  if (pattern == "cl100k_base" || pattern == "llama3") {
    *resolved = kCl100kPattern;
  } else if (pattern == "o200k_base") {
    *resolved = kO200kPattern;
  } else {
    *resolved = pattern;
  }
  return SplitPattern::Compile(*resolved, "the training pattern");
}

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

struct HeapEntry {
  int64_t count;
  Pair pair;
  bool operator<(const HeapEntry& o) const {
    if (count != o.count) return count < o.count;
    return pair > o.pair;  // equal counts: lowest (left, right) ranks first
  }
};

// Distinct pieces as words of byte symbols, in byte order so that every index below is
// independent of hash-map iteration order.
std::vector<Word> WordsInByteOrder(absl::flat_hash_map<std::string, int64_t> piece_counts) {
  std::vector<std::pair<std::string, int64_t>> sorted(piece_counts.begin(), piece_counts.end());
  piece_counts.clear();
  std::sort(sorted.begin(), sorted.end());
  std::vector<Word> words;
  words.reserve(sorted.size());
  for (auto& [piece, count] : sorted) {
    Word w;
    w.count = count;
    for (unsigned char c : piece) w.symbols.push_back(c);
    words.push_back(std::move(w));
  }
  return words;
}

// Live pair counts, the words each pair occurs in (each word once, in word order), and a
// max-heap of counts whose stale entries are re-checked against the live counts when popped.
struct PairIndex {
  absl::flat_hash_map<Pair, int64_t> count;
  absl::flat_hash_map<Pair, std::vector<int32_t>> words;
  std::priority_queue<HeapEntry> heap;
};

PairIndex IndexPairs(const std::vector<Word>& words) {
  PairIndex index;
  for (size_t w = 0; w < words.size(); ++w) {
    const auto& s = words[w].symbols;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const Pair p = MakePair(s[i], s[i + 1]);
      index.count[p] += words[w].count;
      auto& list = index.words[p];
      if (list.empty() || list.back() != static_cast<int32_t>(w)) list.push_back(static_cast<int32_t>(w));
    }
  }
  for (const auto& [p, c] : index.count) index.heap.push({c, p});
  return index;
}

// Pops the most frequent live pair into *best; false when no pair is left.
bool PopBestPair(PairIndex& index, Pair* best) {
  while (!index.heap.empty()) {
    const HeapEntry top = index.heap.top();
    index.heap.pop();
    auto live = index.count.find(top.pair);
    const int64_t current = live == index.count.end() ? 0 : live->second;
    if (current != top.count) {
      if (current > 0) index.heap.push({current, top.pair});
      continue;
    }
    if (current <= 0) continue;
    *best = top.pair;
    return true;
  }
  return false;
}

// Replaces each occurrence of `pair` by `target` in the words that hold it (`stamp` marks the
// words done in merge number `merge_no`), indexes the new pairs with `target`, and returns how
// each pair's count changes.
absl::flat_hash_map<Pair, int64_t> MergeInWords(Pair pair, int32_t target, uint32_t merge_no,
                                                std::vector<Word>& words, std::vector<uint32_t>& stamp,
                                                PairIndex& index) {
  const int32_t a = Left(pair), b = Right(pair);
  std::vector<int32_t> affected = std::move(index.words[pair]);
  index.words.erase(pair);
  absl::flat_hash_map<Pair, int64_t> delta;
  for (int32_t w : affected) {
    if (stamp[w] == merge_no) continue;
    stamp[w] = merge_no;
    Word& word = words[w];
    auto& s = word.symbols;
    bool has = false;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      if (s[i] == a && s[i + 1] == b) {
        has = true;
        break;
      }
    }
    if (!has) continue;
    for (size_t i = 0; i + 1 < s.size(); ++i) delta[MakePair(s[i], s[i + 1])] -= word.count;
    std::vector<int32_t> next;
    next.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
        next.push_back(target);
        i += 2;
      } else {
        next.push_back(s[i]);
        ++i;
      }
    }
    s = std::move(next);
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const Pair p = MakePair(s[i], s[i + 1]);
      delta[p] += word.count;
      if (s[i] == target || s[i + 1] == target) {
        auto& list = index.words[p];
        if (list.empty() || list.back() != w) list.push_back(w);
      }
    }
  }
  return delta;
}

// Applies the changes in pair order so that heap contents do not depend on hash order.
void ApplyCountChanges(const absl::flat_hash_map<Pair, int64_t>& delta, PairIndex& index) {
  std::vector<std::pair<Pair, int64_t>> changes(delta.begin(), delta.end());
  std::sort(changes.begin(), changes.end());
  for (const auto& [p, d] : changes) {
    if (d == 0) continue;
    int64_t& c = index.count[p];
    c += d;
    if (c <= 0) {
      index.count.erase(p);
    } else if (d > 0) {
      index.heap.push({c, p});
    }
  }
}

absl::StatusOr<BpeTrainResult> TrainFromPieceCounts(absl::flat_hash_map<std::string, int64_t> piece_counts,
                                                    const BpeTrainerOptions& options, std::string pattern,
                                                    int64_t bytes) {
  BpeTrainResult result;
  result.bytes = bytes;
  result.unique_pieces = static_cast<int64_t>(piece_counts.size());
  std::vector<Word> words = WordsInByteOrder(std::move(piece_counts));
  result.tokens.resize(256);
  for (int b = 0; b < 256; ++b) result.tokens[b] = std::string(1, static_cast<char>(b));
  absl::flat_hash_map<std::string, int32_t> rank_of;
  for (int b = 0; b < 256; ++b) rank_of[result.tokens[b]] = b;

  PairIndex index = IndexPairs(words);
  std::vector<uint32_t> stamp(words.size(), 0);
  uint32_t merge_no = 0;
  Pair best;
  while (static_cast<int64_t>(result.tokens.size()) < options.vocab_size && PopBestPair(index, &best)) {
    const std::string merged = result.tokens[Left(best)] + result.tokens[Right(best)];
    int32_t target;
    if (auto it = rank_of.find(merged); it != rank_of.end()) {
      target = it->second;  // the same bytes were already made from another split
    } else {
      target = static_cast<int32_t>(result.tokens.size());
      result.tokens.push_back(merged);
      rank_of.emplace(merged, target);
    }
    ++merge_no;
    ApplyCountChanges(MergeInWords(best, target, merge_no, words, stamp, index), index);
  }
  const int32_t n = static_cast<int32_t>(result.tokens.size());
  result.spec.name = "trained";
  result.spec.pattern = std::move(pattern);
  result.spec.specials = {{"<|endoftext|>", n}};
  result.spec.eod = "<|endoftext|>";
  return result;
}

int ThreadCount(int requested) {
  return requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace

absl::StatusOr<BpeTrainResult> TrainBpe(const std::vector<std::string>& documents,
                                        const BpeTrainerOptions& options) {
  if (options.vocab_size < 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab size ", options.vocab_size, " is below 256 (the single bytes come first)"));
  }
  std::string pattern;
  TS_ASSIGN_OR_RETURN(auto splitter, Splitter(options.pattern, &pattern));
  absl::flat_hash_map<std::string, int64_t> counts;
  int64_t bytes = 0;
  for (size_t d = 0; d < documents.size(); ++d) {
    const std::string& doc = documents[d];
    const size_t bad = FindInvalidUtf8(doc);
    if (bad != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("document ", d, ": ", DescribeInvalidUtf8(doc, bad)));
    }
    TS_RETURN_IF_ERROR(splitter->ForEach(doc, [&](std::string_view piece) { ++counts[std::string(piece)]; }));
    bytes += static_cast<int64_t>(doc.size());
  }
  return TrainFromPieceCounts(std::move(counts), options, std::move(pattern), bytes);
}

absl::StatusOr<BpeTrainResult> TrainBpeFromFiles(const std::vector<std::string>& files,
                                                 const BpeTrainerOptions& options) {
  if (options.vocab_size < 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab size ", options.vocab_size, " is below 256 (the single bytes come first)"));
  }
  std::string pattern;
  TS_ASSIGN_OR_RETURN(auto splitter, Splitter(options.pattern, &pattern));
  // Which files are read is decided up front (in order, until max_bytes), so the result does
  // not depend on the thread count.
  std::vector<std::string> chosen;
  int64_t planned = 0;
  for (const std::string& f : files) {
    if (options.max_bytes > 0 && planned >= options.max_bytes) break;
    std::error_code ec;
    const auto size = std::filesystem::file_size(f, ec);
    if (ec) return absl::NotFoundError(absl::StrCat("cannot read '", f, "': ", ec.message()));
    planned += static_cast<int64_t>(size);
    chosen.push_back(f);
  }
  const int n_threads = std::min<int>(ThreadCount(options.threads), std::max<size_t>(1, chosen.size()));
  std::vector<absl::flat_hash_map<std::string, int64_t>> local(n_threads);
  std::vector<absl::Status> status(n_threads);
  std::vector<int64_t> bytes(n_threads, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < n_threads; ++t) {
    pool.emplace_back([&, t] {
      for (size_t i = t; i < chosen.size() && status[t].ok(); i += n_threads) {
        auto text = ReadFileToString(chosen[i]);
        if (!text.ok()) {
          status[t] = text.status();
          break;
        }
        const size_t bad = FindInvalidUtf8(*text);
        if (bad != std::string::npos) {
          status[t] =
              absl::InvalidArgumentError(absl::StrCat(chosen[i], ": ", DescribeInvalidUtf8(*text, bad)));
          break;
        }
        status[t] = splitter->ForEach(*text, [&](std::string_view piece) { ++local[t][std::string(piece)]; });
        bytes[t] += static_cast<int64_t>(text->size());
      }
    });
  }
  for (auto& th : pool) th.join();
  for (const auto& s : status) TS_RETURN_IF_ERROR(s);
  absl::flat_hash_map<std::string, int64_t> counts = std::move(local[0]);
  int64_t total = bytes[0];
  for (int t = 1; t < n_threads; ++t) {
    for (auto& [piece, c] : local[t]) counts[piece] += c;
    total += bytes[t];
  }
  if (total == 0) return absl::InvalidArgumentError("the training corpus is empty");
  return TrainFromPieceCounts(std::move(counts), options, std::move(pattern), total);
}

absl::Status WriteTrainedTokenizer(const std::string& path, const BpeTrainResult& result) {
  std::filesystem::path p(path);
  if (p.extension() == ".json") {
    return absl::InvalidArgumentError(absl::StrCat("'", path,
                                                   "': a rank file named .json would be overwritten by its ",
                                                   "metadata; use e.g. .tiktoken"));
  }
  TS_RETURN_IF_ERROR(WriteTiktokenRanks(path, result.tokens));
  TokenizerSpec spec = result.spec;
  spec.name = p.stem().string();
  return WriteFileAtomic(TokenizerMetadataPath(path),
                         TokenizerMetadataJson(spec, static_cast<int64_t>(result.tokens.size())));
}

}  // namespace tessera::data
