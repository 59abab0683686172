// `tessera tokenizer train` (learn a byte-level BPE rank file from text files), `tokenizer bench`
// (encode throughput) and `tokenizer info` (what a tokenizer holds).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/token_io.h"
#include "core/exit_codes.h"
#include "core/file_util.h"
#include "core/glob.h"
#include "data/bpe_tokenizer.h"
#include "data/bpe_trainer.h"

namespace tessera::cli {
namespace {

constexpr char kTrain[] = "tokenizer train";
constexpr char kBench[] = "tokenizer bench";
constexpr char kInfo[] = "tokenizer info";

int TrainTokenizer(const Args& args) {
  auto vocab_size = args.GetInt("vocab-size", -1, {.min = 256, .max = 1 << 24});
  if (!vocab_size.ok()) return ReportError(kTrain, vocab_size.status(), kExitUsage);
  if (*vocab_size < 0 || !args.Has("output") || args.positional().empty()) {
    return ReportUsageError(kTrain,
                            absl::InvalidArgumentError("--vocab-size, --output and an INPUT are required"));
  }
  auto max_mb = args.GetDouble("max-mb", 0, 0);
  if (!max_mb.ok()) return ReportError(kTrain, max_mb.status(), kExitUsage);
  auto threads = args.GetInt("threads", 0, {.min = 0, .max = 1024});
  if (!threads.ok()) return ReportError(kTrain, threads.status(), kExitUsage);
  data::BpeTrainerOptions options;
  options.vocab_size = *vocab_size;
  options.pattern = args.Get("pattern", "cl100k_base");
  options.max_bytes = static_cast<int64_t>(*max_mb * 1048576.0);
  options.threads = static_cast<int>(*threads);
  auto files = ExpandFilePatterns(args.positional());
  if (!files.ok()) return ReportError(kTrain, files.status(), kExitUsage);
  auto result = data::TrainBpeFromFiles(*files, options);
  if (!result.ok()) return ReportError(kTrain, result.status(), kExitRuntimeError);
  absl::Status s = data::WriteTrainedTokenizer(args.Get("output"), *result);
  if (!s.ok()) return ReportError(kTrain, s, kExitRuntimeError);
  std::fprintf(stderr,
               "[tokenizer] %zu ranks (+%zu special) learned from %lld bytes in %lld pieces; wrote %s\n",
               result->tokens.size(), result->spec.specials.size(), static_cast<long long>(result->bytes),
               static_cast<long long>(result->unique_pieces), args.Get("output").c_str());
  return kExitOk;
}

// Encodes (or with split_only only pre-tokenizes) `docs` on `n_threads` threads, round-robin;
// returns the seconds taken and sets `tokens` (pieces with split_only).
absl::StatusOr<double> TimeEncoding(const data::BpeTokenizer& tokenizer, const std::vector<std::string>& docs,
                                    int n_threads, bool split_only, int64_t* tokens) {
  std::vector<int64_t> counts(n_threads, 0);
  std::vector<absl::Status> status(n_threads);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < n_threads; ++t) {
    pool.emplace_back([&, t] {
      std::vector<int32_t> ids;
      for (size_t d = t; d < docs.size(); d += n_threads) {
        ids.clear();
        if (split_only) {  // the pattern alone: how the time divides between splitting and merging
          status[t].Update(tokenizer.Split(docs[d], [&](std::string_view) { ++counts[t]; }));
          continue;
        }
        status[t].Update(tokenizer.EncodeOrdinary(docs[d], &ids));
        counts[t] += static_cast<int64_t>(ids.size());
      }
    });
  }
  for (auto& th : pool) th.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& s : status) {
    if (!s.ok()) return s;
  }
  *tokens = 0;
  for (int64_t c : counts) *tokens += c;
  return seconds;
}

int BenchTokenizer(const Args& args) {
  auto tokenizer = TokenizerFromArgs(args);
  if (!tokenizer.ok()) return ReportError(kBench, tokenizer.status(), kExitUsage);
  auto threads = args.GetInt("threads", 1, {.min = 0, .max = 1024});
  if (!threads.ok()) return ReportError(kBench, threads.status(), kExitUsage);
  auto repeat = args.GetInt("repeat", 3, {.min = 1, .max = 1000});
  if (!repeat.ok()) return ReportError(kBench, repeat.status(), kExitUsage);
  const int n_threads = *threads == 0 ? static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))
                                      : static_cast<int>(*threads);
  auto files = ExpandFilePatterns(args.positional());
  if (!files.ok()) return ReportError(kBench, files.status(), kExitUsage);
  std::vector<std::string> docs;
  int64_t bytes = 0;
  for (const std::string& f : *files) {
    auto text = ReadFileToString(f);
    if (!text.ok()) return ReportError(kBench, text.status(), kExitRuntimeError);
    bytes += static_cast<int64_t>(text->size());
    docs.push_back(*std::move(text));
  }
  // Best of `repeat` runs: the figure least disturbed by other work on the machine.
  double best = 1e30;
  int64_t tokens = 0;
  for (int64_t r = 0; r < *repeat; ++r) {
    auto seconds = TimeEncoding(**tokenizer, docs, n_threads, args.Has("split-only"), &tokens);
    if (!seconds.ok()) return ReportError(kBench, seconds.status(), kExitRuntimeError);
    best = std::min(best, *seconds);
  }
  std::printf("threads=%d bytes=%lld tokens=%lld seconds=%.4f mb_per_s=%.2f tokens_per_s=%.0f\n", n_threads,
              static_cast<long long>(bytes), static_cast<long long>(tokens), best, bytes / 1e6 / best,
              tokens / best);
  return kExitOk;
}

int TokenizerInfo(const Args& args) {
  auto tokenizer = TokenizerFromArgs(args);
  if (!tokenizer.ok()) return ReportError(kInfo, tokenizer.status(), kExitUsage);
  const data::BpeTokenizer& t = **tokenizer;
  std::printf(
      "name: %s\nsource: %s\nranks: %d\nvocab_size: %d\neod: %s\nbos: %s\nspecials: %zu\npattern: %s\n",
      t.spec().name.c_str(), t.source().c_str(), t.num_ranks(), t.vocab_size(),
      t.eod_id() ? absl::StrCat(t.spec().eod, " = ", *t.eod_id()).c_str() : "(none)",
      t.spec().bos.empty() ? "(none)" : absl::StrCat(t.spec().bos, " = ", *t.SpecialId(t.spec().bos)).c_str(),
      t.spec().specials.size(), t.spec().pattern.c_str());
  return kExitOk;
}

}  // namespace

Command TokenizerTrainCommand() {
  return {.name = kTrain,
          .usage =
              "tokenizer train --vocab-size N --output FILE [--pattern cl100k_base|o200k_base|REGEX] "
              "[--max-mb M] [--threads N] INPUT...",
          .summary = "learn a byte-level BPE rank file",
          .args = {.flags = {Flag::Value("vocab-size"), Flag::Value("output"), Flag::Value("pattern"),
                             Flag::Value("max-mb"), Flag::Value("threads")}},
          .run = TrainTokenizer};
}

Command TokenizerBenchCommand() {
  return {.name = kBench,
          .usage = "tokenizer bench --tokenizer T [--threads N] [--repeat R] [--split-only] FILE...",
          .summary = "encode throughput in MB/s",
          .details = kTokenizerNote,
          .args = {.flags = TokenizerFlags(
                       {Flag::Value("threads"), Flag::Value("repeat"), Flag::Bool("split-only")})},
          .run = BenchTokenizer};
}

Command TokenizerInfoCommand() {
  return {.name = kInfo,
          .usage = "tokenizer info --tokenizer T",
          .summary = "print ranks, vocabulary size and specials",
          .details = kTokenizerNote,
          .args = {.flags = TokenizerFlags()},
          .run = TokenizerInfo};
}

}  // namespace tessera::cli
