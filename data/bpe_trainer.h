// Learns a byte-level BPE vocabulary from a corpus, deterministically, and writes it as a
// tiktoken-format rank file plus a metadata file (pattern and specials) that LoadTokenizer reads.
// Ranks 0-255 are the single bytes in byte order; each later rank is the most frequent adjacent
// pair of the corpus's pattern pieces at that point (ties: the pair of lowest ranks).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/encodings.h"

namespace tessera::data {

struct BpeTrainerOptions {
  int64_t vocab_size = 4096;            // ranks, including the 256 single bytes
  std::string pattern = "cl100k_base";  // cl100k_base, o200k_base, or a regex
  int64_t max_bytes = 0;                // read at most this much text (0 = all)
  int threads = 0;                      // piece counting threads (0 = all cores)
};

struct BpeTrainResult {
  std::vector<std::string> tokens;  // bytes of each rank
  TokenizerSpec spec;               // pattern and specials (<|endoftext|> = number of ranks)
  int64_t bytes = 0;                // text bytes read
  int64_t unique_pieces = 0;
};

// Trains on in-memory documents (each must be valid UTF-8).
absl::StatusOr<BpeTrainResult> TrainBpe(const std::vector<std::string>& documents,
                                        const BpeTrainerOptions& options);
// Trains on files, one document each, read in the given order; invalid UTF-8 is an error naming
// the file and offset.
absl::StatusOr<BpeTrainResult> TrainBpeFromFiles(const std::vector<std::string>& files,
                                                 const BpeTrainerOptions& options);
// Writes PATH (ranks) and its metadata file (PATH with its extension replaced by .json, or
// PATH.json when it has none).
absl::Status WriteTrainedTokenizer(const std::string& path, const BpeTrainResult& result);

}  // namespace tessera::data
