// `tessera schedule`: generates a pipeline schedule (or reads one from a file), simulates it and
// prints the per-rank timeline with its bubble fraction and peak live activations. Exit codes: 0
// success, 2 bad arguments or a schedule file that does not parse, is incomplete or deadlocks.
// The schedule, its checks and its timing live in parallel/pipeline/ (schedule.h, simulator.h).
#include <cmath>
#include <iostream>
#include <map>
#include <numeric>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "core/exit_codes.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/pipeline/simulator.h"

namespace tessera::cli {
namespace {

namespace pl = parallel::pipeline;

constexpr char kName[] = "schedule";

struct Options {
  int64_t pp = 0, microbatches = 0, v = 0;  // 0: not given
  std::string schedule, file, costs;
  bool print_actions = false;
};

absl::StatusOr<Options> OptionsOf(const Args& args) {
  Options o;
  TS_ASSIGN_OR_RETURN(o.pp, args.GetInt("pp", 0, {.min = 1}));
  TS_ASSIGN_OR_RETURN(o.microbatches, args.GetInt("microbatches", 0, {.min = 1}));
  TS_ASSIGN_OR_RETURN(o.v, args.GetInt("virtual-stages", 0, {.min = 1}));
  o.schedule = args.Get("schedule");
  o.file = args.Get("file");
  o.costs = args.Get("costs");
  o.print_actions = args.Has("print-actions");
  return o;
}

// "F=1,B=2,comm=0.1": the costs named replace those of `costs`.
absl::Status ParseCosts(const std::string& text, pl::ActionCosts* costs) {
  const std::map<std::string, double*> keys = {{"F", &costs->forward},
                                               {"B", &costs->backward},
                                               {"I", &costs->backward_input},
                                               {"W", &costs->backward_weight},
                                               {"comm", &costs->comm}};
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    auto it = keys.find(kv.first);
    double value;
    if (it == keys.end() || !absl::SimpleAtod(kv.second, &value) || !(value >= 0) || !std::isfinite(value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--costs item '", item, "' must be KEY=VALUE with KEY one of F, B, I, W, comm and VALUE >= 0"));
    }
    *it->second = value;
  }
  return absl::OkStatus();
}

// The schedule of --file, which must agree with --pp, --microbatches and --virtual-stages where
// they are given.
absl::StatusOr<pl::Schedule> ScheduleFromFile(const Options& o) {
  if (!o.schedule.empty()) return absl::InvalidArgumentError("give --schedule or --file, not both");
  TS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(o.file));
  auto parsed = pl::ParseSchedule(text);
  if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat(o.file, ": ", parsed.status().message()));
  pl::Schedule schedule = *std::move(parsed);
  if (schedule.name.empty()) schedule.name = o.file;
  const std::pair<const char*, int64_t> given[] = {
      {"pp", o.pp}, {"microbatches", o.microbatches}, {"virtual-stages", o.v}};
  const int64_t have[] = {schedule.pp, schedule.microbatches, schedule.v};
  for (int k = 0; k < 3; ++k) {
    if (given[k].second != 0 && given[k].second != have[k]) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", given[k].first, " ", given[k].second, " but ", o.file, " has ", have[k]));
    }
  }
  return schedule;
}

absl::StatusOr<pl::Schedule> ScheduleOf(const Options& o) {
  if (!o.file.empty()) return ScheduleFromFile(o);
  if (o.pp == 0 || o.microbatches == 0) {
    return absl::InvalidArgumentError("--pp and --microbatches are required (or --file)");
  }
  const std::string name = o.schedule.empty() ? "1f1b" : o.schedule;
  const int64_t v = o.v != 0 ? o.v : name == "interleaved" ? 2 : 1;
  return pl::MakeSchedule(name, o.pp, o.microbatches, v);
}

// The textbook bubble fraction of a generated schedule at the default costs, as "formula = a/b";
// empty where there is none. For ZB-H1 (F = I = W) the bubble is (p-1) of the paper's
// (p-1)(F+I-W), so (p-1) / (3m + p-1) as long as every rank reaches its steady state (m >= p).
std::string ClosedForm(const std::string& name, int64_t p, int64_t m, int64_t v, double* value) {
  int64_t den = 0;
  std::string formula;
  if (name == "gpipe" || name == "1f1b") den = m + p - 1, formula = "(p-1)/(m+p-1)";
  if (name == "interleaved") den = v * m + p - 1, formula = "(p-1)/(v*m+p-1)";
  if (name == "zb-h1" && m >= p) den = 3 * m + p - 1, formula = "(p-1)/(3m+p-1)";
  if (den == 0) return "";
  *value = static_cast<double>(p - 1) / den;
  const int64_t g = std::gcd(p - 1, den);
  return absl::StrFormat("%s = %d/%d = %.6f", formula, (p - 1) / (g ? g : 1), den / (g ? g : 1), *value);
}

// The costs, the actions (with --print-actions), the timeline and the statistics.
std::string Report(const Options& o, const pl::Schedule& schedule, const pl::ActionCosts& costs,
                   const pl::SimulationResult& r) {
  std::string out = absl::StrFormat("schedule %s: pp %d, virtual stages %d, micro-batches %d\n",
                                    schedule.name, schedule.pp, schedule.v, schedule.microbatches);
  absl::StrAppendFormat(&out, "costs per chunk: F %g, B %g, I %g, W %g, comm %g\n", costs.forward,
                        costs.backward, costs.backward_input, costs.backward_weight, costs.comm);
  if (o.print_actions) absl::StrAppend(&out, "\n", pl::FormatSchedule(schedule));
  absl::StrAppend(&out, "\n", pl::RenderTimeline(schedule, r), "\n");
  double idle = 0;
  for (double x : r.idle) idle += x;
  absl::StrAppendFormat(&out, "makespan %g\n", r.makespan);
  absl::StrAppendFormat(&out, "bubble fraction %.6f (idle %g / (%d ranks x makespan %g))\n",
                        r.bubble_fraction, idle, schedule.pp, r.makespan);
  double expected = 0;
  const std::string closed =
      o.file.empty() && o.costs.empty()
          ? ClosedForm(schedule.name, schedule.pp, schedule.microbatches, schedule.v, &expected)
          : "";
  if (!closed.empty()) {
    absl::StrAppendFormat(&out, "closed form %s (%s)\n", closed,
                          std::abs(expected - r.bubble_fraction) < 1e-9 ? "matches" : "DIFFERS");
  }
  absl::StrAppend(&out, "rank     busy     idle  peak live activations\n");
  for (int64_t k = 0; k < schedule.pp; ++k) {
    absl::StrAppendFormat(&out, "%4d %8g %8g  %d\n", k, r.busy[k], r.idle[k], r.peak_live[k]);
  }
  return out;
}

int Simulate(const Args& args) {
  auto options = OptionsOf(args);
  if (!options.ok()) return ReportError(kName, options.status(), kExitUsage);
  auto schedule = ScheduleOf(*options);
  if (!schedule.ok()) return ReportError(kName, schedule.status(), kExitUsage);
  pl::ActionCosts costs = pl::ActionCosts::PerChunk(schedule->v);
  if (absl::Status s = ParseCosts(options->costs, &costs); !s.ok()) return ReportError(kName, s, kExitUsage);
  auto result = pl::Simulate(*schedule, costs);
  if (!result.ok()) {
    return ReportError(kName,
                       absl::InvalidArgumentError(absl::StrCat(
                           options->file.empty() ? "" : options->file + ": ", result.status().message())),
                       kExitUsage);
  }
  std::cout << Report(*options, *schedule, costs, *result);
  return kExitOk;
}

}  // namespace

Command ScheduleCommand() {
  return {
      .name = kName,
      .usage =
          "schedule --pp P --microbatches M [--schedule gpipe|1f1b|interleaved|zb-h1] [--virtual-stages V] "
          "[--file SCHEDULE.txt] [--costs F=1,B=2,I=1,W=1,comm=0] [--print-actions]",
      .summary = "simulate a pipeline schedule: timeline and bubble",
      .args = {.flags = {Flag::Value("pp"), Flag::Value("microbatches"), Flag::Value("virtual-stages"),
                         Flag::Value("schedule"), Flag::Value("file"), Flag::Value("costs"),
                         Flag::Bool("print-actions")},
               .max_positionals = 0},
      .run = Simulate};
}

}  // namespace tessera::cli
