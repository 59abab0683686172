// `tessera dataset info PREFIX` (dtype and counts of each shard) and `tessera dataset dump PREFIX`
// (documents' token ids, a line per document): Megatron .bin/.idx shards read back.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "cli/token_io.h"
#include "core/exit_codes.h"
#include "data/indexed_dataset.h"

namespace tessera::cli {
namespace {

constexpr char kInfo[] = "dataset info";
constexpr char kDump[] = "dataset dump";

int Info(const Args& args) {
  if (args.positional().size() != 1) {
    return ReportUsageError(kInfo, absl::InvalidArgumentError("give one PREFIX"));
  }
  auto shards = data::FindShardPrefixes(args.positional()[0]);
  if (!shards.ok()) return ReportError(kInfo, shards.status(), kExitRuntimeError);
  std::string out;
  for (const std::string& prefix : *shards) {
    auto ds = data::IndexedDataset::Open(prefix);
    if (!ds.ok()) return ReportError(kInfo, ds.status(), kExitRuntimeError);
    const data::IndexedDataset& d = **ds;
    absl::StrAppendFormat(&out, "%s: dtype %s, %d sequences, %d documents, %d tokens\n", prefix,
                          data::TokenDTypeName(static_cast<uint8_t>(d.dtype())), d.num_sequences(),
                          d.num_documents(), d.total_tokens());
  }
  WriteToStdout(out);
  return FlushStdout();
}

int Dump(const Args& args) {
  if (args.positional().size() != 1) {
    return ReportUsageError(kDump, absl::InvalidArgumentError("give one PREFIX"));
  }
  auto first = args.GetInt("first", 0, {.min = 0});
  if (!first.ok()) return ReportError(kDump, first.status(), kExitUsage);
  auto count = args.GetInt("count", INT64_MAX, {.min = 0});
  if (!count.ok()) return ReportError(kDump, count.status(), kExitUsage);
  auto shards = data::FindShardPrefixes(args.positional()[0]);
  if (!shards.ok()) return ReportError(kDump, shards.status(), kExitRuntimeError);
  int64_t doc = 0, printed = 0;
  std::string out;
  std::vector<int32_t> tokens;
  for (const std::string& prefix : *shards) {
    auto ds = data::IndexedDataset::Open(prefix);
    if (!ds.ok()) return ReportError(kDump, ds.status(), kExitRuntimeError);
    const data::IndexedDataset& d = **ds;
    for (int64_t k = 0; k < d.num_documents() && printed < *count; ++k, ++doc) {
      if (doc < *first) continue;
      const int64_t a = d.sequence_start(d.document_index(k)), b = d.sequence_start(d.document_index(k + 1));
      tokens.resize(b - a);
      if (auto s = d.ReadTokens(a, b - a, tokens.data()); !s.ok()) {
        return ReportError(kDump, s, kExitRuntimeError);
      }
      AppendIds(tokens, &out);
      ++printed;
    }
  }
  WriteToStdout(out);
  return FlushStdout();
}

// Both accept --first and --count (info ignores them): a dump's command line also gives its info.
ArgSpec DatasetArgs() {
  return {.flags = {Flag::Value("first"), Flag::Value("count")}, .max_positionals = 1};
}

}  // namespace

Command DatasetInfoCommand() {
  return {.name = kInfo,
          .usage = "dataset info PREFIX",
          .summary = "inspect Megatron .bin/.idx shards: dtype and counts",
          .args = DatasetArgs(),
          .run = Info};
}

Command DatasetDumpCommand() {
  return {.name = kDump,
          .usage = "dataset dump PREFIX [--first D] [--count N]",
          .summary = "print documents' token ids, a line per document",
          .args = DatasetArgs(),
          .run = Dump};
}

}  // namespace tessera::cli
