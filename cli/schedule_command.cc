// `tessera schedule` (see schedule_command.h): argument parsing and printing only; the schedule,
// its checks and its timing live in schedule.cc and simulator.cc.
#include "cli/schedule_command.h"

#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <numeric>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/file_util.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/pipeline/simulator.h"

namespace tessera::parallel::pipeline {
namespace {

constexpr int kExitUsage = 2;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "tessera: error: %s\n", std::string(status.message()).c_str());
  return kExitUsage;
}

struct Options {
  int64_t pp = 0, microbatches = 0, v = 0;  // 0: not given
  std::string schedule, file, costs;
  bool print_actions = false;
};

absl::StatusOr<Options> ParseOptions(const std::vector<std::string>& args) {
  Options o;
  const std::map<std::string, bool> takes_value = {
      {"pp", true},   {"microbatches", true}, {"virtual-stages", true}, {"schedule", true},
      {"file", true}, {"costs", true},        {"print-actions", false}};
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i].rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("schedule: unexpected argument '", args[i], "'"));
    }
    std::string name = args[i].substr(2), value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1), name = name.substr(0, eq), has_value = true;
    }
    auto it = takes_value.find(name);
    if (it == takes_value.end())
      return absl::InvalidArgumentError(absl::StrCat("schedule: unknown option '--", name, "'"));
    if (!it->second) {
      if (has_value) return absl::InvalidArgumentError(absl::StrCat("schedule: --", name, " takes no value"));
      o.print_actions = true;
      continue;
    }
    if (!has_value) {
      if (i + 1 == args.size())
        return absl::InvalidArgumentError(absl::StrCat("schedule: --", name, " needs a value"));
      value = args[++i];
    }
    if (name == "schedule") o.schedule = value;
    if (name == "file") o.file = value;
    if (name == "costs") o.costs = value;
    int64_t* number = name == "pp"               ? &o.pp
                      : name == "microbatches"   ? &o.microbatches
                      : name == "virtual-stages" ? &o.v
                                                 : nullptr;
    if (number != nullptr && (!absl::SimpleAtoi(value, number) || *number < 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("schedule: --", name, " expects a positive integer, got '", value, "'"));
    }
  }
  return o;
}

// "F=1,B=2,comm=0.1": the costs named replace those of `costs`.
absl::Status ParseCosts(const std::string& text, ActionCosts* costs) {
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
      return absl::InvalidArgumentError(
          absl::StrCat("schedule: --costs item '", item,
                       "' must be KEY=VALUE with KEY one of F, B, I, W, comm and VALUE >= 0"));
    }
    *it->second = value;
  }
  return absl::OkStatus();
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

}  // namespace

int ScheduleCommand(const std::vector<std::string>& args) {
  auto options = ParseOptions(args);
  if (!options.ok()) return Fail(options.status());
  const Options& o = *options;
  Schedule schedule;
  if (!o.file.empty()) {
    if (!o.schedule.empty())
      return Fail(absl::InvalidArgumentError("schedule: give --schedule or --file, not both"));
    auto text = ReadFileToString(o.file);
    if (!text.ok()) return Fail(text.status());
    auto parsed = ParseSchedule(*text);
    if (!parsed.ok())
      return Fail(absl::InvalidArgumentError(absl::StrCat(o.file, ": ", parsed.status().message())));
    schedule = std::move(*parsed);
    if (schedule.name.empty()) schedule.name = o.file;
    const std::pair<const char*, int64_t> given[] = {
        {"pp", o.pp}, {"microbatches", o.microbatches}, {"virtual-stages", o.v}};
    const int64_t have[] = {schedule.pp, schedule.microbatches, schedule.v};
    for (int k = 0; k < 3; ++k) {
      if (given[k].second != 0 && given[k].second != have[k]) {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
            "schedule: --", given[k].first, " ", given[k].second, " but ", o.file, " has ", have[k])));
      }
    }
  } else {
    if (o.pp == 0 || o.microbatches == 0) {
      return Fail(absl::InvalidArgumentError("schedule: --pp and --microbatches are required (or --file)"));
    }
    const std::string name = o.schedule.empty() ? "1f1b" : o.schedule;
    const int64_t v = o.v != 0 ? o.v : name == "interleaved" ? 2 : 1;
    auto made = MakeSchedule(name, o.pp, o.microbatches, v);
    if (!made.ok()) return Fail(made.status());
    schedule = std::move(*made);
  }

  ActionCosts costs = ActionCosts::PerChunk(schedule.v);
  if (absl::Status s = ParseCosts(o.costs, &costs); !s.ok()) return Fail(s);
  auto result = Simulate(schedule, costs);
  if (!result.ok()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(o.file.empty() ? "" : o.file + ": ", result.status().message())));
  }

  std::string out = absl::StrFormat("schedule %s: pp %d, virtual stages %d, micro-batches %d\n",
                                    schedule.name, schedule.pp, schedule.v, schedule.microbatches);
  absl::StrAppendFormat(&out, "costs per chunk: F %g, B %g, I %g, W %g, comm %g\n", costs.forward,
                        costs.backward, costs.backward_input, costs.backward_weight, costs.comm);
  if (o.print_actions) absl::StrAppend(&out, "\n", FormatSchedule(schedule));
  absl::StrAppend(&out, "\n", RenderTimeline(schedule, *result), "\n");
  const SimulationResult& r = *result;
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
  std::cout << out;
  return 0;
}

}  // namespace tessera::parallel::pipeline
