// Megatron-LM's indexed dataset (PREFIX.idx + PREFIX.bin, byte layout in FORMATS.md), the format
// Megatron-LM and GPT-NeoX preprocess tools write. The reader maps both files and checks every
// header field and every size and offset against the files' lengths before handing out a single
// token, so a truncated or inconsistent pair is an error naming the file and byte offset rather
// than a wrong sample. The writer streams (bounded memory) and publishes atomically.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tessera::data {

// Megatron's dtype codes.
enum class TokenDType : uint8_t {
  kUint8 = 1,
  kInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kFloat64 = 6,
  kFloat32 = 7,
  kUint16 = 8,
};
// Bytes per element of a known dtype code, or 0 for an unknown one.
size_t TokenDTypeSize(uint8_t code);
const char* TokenDTypeName(uint8_t code);
// Megatron's choice: uint16 when the vocabulary has fewer than 65500 ids, else int32.
TokenDType TokenDTypeForVocab(int64_t vocab_size);

inline constexpr char kIndexMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
inline constexpr int64_t kIndexHeaderBytes = 34;

// A read-only, memory-mapped view of one .idx/.bin pair.
class IndexedDataset {
 public:
  // Opens PREFIX.idx and PREFIX.bin. Float dtypes are rejected (these are token files).
  static absl::StatusOr<std::unique_ptr<IndexedDataset>> Open(const std::string& prefix);
  ~IndexedDataset();
  IndexedDataset(const IndexedDataset&) = delete;
  IndexedDataset& operator=(const IndexedDataset&) = delete;

  const std::string& prefix() const { return prefix_; }
  TokenDType dtype() const { return dtype_; }
  int64_t num_sequences() const { return num_sequences_; }
  // Documents (the .idx's document count D minus one).
  int64_t num_documents() const { return num_doc_entries_ - 1; }
  int64_t total_tokens() const { return total_tokens_; }
  int64_t sequence_length(int64_t i) const;
  // Document d is sequences [document_index(d), document_index(d + 1)), 0 <= d <= num_documents().
  int64_t document_index(int64_t d) const;
  // Token position in the .bin (in elements) where sequence i starts.
  int64_t sequence_start(int64_t i) const;
  // Reads `count` tokens starting at element `start` of the .bin into out. Values outside int32
  // (possible only for int64 files) are an error naming the element.
  absl::Status ReadTokens(int64_t start, int64_t count, int32_t* out) const;

 private:
  IndexedDataset() = default;
  std::string prefix_;
  TokenDType dtype_ = TokenDType::kUint16;
  size_t item_size_ = 2;
  int64_t num_sequences_ = 0;
  int64_t num_doc_entries_ = 0;
  int64_t total_tokens_ = 0;
  const unsigned char* idx_ = nullptr;
  size_t idx_size_ = 0;
  const unsigned char* bin_ = nullptr;
  size_t bin_size_ = 0;
};

// Writes one .idx/.bin pair, one sequence per document. Files appear under their final names
// only after Finish(); until then they are PREFIX.{bin,idx}.tmp.<pid>.
class IndexedDatasetWriter {
 public:
  static absl::StatusOr<std::unique_ptr<IndexedDatasetWriter>> Create(const std::string& prefix,
                                                                      TokenDType dtype);
  ~IndexedDatasetWriter();  // removes the temporary files unless Finish() succeeded

  // Appends one document. Every token must fit the dtype.
  absl::Status AddDocument(absl::Span<const int32_t> tokens);
  absl::Status Finish();

  int64_t documents() const { return documents_; }
  int64_t tokens() const { return tokens_; }
  int64_t bin_bytes() const { return tokens_ * static_cast<int64_t>(item_size_); }
  const std::string& prefix() const { return prefix_; }

 private:
  IndexedDatasetWriter() = default;
  std::string prefix_, bin_tmp_, sizes_tmp_;
  TokenDType dtype_ = TokenDType::kUint16;
  size_t item_size_ = 2;
  std::FILE* bin_ = nullptr;
  std::FILE* sizes_ = nullptr;  // int32 lengths, streamed to disk so memory stays bounded
  int64_t documents_ = 0;
  int64_t tokens_ = 0;
  std::vector<char> buffer_;
  bool finished_ = false;
};

// Encodes documents as a complete .bin and .idx in memory (tests and small tools).
void EncodeIndexedDataset(const std::vector<std::vector<int32_t>>& documents, TokenDType dtype,
                          std::string* bin, std::string* idx);

// The prefixes of a corpus: PREFIX itself when PREFIX.idx exists, else the shards that
// preprocess writes with a size limit, PREFIX_00000, PREFIX_00001, ... (consecutive).
absl::StatusOr<std::vector<std::string>> FindShardPrefixes(const std::string& prefix);

}  // namespace tessera::data
