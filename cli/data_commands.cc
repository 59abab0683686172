// Implementation of the data subcommands. Argument parsing is deliberately plain: every option
// is declared in a table, unknown options are errors, and `--opt value` and `--opt=value` both
// work. All real work lives in the library (tokenizer, trainer, preprocess).
#include "cli/data_commands.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/absl_string_view.h"
#include "core/file_util.h"
#include "core/glob.h"
#include "core/status_macros.h"
#include "data/bpe_tokenizer.h"
#include "data/bpe_trainer.h"
#include "data/indexed_dataset.h"
#include "data/preprocess.h"

namespace tessera::data {

const char kDataCommandsUsage[] = TESSERA_DATA_COMMANDS_USAGE;

namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

int Fail(const absl::Status& status, int code) {
  std::fprintf(stderr, "tessera: error: %s\n", std::string(status.message()).c_str());
  return code;
}

// Declared options of one command: name -> takes a value. Values of repeated options accumulate.
class Args {
 public:
  Args(std::string command, std::map<std::string, bool> options)
      : command_(std::move(command)), options_(std::move(options)) {}

  absl::Status Parse(const std::vector<std::string>& args) {
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (a.size() > 2 && a.rfind("--", 0) == 0) {
        std::string name = a.substr(2), value;
        bool has_value = false;
        if (size_t eq = name.find('='); eq != std::string::npos) {
          value = name.substr(eq + 1);
          name = name.substr(0, eq);
          has_value = true;
        }
        auto it = options_.find(name);
        if (it == options_.end()) {
          return absl::InvalidArgumentError(absl::StrCat(command_, ": unknown option '--", name, "'"));
        }
        if (it->second && !has_value) {
          if (i + 1 == args.size())
            return absl::InvalidArgumentError(absl::StrCat(command_, ": --", name, " needs a value"));
          value = args[++i];
        } else if (!it->second && has_value) {
          return absl::InvalidArgumentError(absl::StrCat(command_, ": --", name, " takes no value"));
        }
        values_[name].push_back(value);
      } else {
        positional_.push_back(a);
      }
    }
    return absl::OkStatus();
  }

  bool Has(const std::string& name) const { return values_.contains(name); }
  std::string Get(const std::string& name, const std::string& fallback = "") const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second.back();
  }
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t fallback, int64_t min, int64_t max) const {
    if (!Has(name)) return fallback;
    int64_t v;
    if (!absl::SimpleAtoi(Get(name), &v) || v < min || v > max) {
      return absl::InvalidArgumentError(absl::StrCat(command_, ": --", name, " must be an integer in [", min,
                                                     ", ", max, "], got '", Get(name), "'"));
    }
    return v;
  }
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback, double min) const {
    if (!Has(name)) return fallback;
    double v;
    if (!absl::SimpleAtod(Get(name), &v) || !(v >= min)) {
      return absl::InvalidArgumentError(
          absl::StrCat(command_, ": --", name, " must be a number >= ", min, ", got '", Get(name), "'"));
    }
    return v;
  }
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::string command_;
  std::map<std::string, bool> options_;
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

absl::StatusOr<std::unique_ptr<BpeTokenizer>> TokenizerFromArgs(const Args& args,
                                                                const std::string& command) {
  if (!args.Has("tokenizer")) {
    return absl::InvalidArgumentError(absl::StrCat(command,
                                                   ": --tokenizer is required (cl100k_base:FILE, "
                                                   "o200k_base:FILE, llama3:FILE or a rank file)"));
  }
  if (args.Has("vocab")) return LoadTokenizer(args.Get("tokenizer"), args.Get("vocab"));
  return LoadTokenizer(args.Get("tokenizer"));
}

std::string ReadAllStdin() {
  std::string data;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), stdin)) > 0) data.append(buffer, n);
  return data;
}

void WriteAll(std::string_view s) { std::fwrite(s.data(), 1, s.size(), stdout); }

void AppendIds(const std::vector<int32_t>& ids, std::string* out) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out->push_back(' ');
    absl::StrAppend(out, ids[i]);
  }
  out->push_back('\n');
}

// Splits stdin into the texts a command works on: lines (without their '\n'), NUL-separated
// records, or the whole input.
std::vector<std::string_view> SplitInput(std::string_view data, bool whole, bool null_separated) {
  std::vector<std::string_view> texts;
  if (whole) {
    texts.push_back(data);
    return texts;
  }
  const char sep = null_separated ? '\0' : '\n';
  size_t pos = 0;
  while (pos < data.size()) {
    size_t end = data.find(sep, pos);
    if (end == std::string_view::npos) end = data.size();
    texts.push_back(data.substr(pos, end - pos));
    pos = end + 1;
  }
  return texts;
}

}  // namespace

int TokenizeCommand(const std::vector<std::string>& argv) {
  Args args(
      "tokenize",
      {{"tokenizer", true}, {"vocab", true}, {"whole", false}, {"null", false}, {"allow-special", false}});
  if (auto s = args.Parse(argv); !s.ok()) return Fail(s, kExitUsage);
  if (!args.positional().empty()) {
    return Fail(absl::InvalidArgumentError("tokenize reads its text from stdin; it takes no file arguments"),
                kExitUsage);
  }
  auto tokenizer = TokenizerFromArgs(args, "tokenize");
  if (!tokenizer.ok()) return Fail(tokenizer.status(), kExitUsage);
  const std::string data = ReadAllStdin();
  std::string out;
  std::vector<int32_t> ids;
  size_t line = 0;
  for (std::string_view text : SplitInput(data, args.Has("whole"), args.Has("null"))) {
    ++line;
    ids.clear();
    absl::Status s = args.Has("allow-special") ? (*tokenizer)->EncodeWithSpecials(text, &ids)
                                               : (*tokenizer)->EncodeOrdinary(text, &ids);
    if (!s.ok()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("stdin ", args.Has("null") ? "record " : "line ",
                                                          line, ": ", s.message())),
                  kExitRuntime);
    }
    AppendIds(ids, &out);
    if (out.size() > (1 << 20)) {
      WriteAll(out);
      out.clear();
    }
  }
  WriteAll(out);
  return std::fflush(stdout) == 0 ? 0 : kExitRuntime;
}

int DetokenizeCommand(const std::vector<std::string>& argv) {
  Args args("detokenize", {{"tokenizer", true}, {"vocab", true}, {"null", false}});
  if (auto s = args.Parse(argv); !s.ok()) return Fail(s, kExitUsage);
  auto tokenizer = TokenizerFromArgs(args, "detokenize");
  if (!tokenizer.ok()) return Fail(tokenizer.status(), kExitUsage);
  const std::string data = ReadAllStdin();
  std::string out;
  size_t line = 0;
  for (std::string_view text : SplitInput(data, false, false)) {
    ++line;
    std::vector<int32_t> ids;
    for (absl::string_view field : absl::StrSplit(AbslView(text), ' ', absl::SkipEmpty())) {
      int32_t id;
      if (!absl::SimpleAtoi(field, &id)) {
        return Fail(
            absl::InvalidArgumentError(absl::StrCat("stdin line ", line, ": '", field, "' is not an id")),
            kExitRuntime);
      }
      ids.push_back(id);
    }
    auto decoded = (*tokenizer)->Decode(ids);
    if (!decoded.ok()) {
      return Fail(
          absl::InvalidArgumentError(absl::StrCat("stdin line ", line, ": ", decoded.status().message())),
          kExitRuntime);
    }
    out += *decoded;
    out.push_back(args.Has("null") ? '\0' : '\n');
  }
  WriteAll(out);
  return std::fflush(stdout) == 0 ? 0 : kExitRuntime;
}

namespace {

int TokenizerTrain(const std::vector<std::string>& argv) {
  Args args("tokenizer train",
            {{"vocab-size", true}, {"output", true}, {"pattern", true}, {"max-mb", true}, {"threads", true}});
  if (auto s = args.Parse(argv); !s.ok()) return Fail(s, kExitUsage);
  auto vocab_size = args.GetInt("vocab-size", -1, 256, 1 << 24);
  if (!vocab_size.ok()) return Fail(vocab_size.status(), kExitUsage);
  if (*vocab_size < 0 || !args.Has("output") || args.positional().empty()) {
    return Fail(absl::InvalidArgumentError("usage: tessera tokenizer train --vocab-size N --output FILE "
                                           "[--pattern cl100k_base|o200k_base|REGEX] "
                                           "[--max-mb M] [--threads N] INPUT..."),
                kExitUsage);
  }
  auto max_mb = args.GetDouble("max-mb", 0, 0);
  if (!max_mb.ok()) return Fail(max_mb.status(), kExitUsage);
  auto threads = args.GetInt("threads", 0, 0, 1024);
  if (!threads.ok()) return Fail(threads.status(), kExitUsage);
  BpeTrainerOptions options;
  options.vocab_size = *vocab_size;
  options.pattern = args.Get("pattern", "cl100k_base");
  options.max_bytes = static_cast<int64_t>(*max_mb * 1048576.0);
  options.threads = static_cast<int>(*threads);
  auto files = ExpandFilePatterns(args.positional());
  if (!files.ok()) return Fail(files.status(), kExitUsage);
  auto result = TrainBpeFromFiles(*files, options);
  if (!result.ok()) return Fail(result.status(), kExitRuntime);
  absl::Status s = WriteTrainedTokenizer(args.Get("output"), *result);
  if (!s.ok()) return Fail(s, kExitRuntime);
  std::fprintf(stderr,
               "[tokenizer] %zu ranks (+%zu special) learned from %lld bytes in %lld pieces; wrote %s\n",
               result->tokens.size(), result->spec.specials.size(), static_cast<long long>(result->bytes),
               static_cast<long long>(result->unique_pieces), args.Get("output").c_str());
  return 0;
}

int TokenizerBench(const std::vector<std::string>& argv) {
  Args args(
      "tokenizer bench",
      {{"tokenizer", true}, {"vocab", true}, {"threads", true}, {"repeat", true}, {"split-only", false}});
  if (auto s = args.Parse(argv); !s.ok()) return Fail(s, kExitUsage);
  auto tokenizer = TokenizerFromArgs(args, "tokenizer bench");
  if (!tokenizer.ok()) return Fail(tokenizer.status(), kExitUsage);
  auto threads = args.GetInt("threads", 1, 0, 1024);
  auto repeat = args.GetInt("repeat", 3, 1, 1000);
  if (!threads.ok() || !repeat.ok())
    return Fail(!threads.ok() ? threads.status() : repeat.status(), kExitUsage);
  const int n_threads = *threads == 0 ? static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))
                                      : static_cast<int>(*threads);
  auto files = ExpandFilePatterns(args.positional());
  if (!files.ok()) return Fail(files.status(), kExitUsage);
  std::vector<std::string> docs;
  int64_t bytes = 0;
  for (const std::string& f : *files) {
    auto text = ReadFileToString(f);
    if (!text.ok()) return Fail(text.status(), kExitRuntime);
    bytes += static_cast<int64_t>(text->size());
    docs.push_back(*std::move(text));
  }
  const bool split_only = args.Has("split-only");
  // Best of `repeat` runs: the figure least disturbed by other work on the machine.
  double best = 1e30;
  int64_t tokens = 0;
  for (int64_t r = 0; r < *repeat; ++r) {
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
            status[t].Update((*tokenizer)->Split(docs[d], [&](std::string_view) { ++counts[t]; }));
            continue;
          }
          status[t].Update((*tokenizer)->EncodeOrdinary(docs[d], &ids));
          counts[t] += static_cast<int64_t>(ids.size());
        }
      });
    }
    for (auto& th : pool) th.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const auto& s : status) {
      if (!s.ok()) return Fail(s, kExitRuntime);
    }
    best = std::min(best, seconds);
    tokens = 0;
    for (int64_t c : counts) tokens += c;
  }
  std::printf("threads=%d bytes=%lld tokens=%lld seconds=%.4f mb_per_s=%.2f tokens_per_s=%.0f\n", n_threads,
              static_cast<long long>(bytes), static_cast<long long>(tokens), best, bytes / 1e6 / best,
              tokens / best);
  return 0;
}

int TokenizerInfo(const std::vector<std::string>& argv) {
  Args args("tokenizer info", {{"tokenizer", true}, {"vocab", true}});
  if (auto s = args.Parse(argv); !s.ok()) return Fail(s, kExitUsage);
  auto tokenizer = TokenizerFromArgs(args, "tokenizer info");
  if (!tokenizer.ok()) return Fail(tokenizer.status(), kExitUsage);
  const BpeTokenizer& t = **tokenizer;
  std::printf(
      "name: %s\nsource: %s\nranks: %d\nvocab_size: %d\neod: %s\nbos: %s\nspecials: %zu\npattern: %s\n",
      t.spec().name.c_str(), t.source().c_str(), t.num_ranks(), t.vocab_size(),
      t.eod_id() ? absl::StrCat(t.spec().eod, " = ", *t.eod_id()).c_str() : "(none)",
      t.spec().bos.empty() ? "(none)" : absl::StrCat(t.spec().bos, " = ", *t.SpecialId(t.spec().bos)).c_str(),
      t.spec().specials.size(), t.spec().pattern.c_str());
  return 0;
}

}  // namespace

int TokenizerCommand(const std::vector<std::string>& argv) {
  const std::string sub = argv.empty() ? "" : argv[0];
  std::vector<std::string> rest(argv.begin() + (argv.empty() ? 0 : 1), argv.end());
  if (sub == "train") return TokenizerTrain(rest);
  if (sub == "bench") return TokenizerBench(rest);
  if (sub == "info") return TokenizerInfo(rest);
  std::fprintf(stderr, "usage: tessera tokenizer train|bench|info ...\n%s", kDataCommandsUsage);
  return kExitUsage;
}

int DatasetCommand(const std::vector<std::string>& argv) {
  const std::string sub = argv.empty() ? "" : argv[0];
  Args args("dataset", {{"first", true}, {"count", true}});
  if (auto s = args.Parse(std::vector<std::string>(argv.begin() + (argv.empty() ? 0 : 1), argv.end()));
      !s.ok()) {
    return Fail(s, kExitUsage);
  }
  if ((sub != "info" && sub != "dump") || args.positional().size() != 1) {
    return Fail(
        absl::InvalidArgumentError("usage: tessera dataset info PREFIX | dataset dump PREFIX [--first D] "
                                   "[--count N]"),
        kExitUsage);
  }
  auto shards = FindShardPrefixes(args.positional()[0]);
  if (!shards.ok()) return Fail(shards.status(), kExitRuntime);
  auto first = args.GetInt("first", 0, 0, INT64_MAX);
  auto count = args.GetInt("count", INT64_MAX, 0, INT64_MAX);
  if (!first.ok() || !count.ok()) return Fail(!first.ok() ? first.status() : count.status(), kExitUsage);
  int64_t doc = 0, printed = 0;
  std::string out;
  for (const std::string& prefix : *shards) {
    auto ds = IndexedDataset::Open(prefix);
    if (!ds.ok()) return Fail(ds.status(), kExitRuntime);
    const IndexedDataset& d = **ds;
    if (sub == "info") {
      absl::StrAppendFormat(&out, "%s: dtype %s, %d sequences, %d documents, %d tokens\n", prefix,
                            TokenDTypeName(static_cast<uint8_t>(d.dtype())), d.num_sequences(),
                            d.num_documents(), d.total_tokens());
      continue;
    }
    std::vector<int32_t> tokens;
    for (int64_t k = 0; k < d.num_documents() && printed < *count; ++k, ++doc) {
      if (doc < *first) continue;
      const int64_t a = d.sequence_start(d.document_index(k)), b = d.sequence_start(d.document_index(k + 1));
      tokens.resize(b - a);
      if (auto s = d.ReadTokens(a, b - a, tokens.data()); !s.ok()) return Fail(s, kExitRuntime);
      AppendIds(tokens, &out);
      ++printed;
    }
  }
  WriteAll(out);
  return std::fflush(stdout) == 0 ? 0 : kExitRuntime;
}

int PreprocessCommand(const std::vector<std::string>& argv) {
  Args args("preprocess", {{"tokenizer", true},
                           {"vocab", true},
                           {"output-prefix", true},
                           {"format", true},
                           {"json-key", true},
                           {"path-header", false},
                           {"workers", true},
                           {"max-shard-mb", true},
                           {"on-error", true},
                           {"progress", false},
                           {"no-progress", false},
                           {"allow-special", false},
                           {"chunk-mb", true},
                           {"files-from", true}});
  if (auto s = args.Parse(argv); !s.ok()) return Fail(s, kExitUsage);
  PreprocessOptions options;
  options.inputs = args.positional();
  if (args.Has("files-from")) {  // one input per line, like tar -T (long lists, no shell limits)
    auto list = ReadFileToString(args.Get("files-from"));
    if (!list.ok()) return Fail(list.status(), kExitUsage);
    for (absl::string_view line : absl::StrSplit(*list, '\n', absl::SkipWhitespace())) {
      options.inputs.emplace_back(line);
    }
  }
  if (!args.Has("output-prefix") || options.inputs.empty()) {
    return Fail(
        absl::InvalidArgumentError(
            "usage: tessera preprocess --tokenizer T --output-prefix PREFIX [--format auto|jsonl|text] "
            "[--json-key text] [--path-header] [--workers N] [--max-shard-mb M] [--on-error skip|fail] "
            "[--files-from LIST] INPUT..."),
        kExitUsage);
  }
  options.output_prefix = args.Get("output-prefix");
  auto format = ParseInputFormat(args.Get("format", "auto"));
  if (!format.ok()) return Fail(format.status(), kExitUsage);
  options.format = *format;
  options.json_key = args.Get("json-key", "text");
  options.path_header = args.Has("path-header");
  options.allow_special = args.Has("allow-special");
  auto workers = args.GetInt("workers", 0, 0, 1024);
  auto shard_mb = args.GetDouble("max-shard-mb", 0, 0);
  auto chunk_mb = args.GetDouble("chunk-mb", 4, 0.001);
  if (!workers.ok()) return Fail(workers.status(), kExitUsage);
  if (!shard_mb.ok()) return Fail(shard_mb.status(), kExitUsage);
  if (!chunk_mb.ok()) return Fail(chunk_mb.status(), kExitUsage);
  options.workers = static_cast<int>(*workers);
  options.max_shard_bytes = static_cast<int64_t>(*shard_mb * 1048576.0);
  options.chunk_bytes = static_cast<int64_t>(*chunk_mb * 1048576.0);
  const std::string on_error = args.Get("on-error", "skip");
  if (on_error != "skip" && on_error != "fail") {
    return Fail(absl::InvalidArgumentError("--on-error must be skip or fail"), kExitUsage);
  }
  options.fail_on_bad_document = on_error == "fail";
  options.progress = args.Has("progress") || (!args.Has("no-progress") && ::isatty(2));
  auto tokenizer = TokenizerFromArgs(args, "preprocess");
  if (!tokenizer.ok()) return Fail(tokenizer.status(), kExitUsage);
  auto summary = Preprocess(**tokenizer, options);
  if (!summary.ok()) return Fail(summary.status(), kExitRuntime);
  std::fputs(summary->ToString().c_str(), stderr);
  return 0;
}

}  // namespace tessera::data
