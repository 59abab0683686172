// `tessera preprocess`: raw corpora (JSON lines, plain text files, source trees) -> tokenized
// shards in Megatron's indexed dataset format, each document followed by the tokenizer's
// end-of-document token. One reader thread cuts the input into chunks of documents, worker
// threads tokenize chunks, and one writer appends them in input order, so the output is
// byte-identical for any number of workers; at most a few chunks per worker are in memory.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/bpe_tokenizer.h"

namespace tessera::data {

enum class InputFormat {
  kAuto,   // .jsonl / .ndjson / .json files are JSON lines, everything else text
  kJsonl,  // one JSON object per line; the document is the string member `json_key`
  kText,   // one file = one document (plain text, source code)
};
absl::StatusOr<InputFormat> ParseInputFormat(std::string_view name);

struct PreprocessOptions {
  std::vector<std::string> inputs;  // files, directories or patterns (core/glob.h), read sorted
  std::string output_prefix;
  InputFormat format = InputFormat::kAuto;
  std::string json_key = "text";
  // Text files: start each document with its path and a newline (useful for code).
  bool path_header = false;
  // Special-token text in documents becomes the special id (default: ordinary text).
  bool allow_special = false;
  int workers = 0;              // tokenizing threads (0 = all cores)
  int64_t max_shard_bytes = 0;  // start a new shard before a .bin would exceed this (0 = one file)
  int64_t chunk_bytes = 4 << 20;
  // Bad documents (malformed JSON, missing or non-string field, invalid UTF-8) are counted and
  // skipped unless this is set, in which case the first one stops the run with its location.
  bool fail_on_bad_document = false;
  bool progress = false;  // a progress line on stderr
};

struct PreprocessSummary {
  int64_t files = 0;
  int64_t input_bytes = 0;
  int64_t documents = 0;  // written
  int64_t tokens = 0;     // written, end-of-document tokens included
  int64_t empty_documents = 0;
  int64_t malformed_json = 0;
  int64_t missing_field = 0;  // the JSON object has no `json_key` member
  int64_t not_a_string = 0;   // the member is not a string
  int64_t invalid_utf8 = 0;
  std::vector<std::string> examples;  // the first few problems, with file and line
  std::vector<std::string> shards;    // output prefixes
  std::string dtype;
  double seconds = 0;

  int64_t skipped() const { return malformed_json + missing_field + not_a_string + invalid_utf8; }
  std::string ToString() const;
};

absl::StatusOr<PreprocessSummary> Preprocess(const BpeTokenizer& tokenizer, const PreprocessOptions& options);

}  // namespace tessera::data
