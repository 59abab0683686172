// The command-line parser (args.h): one pass over the arguments, flags looked up in the
// command's declaration.
#include "cli/args.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera::cli {
namespace {

const Flag* FindFlag(const ArgSpec& spec, const std::string& name) {
  for (const Flag& flag : spec.flags) {
    if (flag.name == name) return &flag;
  }
  return nullptr;
}

// "a positive integer", "an integer in [0, 1024]": the expected value, from its bounds.
std::string ExpectedInteger(const IntRange& range) {
  if (!range.what.empty()) return range.what;
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (range.max == kMax) {
    if (range.min == kMin) return "an integer";
    if (range.min == 1) return "a positive integer";
    if (range.min == 0) return "a non-negative integer";
    return absl::StrCat("an integer >= ", range.min);
  }
  return absl::StrCat("an integer in [", range.min, ", ", range.max, "]");
}

absl::Status Expected(const std::string& name, const std::string& what, const std::string& got) {
  return absl::InvalidArgumentError(absl::StrCat("--", name, " expects ", what, ", got '", got, "'"));
}

}  // namespace

absl::StatusOr<Args> Args::Parse(const ArgSpec& spec, const std::vector<std::string>& argv) {
  Args args;
  bool flags_ended = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (flags_ended || a.size() < 2 || a[0] != '-') {
      if (spec.max_positionals >= 0 && static_cast<int>(args.positional_.size()) == spec.max_positionals) {
        return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", a, "'",
                                                       spec.extra_positional_note.empty() ? "" : " ",
                                                       spec.extra_positional_note));
      }
      args.positional_.push_back(a);
      continue;
    }
    if (a == "--") {
      flags_ended = true;
      continue;
    }
    if (a == "--help" || a == "-h") {
      args.help_ = true;
      continue;
    }
    std::string name = a.substr(a[1] == '-' ? 2 : 1), value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    const Flag* flag = a[1] == '-' ? FindFlag(spec, name) : nullptr;
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option '", a.substr(0, a.size() - (has_value ? value.size() + 1 : 0)), "'"));
    }
    if (!flag->takes_value()) {
      if (has_value) return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
    } else if (!has_value) {
      if (i + 1 == argv.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs ", flag->value));
      }
      value = argv[++i];
    }
    args.values_[name].push_back(value);
  }
  return args;
}

std::string Args::Get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

const std::vector<std::string>& Args::GetAll(const std::string& name) const {
  static const std::vector<std::string> kNone;
  auto it = values_.find(name);
  return it == values_.end() ? kNone : it->second;
}

absl::StatusOr<int64_t> Args::GetInt(const std::string& name, int64_t fallback, const IntRange& range) const {
  if (!Has(name)) return fallback;
  const std::string text = Get(name);
  int64_t v = 0;
  if (!absl::SimpleAtoi(text, &v) || v < range.min || v > range.max) {
    return Expected(name, ExpectedInteger(range), text);
  }
  return v;
}

absl::StatusOr<double> Args::GetDouble(const std::string& name, double fallback, double min) const {
  if (!Has(name)) return fallback;
  const std::string text = Get(name);
  double v = 0;
  if (!absl::SimpleAtod(text, &v) || !(v >= min)) {
    return Expected(
        name,
        min == -std::numeric_limits<double>::infinity() ? "a number" : absl::StrCat("a number >= ", min),
        text);
  }
  return v;
}

absl::StatusOr<std::string> Args::GetChoice(const std::string& name, const std::string& fallback,
                                            const std::vector<std::string>& choices) const {
  const std::string v = Get(name, fallback);
  if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
    return Expected(name, absl::StrCat("one of ", absl::StrJoin(choices, ", ")), v);
  }
  return v;
}

}  // namespace tessera::cli
