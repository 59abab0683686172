// Helpers shared by the data-layer tests: a scratch directory removed at the end of the test,
// file writing, and a small byte-level BPE tokenizer built in memory.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "data/bpe_tokenizer.h"

namespace tessera::data::testing {

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("tessera_data_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline void WriteFile(const std::string& path, const std::string& contents) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out << contents;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The 256 single bytes plus `merges` (each the concatenation of earlier tokens), the cl100k
// pattern, and <|endoftext|> right after the ranks.
inline std::unique_ptr<BpeTokenizer> ToyTokenizer(const std::vector<std::string>& merges = {
                                                      "th", "he", "the", " t", "in", "ing", " the"}) {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(std::string(1, static_cast<char>(b)));
  for (const std::string& m : merges) tokens.push_back(m);
  TokenizerSpec spec;
  spec.name = "toy";
  spec.pattern = kCl100kPattern;
  spec.specials = {{"<|endoftext|>", static_cast<int32_t>(tokens.size())}};
  spec.eod = "<|endoftext|>";
  auto t = BpeTokenizer::Create(std::move(tokens), std::move(spec), "toy");
  return t.ok() ? *std::move(t) : nullptr;
}

// ../shared/vocab beside the source tree, or "" when this checkout has none.
// The real cl100k_base / o200k_base rank files and their metadata, kept in the repository
// (tests/data/vocab, checksums in SHA256SUMS there).
inline std::string VocabDir() { return std::string(TESSERA_SOURCE_DIR) + "/tests/data/vocab"; }

}  // namespace tessera::data::testing
