// The checkpoint command (checkpoint_command.h): argument parsing, resolving each checkpoint to
// one step directory, and printing what checkpoint/tensor_digest.h and tensor_diff.h compute,
// as aligned text or as one JSON document.
#include "cli/checkpoint_command.h"

#include "cli/command.h"
#include "cli/commands.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/region.h"
#include "checkpoint/tensor_diff.h"
#include "checkpoint/tensor_digest.h"
#include "core/exit_codes.h"
#include "core/json_text.h"
#include "core/status_macros.h"

namespace tessera {
namespace {

using checkpoint::CheckpointReader;
using checkpoint::TensorDiff;

constexpr char kUsage[] =
    "usage: tessera checkpoint digest CKPT [--step N] [--params-only] [--json]\n"
    "       tessera checkpoint diff A B [--step N] [--params-only] [--atol X] [--json]\n"
    "  CKPT, A, B: a step directory, or a checkpoint directory (its newest valid step, or step N)\n"
    "  --params-only  leave out the optimizer's moments (optim.*)\n"
    "  --atol X       diff: also fail when a tensor's max |a-b| exceeds X\n";

// The trainer saves the AdamW moments of parameter P as optim.exp_avg/P and optim.exp_avg_sq/P
// (trainer/training_state.cc); everything else is a model parameter.
constexpr char kOptimizerPrefix[] = "optim.";

struct Args {
  std::string action;  // "digest" or "diff"
  std::vector<std::string> paths;
  std::optional<int64_t> step;
  std::optional<double> atol;
  bool params_only = false;
  bool json = false;
};

absl::StatusOr<Args> ParseArgs(const std::vector<std::string>& argv) {
  if (argv.empty()) return absl::InvalidArgumentError("expected 'digest' or 'diff'");
  Args args;
  args.action = argv[0];
  if (args.action != "digest" && args.action != "diff") {
    return absl::InvalidArgumentError(absl::StrCat("unknown action '", args.action, "' (digest or diff)"));
  }
  for (size_t i = 1; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (i + 1 == argv.size()) return absl::InvalidArgumentError(absl::StrCat(a, " needs a value"));
      return argv[++i];
    };
    if (a == "--step") {
      TS_ASSIGN_OR_RETURN(std::string v, value());
      int64_t step;
      if (!absl::SimpleAtoi(v, &step) || step < 0) {
        return absl::InvalidArgumentError(absl::StrCat("--step expects a step number, got '", v, "'"));
      }
      args.step = step;
    } else if (a == "--atol" && args.action == "diff") {
      TS_ASSIGN_OR_RETURN(std::string v, value());
      double atol;
      if (!absl::SimpleAtod(v, &atol) || !(atol >= 0)) {
        return absl::InvalidArgumentError(absl::StrCat("--atol expects a number >= 0, got '", v, "'"));
      }
      args.atol = atol;
    } else if (a == "--params-only") {
      args.params_only = true;
    } else if (a == "--json") {
      args.json = true;
    } else if (a.rfind("-", 0) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown option '", a, "'"));
    } else {
      args.paths.push_back(a);
    }
  }
  const size_t want = args.action == "digest" ? 1 : 2;
  if (args.paths.size() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat(args.action, " takes ", want, " checkpoint path(s), got ", args.paths.size()));
  }
  return args;
}

// The step directory `path` names: itself, step N of it, or its newest valid step. The data is
// checksummed as it is read, so resolving checks the structure only.
absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenCheckpoint(const std::string& path,
                                                                 std::optional<int64_t> step) {
  if (!step) {
    TS_ASSIGN_OR_RETURN(checkpoint::FoundCheckpoint found,
                        checkpoint::ResolveCheckpoint(path, checkpoint::Verify::kStructure));
    return CheckpointReader::Open(found.path);
  }
  TS_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(checkpoint::StepDirPath(path, *step)));
  return reader;
}

checkpoint::TensorFilter Filter(const Args& args) {
  if (!args.params_only) return nullptr;
  return [](const std::string& name) { return name.rfind(kOptimizerPrefix, 0) != 0; };
}

std::string JsonShape(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// A figure for the text output: "0" for exact zeros, "inf" for infinities.
std::string Figure(double v) { return v == 0 ? "0" : absl::StrFormat("%.3g", v); }

int Digest(const Args& args, const CheckpointReader& reader) {
  auto digests = checkpoint::DigestTensors(reader, Filter(args));
  if (!digests.ok()) {
    std::fprintf(stderr, "tessera checkpoint: error: %s\n", std::string(digests.status().message()).c_str());
    return kExitRuntimeError;
  }
  std::string out;
  if (args.json) {
    absl::StrAppend(&out, "{\"checkpoint\": ", JsonQuote(reader.step_dir()),
                    ", \"step\": ", reader.manifest().step, ", \"hash\": \"fnv1a64\", \"tensors\": [");
    for (size_t i = 0; i < digests->size(); ++i) {
      const checkpoint::TensorDigest& d = (*digests)[i];
      absl::StrAppend(&out, i ? ",\n  " : "\n  ", "{\"name\": ", JsonQuote(d.name), ", \"dtype\": \"",
                      checkpoint::DTypeName(d.dtype), "\", \"shape\": ", JsonShape(d.shape),
                      ", \"digest\": \"", checkpoint::DigestHex(d.hash), "\"}");
    }
    absl::StrAppend(&out, "]}\n");
  } else {
    size_t width = 0;
    for (const auto& d : *digests) width = std::max(width, d.name.size());
    absl::StrAppend(&out, "# ", reader.step_dir(), " (step ", reader.manifest().step, "): ", digests->size(),
                    " tensors, FNV-1a 64 of their bytes\n");
    for (const auto& d : *digests) {
      absl::StrAppend(&out,
                      absl::StrFormat("%-*s  %-8s  %-14s  %s\n", static_cast<int>(width), d.name,
                                      checkpoint::DTypeName(d.dtype), checkpoint::ShapeToString(d.shape),
                                      checkpoint::DigestHex(d.hash)));
    }
  }
  std::fputs(out.c_str(), stdout);
  return kExitOk;
}

// The verdict on one tensor: "" when it passes.
std::string Problem(const TensorDiff& d, std::optional<double> atol) {
  switch (d.kind) {
    case TensorDiff::Kind::kMissingInA:
      return "missing in A";
    case TensorDiff::Kind::kMissingInB:
      return "missing in B";
    case TensorDiff::Kind::kShapeMismatch:
      return absl::StrCat("shape ", checkpoint::ShapeToString(d.shape_a), " vs ",
                          checkpoint::ShapeToString(d.shape_b));
    case TensorDiff::Kind::kCompared:
      break;
  }
  if (atol && !(d.max_abs_diff <= *atol)) return absl::StrCat("max |a-b| above ", Figure(*atol));
  return "";
}

std::string DiffJson(const CheckpointReader& a, const CheckpointReader& b,
                     const std::vector<TensorDiff>& diffs, std::optional<double> atol, int failures) {
  std::string out = absl::StrCat("{\"a\": ", JsonQuote(a.step_dir()), ", \"b\": ", JsonQuote(b.step_dir()),
                                 ", \"step_a\": ", a.manifest().step, ", \"step_b\": ", b.manifest().step,
                                 ", \"failures\": ", failures, ", \"tensors\": [");
  for (size_t i = 0; i < diffs.size(); ++i) {
    const TensorDiff& d = diffs[i];
    absl::StrAppend(&out, i ? ",\n  " : "\n  ", "{\"name\": ", JsonQuote(d.name), ", \"status\": \"",
                    checkpoint::DiffKindName(d.kind),
                    "\", \"ok\": ", Problem(d, atol).empty() ? "true" : "false",
                    ", \"shape_a\": ", JsonShape(d.shape_a), ", \"shape_b\": ", JsonShape(d.shape_b));
    if (d.kind == TensorDiff::Kind::kCompared) {
      // JsonNumber writes an infinite difference (NaN against a number) as null.
      absl::StrAppend(&out, ", \"dtype_a\": \"", checkpoint::DTypeName(d.dtype_a), "\", \"dtype_b\": \"",
                      checkpoint::DTypeName(d.dtype_b), "\", \"numel\": ", d.numel,
                      ", \"differing\": ", d.differing, ", \"max_abs_diff\": ", JsonNumber(d.max_abs_diff),
                      ", \"worst_index\": ", d.worst_index, ", \"max_abs_a\": ", JsonNumber(d.max_abs_a),
                      ", \"max_abs_b\": ", JsonNumber(d.max_abs_b));
    }
    absl::StrAppend(&out, "}");
  }
  return out + "]}\n";
}

std::string DiffText(const CheckpointReader& a, const CheckpointReader& b,
                     const std::vector<TensorDiff>& diffs, std::optional<double> atol, int failures) {
  std::string out = absl::StrCat("# A: ", a.step_dir(), " (step ", a.manifest().step,
                                 ")\n# B: ", b.step_dir(), " (step ", b.manifest().step, ")\n");
  size_t width = 0;
  for (const TensorDiff& d : diffs) width = std::max(width, d.name.size());
  const TensorDiff* worst = nullptr;
  int differ = 0;
  for (const TensorDiff& d : diffs) {
    const std::string problem = Problem(d, atol);
    absl::StrAppend(&out, absl::StrFormat("%-*s  ", static_cast<int>(width), d.name));
    if (d.kind == TensorDiff::Kind::kCompared) {
      absl::StrAppend(&out, absl::StrFormat("max|a-b| %-9s max|a| %-9s max|b| %-9s differing %d/%d",
                                            Figure(d.max_abs_diff), Figure(d.max_abs_a), Figure(d.max_abs_b),
                                            d.differing, d.numel));
      if (d.differing > 0) ++differ;
      if (!worst || d.max_abs_diff > worst->max_abs_diff) worst = &d;
    }
    absl::StrAppend(&out, problem.empty() ? "" : "  FAIL: ", problem, "\n");
  }
  absl::StrAppend(&out, "# ", diffs.size(), " tensors, ", differ, " differ");
  if (worst)
    absl::StrAppend(&out, "; largest max|a-b| ", Figure(worst->max_abs_diff), " (", worst->name, ")");
  absl::StrAppend(&out, "; ", failures, " failure(s)\n");
  return out;
}

int Diff(const Args& args, const CheckpointReader& a, const CheckpointReader& b) {
  auto diffs = checkpoint::DiffTensors(a, b, Filter(args));
  if (!diffs.ok()) {
    std::fprintf(stderr, "tessera checkpoint: error: %s\n", std::string(diffs.status().message()).c_str());
    return kExitRuntimeError;
  }
  int failures = 0;
  for (const TensorDiff& d : *diffs) failures += Problem(d, args.atol).empty() ? 0 : 1;
  const std::string out =
      args.json ? DiffJson(a, b, *diffs, args.atol, failures) : DiffText(a, b, *diffs, args.atol, failures);
  std::fputs(out.c_str(), stdout);
  return failures == 0 ? kExitOk : kExitRuntimeError;
}

}  // namespace

int CheckpointCommand(const std::vector<std::string>& argv) {
  if (!argv.empty() && (argv[0] == "-h" || argv[0] == "--help")) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  auto args = ParseArgs(argv);
  if (!args.ok()) {
    std::fprintf(stderr, "tessera checkpoint: error: %s\n%s", std::string(args.status().message()).c_str(),
                 kUsage);
    return kExitUsage;
  }
  std::vector<std::unique_ptr<CheckpointReader>> readers;
  for (const std::string& path : args->paths) {
    auto reader = OpenCheckpoint(path, args->step);
    if (!reader.ok()) {
      std::fprintf(stderr, "tessera checkpoint: error: %s\n", std::string(reader.status().message()).c_str());
      return reader.status().code() == absl::StatusCode::kNotFound ? kExitUsage : kExitRuntimeError;
    }
    readers.push_back(std::move(*reader));
  }
  return args->action == "digest" ? Digest(*args, *readers[0]) : Diff(*args, *readers[0], *readers[1]);
}

}  // namespace tessera

namespace tessera::cli {

// The table's entry: the shared parser checks the flags, then the command's own parser reads the
// action and the checkpoints in order.
Command CheckpointToolsCommand() {
  return {.name = "checkpoint",
          .usage = "checkpoint digest CKPT | diff A B [--step N] [--params-only] [--atol X] [--json]",
          .summary = "per-tensor digests of a checkpoint, or differences of two (any layouts)",
          .details = kUsage,
          .args = {.flags = {Flag::Value("step", "a step number"), Flag::Bool("params-only"),
                             Flag::Value("atol", "a tolerance"), Flag::Bool("json")},
                   .max_positionals = 3},
          .run = [](const Args& args) {
            std::vector<std::string> argv = args.positional();
            if (args.Has("step")) argv.insert(argv.end(), {"--step", args.Get("step")});
            if (args.Has("atol")) argv.insert(argv.end(), {"--atol", args.Get("atol")});
            if (args.Has("params-only")) argv.push_back("--params-only");
            if (args.Has("json")) argv.push_back("--json");
            return CheckpointCommand(argv);
          }};
}

}  // namespace tessera::cli
