// Tests of data/preprocess: JSON lines with bad lines (counted, or failing with file:line),
// plain text and code files with path headers, output identical for any worker count and chunk
// size, shard limits, and removal of stale shards.
#include "data/preprocess.h"

#include <string>
#include <vector>

#include "data/indexed_dataset.h"
#include "tests/catch_compat.h"
#include "tests/data/data_test_util.h"

namespace tessera::data {
namespace {

using testing::ReadFile;
using testing::TempDir;
using testing::ToyTokenizer;
using testing::WriteFile;

std::vector<std::vector<int32_t>> ReadAll(const std::string& prefix) {
  auto ds = IndexedDataset::Open(prefix);
  CATCH_REQUIRE(ds.ok());
  std::vector<std::vector<int32_t>> docs;
  for (int64_t d = 0; d < (*ds)->num_documents(); ++d) {
    const int64_t a = (*ds)->sequence_start((*ds)->document_index(d));
    const int64_t b = (*ds)->sequence_start((*ds)->document_index(d + 1));
    docs.emplace_back(b - a);
    CATCH_REQUIRE((*ds)->ReadTokens(a, b - a, docs.back().data()).ok());
  }
  return docs;
}

CATCH_TEST_CASE("JSON lines: documents end with EOD, bad lines are counted and skipped") {
  TempDir dir;
  auto tok = ToyTokenizer();
  WriteFile(dir / "in/a.jsonl",
            "{\"text\": \"the thing\"}\n"
            "{\"text\": \"in\\ning\", \"id\": 1}\n"
            "not json\n"
            "{\"body\": \"no text field\"}\n"
            "{\"text\": 5}\n"
            "{\"text\": \"bad \xff utf8\"}\n"
            "\n"
            "{\"text\": \"\"}\n"
            "{\"text\": \"last line without newline\"}");
  PreprocessOptions options;
  options.inputs = {dir / "in"};
  options.output_prefix = dir / "out/corpus";
  options.workers = 2;
  auto summary = Preprocess(*tok, options);
  CATCH_REQUIRE(summary.ok());
  CATCH_CHECK(summary->documents == 3);
  CATCH_CHECK(summary->malformed_json == 1);
  CATCH_CHECK(summary->missing_field == 1);
  CATCH_CHECK(summary->not_a_string == 1);
  CATCH_CHECK(summary->invalid_utf8 == 1);
  CATCH_CHECK(summary->empty_documents == 2);
  CATCH_CHECK(summary->examples.size() == 4);
  CATCH_CHECK(summary->examples[0].find("a.jsonl:3: malformed JSON") != std::string::npos);
  CATCH_CHECK(summary->ToString().find("1 malformed JSON") != std::string::npos);
  const int32_t eod = *tok->eod_id();
  auto docs = ReadAll(dir / "out/corpus");
  CATCH_REQUIRE(docs.size() == 3);
  std::vector<int32_t> expected;
  CATCH_REQUIRE(tok->EncodeOrdinary("in\ning", &expected).ok());
  expected.push_back(eod);
  CATCH_CHECK(docs[1] == expected);
  for (const auto& d : docs) CATCH_CHECK(d.back() == eod);
  CATCH_CHECK(summary->tokens == static_cast<int64_t>(docs[0].size() + docs[1].size() + docs[2].size()));

  options.fail_on_bad_document = true;
  auto failed = Preprocess(*tok, options);
  CATCH_REQUIRE(!failed.ok());
  CATCH_CHECK(std::string(failed.status().message()).find("a.jsonl:3") != std::string::npos);
  // A failed run leaves no corpus behind, not even the previous one's partial output.
  CATCH_CHECK(!IndexedDataset::Open(dir / "out/corpus").ok());
}

CATCH_TEST_CASE("output is byte-identical for any worker count, chunk size and shard limit") {
  TempDir dir;
  auto tok = ToyTokenizer();
  std::string jsonl;
  for (int i = 0; i < 500; ++i) {
    jsonl += "{\"text\": \"the thing " + std::to_string(i) + " is in the ring\\n" + std::string(i % 37, 'x') +
             "\"}\n";
  }
  WriteFile(dir / "in/0.jsonl", jsonl);
  for (int i = 0; i < 30; ++i)
    WriteFile(dir / ("in/code/f" + std::to_string(i) + ".py"),
              "def f():\n    return " + std::to_string(i) + "\n");
  PreprocessOptions options;
  options.inputs = {dir / "in"};
  options.path_header = true;
  std::string reference_bin, reference_idx;
  for (int workers : {1, 3, 8}) {
    for (int64_t chunk : {int64_t{64}, int64_t{4 << 20}}) {
      options.workers = workers;
      options.chunk_bytes = chunk;
      options.output_prefix = dir / "out/w";
      auto summary = Preprocess(*tok, options);
      CATCH_REQUIRE(summary.ok());
      CATCH_CHECK(summary->documents == 530);
      const std::string bin = ReadFile(dir / "out/w.bin"), idx = ReadFile(dir / "out/w.idx");
      if (reference_bin.empty()) {
        reference_bin = bin;
        reference_idx = idx;
      }
      CATCH_CHECK(bin == reference_bin);
      CATCH_CHECK(idx == reference_idx);
    }
  }
  // The path header is the first line of each code document.
  auto docs = ReadAll(dir / "out/w");
  auto text = tok->Decode(docs.back());
  CATCH_CHECK(text->rfind(dir / "in/code/f9.py\ndef f():", 0) == 0);

  // Shards: same documents, split so that no .bin exceeds the limit.
  options.max_shard_bytes = 4096;
  options.output_prefix = dir / "out/s";
  auto sharded = Preprocess(*tok, options);
  CATCH_REQUIRE(sharded.ok());
  CATCH_CHECK(sharded->shards.size() > 2);
  std::vector<std::vector<int32_t>> joined;
  for (const std::string& shard : sharded->shards) {
    CATCH_CHECK(ReadFile(shard + ".bin").size() <= 4096);
    for (auto& d : ReadAll(shard)) joined.push_back(std::move(d));
  }
  CATCH_CHECK(joined == docs);
  // A later unsharded run to the same prefix removes the shards, so readers never mix runs.
  options.max_shard_bytes = 0;
  CATCH_REQUIRE(Preprocess(*tok, options).ok());
  CATCH_CHECK(ReadFile(dir / "out/s_00000.idx").empty());
  CATCH_CHECK(ReadAll(dir / "out/s") == docs);
}

CATCH_TEST_CASE("plain text: one file is one document, invalid UTF-8 names the file") {
  TempDir dir;
  auto tok = ToyTokenizer();
  WriteFile(dir / "t/a.txt", "the ring");
  WriteFile(dir / "t/b.txt", "");
  WriteFile(dir / "t/c.txt", "bad\xc3");
  PreprocessOptions options;
  options.inputs = {dir / "t/*.txt"};
  options.output_prefix = dir / "o";
  auto summary = Preprocess(*tok, options);
  CATCH_REQUIRE(summary.ok());
  CATCH_CHECK(summary->documents == 1);
  CATCH_CHECK(summary->empty_documents == 1);
  CATCH_CHECK(summary->invalid_utf8 == 1);
  CATCH_CHECK(summary->examples[0].find("c.txt: invalid UTF-8 at byte offset 3") != std::string::npos);
  CATCH_CHECK(
      !Preprocess(*tok, PreprocessOptions{.inputs = {dir / "missing*.txt"}, .output_prefix = dir / "x"})
           .ok());
}

}  // namespace
}  // namespace tessera::data
