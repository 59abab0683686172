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

// One run of Preprocess: the state that the reader (the calling thread), the workers, the writer
// and the progress line share, and each one's loop. Everything under mu_ unless said otherwise.
class Pipeline {
 public:
  Pipeline(const BpeTokenizer& tokenizer, const PreprocessOptions& options, std::vector<std::string> files,
           int32_t eod, int64_t total_input, std::chrono::steady_clock::time_point start_time)
      : tokenizer_(tokenizer),
        options_(options),
        files_(std::move(files)),
        eod_(eod),
        total_input_(total_input),
        start_time_(start_time),
        workers_(options.workers > 0 ? options.workers
                                     : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))),
        max_in_flight_(2 * workers_ + 2),
        dtype_(TokenDTypeForVocab(tokenizer.vocab_size())),
        sharded_(options.max_shard_bytes > 0) {
    summary_.files = static_cast<int64_t>(files_.size());
    summary_.dtype = TokenDTypeName(static_cast<uint8_t>(dtype_));
  }

  absl::StatusOr<PreprocessSummary> Run();

 private:
  enum class Next { kResult, kAllWritten, kStopped };

  void Fail(absl::Status s);  // requires mu_
  void WorkerLoop();
  void WriterLoop();
  absl::Status WriteAll();
  Next TakeNextResult(ChunkResult* result);
  absl::Status WriteResult(ChunkResult& result, std::unique_ptr<IndexedDatasetWriter>& out);
  absl::Status OpenShard(std::unique_ptr<IndexedDatasetWriter>& out);
  void AddToSummary(ChunkResult& result, int64_t tokens);
  void ProgressLoop();
  absl::Status ReadAll();
  absl::StatusOr<bool> ReadJsonLines(size_t f, std::vector<char>& buffer);
  bool Flush(bool jsonl);
  bool Submit(Chunk* chunk);

  const BpeTokenizer& tokenizer_;
  const PreprocessOptions& options_;
  const std::vector<std::string> files_;
  const int32_t eod_;
  const int64_t total_input_;
  const std::chrono::steady_clock::time_point start_time_;
  const int workers_;
  const int64_t max_in_flight_;
  const TokenDType dtype_;
  const bool sharded_;

  PreprocessSummary summary_;  // the writer's until it is joined
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Chunk> queue_;
  std::map<int64_t, ChunkResult> done_;
  int64_t next_to_write_ = 0, chunks_read_ = 0;
  bool reading_done_ = false, stop_ = false;
  absl::Status failure_;
  // Progress counters, written by the writer thread.
  std::atomic<int64_t> written_bytes_{0}, written_tokens_{0}, written_docs_{0};
  std::atomic<bool> progress_done_{false};
  // The chunk the reader is filling (the reader's alone).
  Chunk chunk_;
  int64_t chunk_bytes_ = 0;
};

absl::StatusOr<PreprocessSummary> Pipeline::Run() {
  std::vector<std::thread> pool;
  for (int w = 0; w < workers_; ++w) pool.emplace_back([this] { WorkerLoop(); });
  std::thread writer([this] { WriterLoop(); });
  std::thread progress;
  if (options_.progress) progress = std::thread([this] { ProgressLoop(); });
  absl::Status read_status = ReadAll();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!read_status.ok()) Fail(read_status);
    reading_done_ = true;
    cv_.notify_all();
  }
  writer.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  for (auto& t : pool) t.join();
  progress_done_ = true;
  if (progress.joinable()) progress.join();
  if (!failure_.ok()) {
    // Shards finished before the failure would look like a complete corpus: remove them.
    for (const std::string& shard : summary_.shards) {
      ::unlink((shard + ".idx").c_str());
      ::unlink((shard + ".bin").c_str());
    }
    return failure_;
  }
  RemoveStaleShards(options_.output_prefix, sharded_, summary_.shards.size());
  summary_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time_).count();
  return std::move(summary_);
}

void Pipeline::Fail(absl::Status s) {
  if (failure_.ok()) failure_ = std::move(s);
  stop_ = true;
  cv_.notify_all();
}

void Pipeline::WorkerLoop() {
  while (true) {
    Chunk chunk;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty() || reading_done_; });
      if (stop_ || (queue_.empty() && reading_done_)) return;
      chunk = std::move(queue_.front());
      queue_.pop_front();
    }
    ChunkResult result;
    ProcessChunk(tokenizer_, options_, files_, eod_, chunk, &result);
    std::lock_guard<std::mutex> lock(mu_);
    done_.emplace(chunk.seq, std::move(result));
    cv_.notify_all();
  }
}

// The writer takes results strictly in chunk order, so the output does not depend on which
// worker finished first.
void Pipeline::WriterLoop() {
  absl::Status s = WriteAll();
  if (!s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    Fail(std::move(s));
  }
}

absl::Status Pipeline::WriteAll() {
  std::unique_ptr<IndexedDatasetWriter> out;
  TS_RETURN_IF_ERROR(OpenShard(out));
  while (true) {
    ChunkResult result;
    const Next next = TakeNextResult(&result);
    if (next == Next::kStopped) return absl::OkStatus();
    if (next == Next::kAllWritten) break;
    TS_RETURN_IF_ERROR(result.fatal);
    TS_RETURN_IF_ERROR(WriteResult(result, out));
  }
  return out->Finish();
}

Pipeline::Next Pipeline::TakeNextResult(ChunkResult* result) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] {
    return stop_ || done_.contains(next_to_write_) || (reading_done_ && next_to_write_ == chunks_read_);
  });
  if (stop_) return Next::kStopped;
  if (!done_.contains(next_to_write_)) return Next::kAllWritten;
  *result = std::move(done_[next_to_write_]);
  done_.erase(next_to_write_);
  ++next_to_write_;
  cv_.notify_all();
  return Next::kResult;
}

// Appends the result's documents, starting a new shard before a .bin would exceed the limit, and
// counts them.
absl::Status Pipeline::WriteResult(ChunkResult& result, std::unique_ptr<IndexedDatasetWriter>& out) {
  const int64_t item = static_cast<int64_t>(TokenDTypeSize(static_cast<uint8_t>(dtype_)));
  int64_t offset = 0;
  for (int64_t len : result.lengths) {
    if (sharded_ && out->documents() > 0 && out->bin_bytes() + len * item > options_.max_shard_bytes) {
      TS_RETURN_IF_ERROR(out->Finish());
      TS_RETURN_IF_ERROR(OpenShard(out));
    }
    TS_RETURN_IF_ERROR(out->AddDocument(absl::MakeConstSpan(result.tokens.data() + offset, len)));
    offset += len;
  }
  AddToSummary(result, offset);
  return absl::OkStatus();
}

absl::Status Pipeline::OpenShard(std::unique_ptr<IndexedDatasetWriter>& out) {
  const std::string prefix = sharded_
                                 ? absl::StrFormat("%s_%05d", options_.output_prefix, summary_.shards.size())
                                 : options_.output_prefix;
  TS_ASSIGN_OR_RETURN(out, IndexedDatasetWriter::Create(prefix, dtype_));
  summary_.shards.push_back(prefix);
  return absl::OkStatus();
}

void Pipeline::AddToSummary(ChunkResult& result, int64_t tokens) {
  summary_.documents += static_cast<int64_t>(result.lengths.size());
  summary_.tokens += tokens;
  summary_.input_bytes += result.input_bytes;
  summary_.empty_documents += result.counts[static_cast<int>(Problem::kEmpty)];
  summary_.malformed_json += result.counts[static_cast<int>(Problem::kMalformedJson)];
  summary_.missing_field += result.counts[static_cast<int>(Problem::kMissingField)];
  summary_.not_a_string += result.counts[static_cast<int>(Problem::kNotString)];
  summary_.invalid_utf8 += result.counts[static_cast<int>(Problem::kInvalidUtf8)];
  for (std::string& e : result.examples) {
    if (summary_.examples.size() < kMaxExamples) summary_.examples.push_back(std::move(e));
  }
  written_bytes_ = summary_.input_bytes;
  written_tokens_ = summary_.tokens;
  written_docs_ = summary_.documents;
}

void Pipeline::ProgressLoop() {
  while (!progress_done_) {
    for (int i = 0; i < 5 && !progress_done_; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time_).count();
    const double b = written_bytes_.load();
    const double frac = total_input_ > 0 ? std::min(1.0, b / total_input_) : 0;
    const int width = 30, filled = static_cast<int>(frac * width);
    std::fprintf(stderr, "\r[preprocess] [%s%s] %5.1f%% %.1f/%.1f MB %.1f MB/s %s tok/s %s docs ",
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(), 100 * frac,
                 b / 1e6, total_input_ / 1e6, t > 0 ? b / 1e6 / t : 0.0,
                 HumanCount(t > 0 ? written_tokens_ / t : 0).c_str(),
                 HumanCount(written_docs_.load()).c_str());
    std::fflush(stderr);
  }
  std::fputc('\n', stderr);
}

// The reader: cuts the input into chunks of about chunk_bytes, in file order.
absl::Status Pipeline::ReadAll() {
  std::vector<char> buffer(1 << 20);
  for (size_t f = 0; f < files_.size(); ++f) {
    const bool jsonl = options_.format == InputFormat::kJsonl ||
                       (options_.format == InputFormat::kAuto && IsJsonlName(files_[f]));
    if (jsonl) {
      TS_ASSIGN_OR_RETURN(const bool go_on, ReadJsonLines(f, buffer));
      if (!go_on) return absl::OkStatus();
      continue;
    }
    if (!Flush(false)) return absl::OkStatus();
    TS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(files_[f]));
    chunk_bytes_ += static_cast<int64_t>(text.size());
    chunk_.docs.push_back({std::move(text), static_cast<int32_t>(f), 0});
  }
  if (!chunk_.docs.empty()) Submit(&chunk_);
  return absl::OkStatus();
}

// Adds the lines of file f as documents; false when the run stopped meanwhile.
absl::StatusOr<bool> Pipeline::ReadJsonLines(size_t f, std::vector<char>& buffer) {
  std::FILE* in = std::fopen(files_[f].c_str(), "rb");
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", files_[f], "': ", std::strerror(errno)));
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
      if (!Flush(true)) {
        ok = false;
        break;
      }
      chunk_bytes_ += static_cast<int64_t>(partial.size()) + 1;
      chunk_.docs.push_back({std::move(partial), static_cast<int32_t>(f), line});
      partial = std::string();
    }
  }
  const bool read_error = std::ferror(in);
  std::fclose(in);
  if (!ok) return false;
  if (read_error) return absl::DataLossError(absl::StrCat("error reading '", files_[f], "'"));
  if (!partial.empty()) {  // a last line without '\n'
    ++line;
    if (!Flush(true)) return false;
    chunk_bytes_ += static_cast<int64_t>(partial.size());
    chunk_.docs.push_back({std::move(partial), static_cast<int32_t>(f), line});
  }
  return true;
}

// Submits the chunk being filled when the next document is of the other kind or the chunk is
// full, and makes the chunk that kind; false when the run stopped.
bool Pipeline::Flush(bool jsonl) {
  if (!chunk_.docs.empty() && (chunk_.jsonl != jsonl || chunk_bytes_ >= options_.chunk_bytes)) {
    if (!Submit(&chunk_)) return false;
    chunk_bytes_ = 0;
  }
  chunk_.jsonl = jsonl;
  return true;
}

// Queues a chunk once fewer than max_in_flight_ are read but not written; false when stopped.
bool Pipeline::Submit(Chunk* chunk) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return stop_ || chunks_read_ - next_to_write_ < max_in_flight_; });
  if (stop_) return false;
  chunk->seq = chunks_read_++;
  queue_.push_back(std::move(*chunk));
  *chunk = Chunk();
  cv_.notify_all();
  return true;
}

int64_t TotalBytes(const std::vector<std::string>& files) {
  int64_t total = 0;
  for (const std::string& f : files) {
    std::error_code ec;
    total += static_cast<int64_t>(std::filesystem::file_size(f, ec));
  }
  return total;
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
  const int64_t total_input = TotalBytes(files);
  const std::filesystem::path parent = std::filesystem::path(options.output_prefix).parent_path();
  if (!parent.empty()) TS_RETURN_IF_ERROR(MakeDirs(parent.string()));
  Pipeline pipeline(tokenizer, options, std::move(files), *eod, total_input, start_time);
  return pipeline.Run();
}

}  // namespace tessera::data
