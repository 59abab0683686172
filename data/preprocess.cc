// The preprocess pipeline: reader (this thread) -> work queue -> tokenizing workers -> results
// keyed by chunk number -> writer thread, which takes chunks strictly in order. The reader stops
// when `max_in_flight` chunks are read but not yet written, which bounds memory.
#include "data/preprocess.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/absl_string_view.h"
#include "core/file_util.h"
#include "core/glob.h"
#include "core/json.h"
#include "core/status_macros.h"
#include "core/utf8.h"
#include "data/indexed_dataset.h"

namespace tessera::data {
namespace {

constexpr size_t kMaxExamples = 10;

struct RawDocument {
  std::string text;  // a JSON line, or a whole file
  int32_t file;      // index into the file list
  int64_t line;      // 1-based line of a JSON line; 0 for a whole file
};

struct Chunk {
  int64_t seq = 0;
  bool jsonl = false;
  std::vector<RawDocument> docs;
};

enum class Problem { kNone, kEmpty, kMalformedJson, kMissingField, kNotString, kInvalidUtf8 };

struct ChunkResult {
  std::vector<int32_t> tokens;   // all documents' tokens, EOD included
  std::vector<int64_t> lengths;  // per written document
  int64_t input_bytes = 0;
  int64_t counts[6] = {};  // by Problem
  std::vector<std::string> examples;
  absl::Status fatal;  // first bad document when failing on them
};

bool IsJsonlName(const std::string& path) {
  return absl::EndsWith(path, ".jsonl") || absl::EndsWith(path, ".ndjson") || absl::EndsWith(path, ".json");
}

std::string Location(const std::vector<std::string>& files, const RawDocument& doc) {
  return doc.line > 0 ? absl::StrCat(files[doc.file], ":", doc.line) : files[doc.file];
}

void ProcessChunk(const BpeTokenizer& tokenizer, const PreprocessOptions& options,
                  const std::vector<std::string>& files, int32_t eod, const Chunk& chunk,
                  ChunkResult* result) {
  std::string field;
  for (const RawDocument& doc : chunk.docs) {
    result->input_bytes += static_cast<int64_t>(doc.text.size()) + (chunk.jsonl ? 1 : 0);
    std::string_view text = doc.text;
    Problem problem = Problem::kNone;
    std::string detail;
    std::string with_header;
    if (chunk.jsonl) {
      if (text.find_first_not_of(" \t\r") == std::string_view::npos) {
        problem = Problem::kEmpty;
      } else {
        auto found = ExtractJsonStringField(text, options.json_key, &field);
        if (!found.ok()) {
          const bool utf8 = absl::StartsWith(found.status().message(), "invalid UTF-8") ||
                            absl::StartsWith(found.status().message(), "truncated sequence");
          problem = utf8 ? Problem::kInvalidUtf8 : Problem::kMalformedJson;
          detail = std::string(found.status().message());
        } else if (*found == JsonField::kMissing) {
          problem = Problem::kMissingField;
          detail = absl::StrCat("no member \"", options.json_key, "\" (choose the field with --json-key)");
        } else if (*found == JsonField::kNotString) {
          problem = Problem::kNotString;
          detail = absl::StrCat("member \"", options.json_key, "\" is not a string");
        } else {
          text = field;
          if (text.empty()) problem = Problem::kEmpty;
        }
      }
    } else if (text.empty()) {
      problem = Problem::kEmpty;
    } else {
      const size_t bad = FindInvalidUtf8(text);
      if (bad != std::string_view::npos) {
        problem = Problem::kInvalidUtf8;
        detail = DescribeInvalidUtf8(text, bad);
      } else if (options.path_header) {
        with_header = absl::StrCat(files[doc.file], "\n", AbslView(text));
        text = with_header;
      }
    }
    if (problem == Problem::kNone) {
      const size_t before = result->tokens.size();
      absl::Status s = options.allow_special ? tokenizer.EncodeWithSpecials(text, &result->tokens)
                                             : tokenizer.EncodeOrdinary(text, &result->tokens);
      if (!s.ok()) {
        result->tokens.resize(before);
        problem = Problem::kInvalidUtf8;  // the only input-dependent failure of encoding
        detail = std::string(s.message());
      } else {
        result->tokens.push_back(eod);
        result->lengths.push_back(static_cast<int64_t>(result->tokens.size() - before));
        continue;
      }
    }
    ++result->counts[static_cast<int>(problem)];
    if (problem == Problem::kEmpty) continue;
    std::string message = absl::StrCat(Location(files, doc), ": ", detail);
    if (options.fail_on_bad_document) {
      result->fatal = absl::InvalidArgumentError(
          absl::StrCat(message, " (use --on-error skip to skip and count such documents)"));
      return;
    }
    if (result->examples.size() < kMaxExamples) result->examples.push_back(std::move(message));
  }
}

std::string HumanCount(double v) {
  if (v >= 1e9) return absl::StrFormat("%.2fG", v / 1e9);
  if (v >= 1e6) return absl::StrFormat("%.2fM", v / 1e6);
  if (v >= 1e3) return absl::StrFormat("%.1fk", v / 1e3);
  return absl::StrFormat("%.0f", v);
}

// Removes shards of an earlier run that this run did not overwrite, so that a reader of the
// prefix never mixes runs.
void RemoveStaleShards(const std::string& prefix, bool sharded, size_t shard_count) {
  auto remove_pair = [](const std::string& p) {
    ::unlink((p + ".idx").c_str());
    ::unlink((p + ".bin").c_str());
  };
  if (sharded) remove_pair(prefix);
  for (size_t i = sharded ? shard_count : 0;; ++i) {
    const std::string shard = absl::StrFormat("%s_%05d", prefix, i);
    if (!PathExists(shard + ".idx") && !PathExists(shard + ".bin")) break;
    remove_pair(shard);
  }
}

}  // namespace

absl::StatusOr<InputFormat> ParseInputFormat(std::string_view name) {
  if (name == "auto") return InputFormat::kAuto;
  if (name == "jsonl" || name == "json") return InputFormat::kJsonl;
  if (name == "text" || name == "code") return InputFormat::kText;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown input format '", AbslView(name), "' (auto, jsonl, text)"));
}

std::string PreprocessSummary::ToString() const {
  std::string out = absl::StrFormat(
      "[preprocess] %d files, %.1f MB in %.2f s (%.1f MB/s, %s tokens/s)\n"
      "[preprocess] wrote %d documents, %d tokens (%s) into %d shard%s: %s%s\n",
      files, input_bytes / 1e6, seconds, seconds > 0 ? input_bytes / 1e6 / seconds : 0.0,
      HumanCount(seconds > 0 ? tokens / seconds : 0), documents, tokens, dtype, shards.size(),
      shards.size() == 1 ? "" : "s", shards.empty() ? "" : shards.front(),
      shards.size() > 1 ? absl::StrCat(" ... ", shards.back()) : "");
  absl::StrAppendFormat(
      &out,
      "[preprocess] skipped: %d empty, %d malformed JSON, %d missing field, %d not a string, "
      "%d invalid UTF-8\n",
      empty_documents, malformed_json, missing_field, not_a_string, invalid_utf8);
  for (const std::string& e : examples) absl::StrAppend(&out, "[preprocess]   ", e, "\n");
  if (skipped() > static_cast<int64_t>(examples.size())) {
    absl::StrAppend(&out, "[preprocess]   (", skipped() - static_cast<int64_t>(examples.size()),
                    " more not shown)\n");
  }
  return out;
}

absl::StatusOr<PreprocessSummary> Preprocess(const BpeTokenizer& tokenizer,
                                             const PreprocessOptions& options) {
  const auto start_time = std::chrono::steady_clock::now();
  const std::optional<int32_t> eod = tokenizer.eod_id();
  if (!eod) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer ", tokenizer.source(), " has no end-of-document token (its metadata names no \"eod\")"));
  }
  if (options.output_prefix.empty()) return absl::InvalidArgumentError("no output prefix");
  TS_ASSIGN_OR_RETURN(std::vector<std::string> files, ExpandFilePatterns(options.inputs));
  int64_t total_input = 0;
  for (const std::string& f : files) {
    std::error_code ec;
    total_input += static_cast<int64_t>(std::filesystem::file_size(f, ec));
  }
  const std::filesystem::path parent = std::filesystem::path(options.output_prefix).parent_path();
  if (!parent.empty()) TS_RETURN_IF_ERROR(MakeDirs(parent.string()));

  const int workers = options.workers > 0
                          ? options.workers
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t max_in_flight = 2 * workers + 2;
  const TokenDType dtype = TokenDTypeForVocab(tokenizer.vocab_size());
  const bool sharded = options.max_shard_bytes > 0;

  PreprocessSummary summary;
  summary.files = static_cast<int64_t>(files.size());
  summary.dtype = TokenDTypeName(static_cast<uint8_t>(dtype));

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Chunk> queue;
  std::map<int64_t, ChunkResult> done;
  int64_t next_to_write = 0, chunks_read = 0;
  bool reading_done = false, stop = false;
  absl::Status failure;
  auto fail = [&](absl::Status s) {  // requires mu
    if (failure.ok()) failure = std::move(s);
    stop = true;
    cv.notify_all();
  };

  std::vector<std::thread> pool;
  for (int w = 0; w < workers; ++w) {
    pool.emplace_back([&] {
      while (true) {
        Chunk chunk;
        {
          std::unique_lock<std::mutex> lock(mu);
          cv.wait(lock, [&] { return stop || !queue.empty() || reading_done; });
          if (stop || (queue.empty() && reading_done)) return;
          chunk = std::move(queue.front());
          queue.pop_front();
        }
        ChunkResult result;
        ProcessChunk(tokenizer, options, files, *eod, chunk, &result);
        std::lock_guard<std::mutex> lock(mu);
        done.emplace(chunk.seq, std::move(result));
        cv.notify_all();
      }
    });
  }

  // Progress counters, written by the writer thread.
  std::atomic<int64_t> written_bytes{0}, written_tokens{0}, written_docs{0};
  std::thread writer([&] {
    std::unique_ptr<IndexedDatasetWriter> out;
    auto open_shard = [&]() -> absl::Status {
      const std::string prefix =
          sharded ? absl::StrFormat("%s_%05d", options.output_prefix, summary.shards.size())
                  : options.output_prefix;
      TS_ASSIGN_OR_RETURN(out, IndexedDatasetWriter::Create(prefix, dtype));
      summary.shards.push_back(prefix);
      return absl::OkStatus();
    };
    auto run = [&]() -> absl::Status {
      TS_RETURN_IF_ERROR(open_shard());
      const int64_t item = static_cast<int64_t>(TokenDTypeSize(static_cast<uint8_t>(dtype)));
      while (true) {
        ChunkResult result;
        {
          std::unique_lock<std::mutex> lock(mu);
          cv.wait(lock, [&] {
            return stop || done.contains(next_to_write) || (reading_done && next_to_write == chunks_read);
          });
          if (stop) return absl::OkStatus();
          if (!done.contains(next_to_write)) break;  // everything written
          result = std::move(done[next_to_write]);
          done.erase(next_to_write);
          ++next_to_write;
          cv.notify_all();
        }
        TS_RETURN_IF_ERROR(result.fatal);
        int64_t offset = 0;
        for (int64_t len : result.lengths) {
          if (sharded && out->documents() > 0 && out->bin_bytes() + len * item > options.max_shard_bytes) {
            TS_RETURN_IF_ERROR(out->Finish());
            TS_RETURN_IF_ERROR(open_shard());
          }
          TS_RETURN_IF_ERROR(out->AddDocument(absl::MakeConstSpan(result.tokens.data() + offset, len)));
          offset += len;
        }
        summary.documents += static_cast<int64_t>(result.lengths.size());
        summary.tokens += offset;
        summary.input_bytes += result.input_bytes;
        summary.empty_documents += result.counts[static_cast<int>(Problem::kEmpty)];
        summary.malformed_json += result.counts[static_cast<int>(Problem::kMalformedJson)];
        summary.missing_field += result.counts[static_cast<int>(Problem::kMissingField)];
        summary.not_a_string += result.counts[static_cast<int>(Problem::kNotString)];
        summary.invalid_utf8 += result.counts[static_cast<int>(Problem::kInvalidUtf8)];
        for (std::string& e : result.examples) {
          if (summary.examples.size() < kMaxExamples) summary.examples.push_back(std::move(e));
        }
        written_bytes = summary.input_bytes;
        written_tokens = summary.tokens;
        written_docs = summary.documents;
      }
      return out->Finish();
    };
    absl::Status s = run();
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      fail(std::move(s));
    }
  });

  std::atomic<bool> progress_done{false};
  std::thread progress;
  if (options.progress) {
    progress = std::thread([&] {
      while (!progress_done) {
        for (int i = 0; i < 5 && !progress_done; ++i)
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
        const double b = written_bytes.load();
        const double frac = total_input > 0 ? std::min(1.0, b / total_input) : 0;
        const int width = 30, filled = static_cast<int>(frac * width);
        std::fprintf(stderr, "\r[preprocess] [%s%s] %5.1f%% %.1f/%.1f MB %.1f MB/s %s tok/s %s docs ",
                     std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(), 100 * frac,
                     b / 1e6, total_input / 1e6, t > 0 ? b / 1e6 / t : 0.0,
                     HumanCount(t > 0 ? written_tokens / t : 0).c_str(),
                     HumanCount(written_docs.load()).c_str());
        std::fflush(stderr);
      }
      std::fputc('\n', stderr);
    });
  }

  // The reader: cut the input into chunks of about chunk_bytes, in file order.
  auto submit = [&](Chunk* chunk) -> bool {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return stop || chunks_read - next_to_write < max_in_flight; });
    if (stop) return false;
    chunk->seq = chunks_read++;
    queue.push_back(std::move(*chunk));
    *chunk = Chunk();
    cv.notify_all();
    return true;
  };
  auto read_all = [&]() -> absl::Status {
    Chunk chunk;
    int64_t chunk_bytes = 0;
    auto flush = [&](bool jsonl) -> bool {
      if (!chunk.docs.empty() && (chunk.jsonl != jsonl || chunk_bytes >= options.chunk_bytes)) {
        if (!submit(&chunk)) return false;
        chunk_bytes = 0;
      }
      chunk.jsonl = jsonl;
      return true;
    };
    std::vector<char> buffer(1 << 20);
    for (size_t f = 0; f < files.size(); ++f) {
      const bool jsonl = options.format == InputFormat::kJsonl ||
                         (options.format == InputFormat::kAuto && IsJsonlName(files[f]));
      if (!jsonl) {
        if (!flush(false)) return absl::OkStatus();
        TS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(files[f]));
        chunk_bytes += static_cast<int64_t>(text.size());
        chunk.docs.push_back({std::move(text), static_cast<int32_t>(f), 0});
        continue;
      }
      std::FILE* in = std::fopen(files[f].c_str(), "rb");
      if (!in)
        return absl::NotFoundError(absl::StrCat("cannot open '", files[f], "': ", std::strerror(errno)));
      std::string partial;
      int64_t line = 0;
      size_t n;
      bool ok = true;
      while (ok && (n = std::fread(buffer.data(), 1, buffer.size(), in)) > 0) {
        size_t pos = 0;
        while (pos < n) {
          const char* nl = static_cast<const char*>(std::memchr(buffer.data() + pos, '\n', n - pos));
          const size_t end = nl ? static_cast<size_t>(nl - buffer.data()) : n;
          partial.append(buffer.data() + pos, end - pos);
          pos = end + 1;
          if (!nl) break;
          ++line;
          if (!flush(true)) {
            ok = false;
            break;
          }
          chunk_bytes += static_cast<int64_t>(partial.size()) + 1;
          chunk.docs.push_back({std::move(partial), static_cast<int32_t>(f), line});
          partial = std::string();
        }
      }
      const bool read_error = std::ferror(in);
      std::fclose(in);
      if (!ok) return absl::OkStatus();
      if (read_error) return absl::DataLossError(absl::StrCat("error reading '", files[f], "'"));
      if (!partial.empty()) {  // a last line without '\n'
        ++line;
        if (!flush(true)) return absl::OkStatus();
        chunk_bytes += static_cast<int64_t>(partial.size());
        chunk.docs.push_back({std::move(partial), static_cast<int32_t>(f), line});
      }
    }
    if (!chunk.docs.empty()) submit(&chunk);
    return absl::OkStatus();
  };
  absl::Status read_status = read_all();
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!read_status.ok()) fail(read_status);
    reading_done = true;
    cv.notify_all();
  }
  writer.join();
  {
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
    cv.notify_all();
  }
  for (auto& t : pool) t.join();
  progress_done = true;
  if (progress.joinable()) progress.join();
  if (!failure.ok()) {
    // Shards finished before the failure would look like a complete corpus: remove them.
    for (const std::string& shard : summary.shards) {
      ::unlink((shard + ".idx").c_str());
      ::unlink((shard + ".bin").c_str());
    }
    return failure;
  }
  RemoveStaleShards(options.output_prefix, sharded, summary.shards.size());
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  return summary;
}

}  // namespace tessera::data
