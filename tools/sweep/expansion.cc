// Expansion of a sweep file into runs (expansion.h): the grid product, the list, the random
// samples, their names and run folders.
#include "tools/sweep/expansion.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/hash.h"

namespace tessera::sweep {
namespace {

// A value's text in a name keeps at most this many characters, and the whole suffix about
// kMaxSuffix: enough to tell runs apart at a glance; the index keeps names unique anyway.
constexpr size_t kMaxValueChars = 16;
constexpr size_t kMaxSuffix = 48;

std::string Leaf(const std::string& key) { return key.substr(key.rfind('.') + 1); }

// Draws come from core/hash.h's SplitMix64, whose outputs are fixed by its definition, unlike the
// std:: distributions, whose results differ between standard libraries.
std::string Draw(const RandomParam& p, SplitMix64& rng) {
  const double u = rng.NextUnit();
  switch (p.distribution) {
    case Distribution::kChoice: {
      size_t i = static_cast<size_t>(u * static_cast<double>(p.choices.size()));
      if (i >= p.choices.size()) i = p.choices.size() - 1;
      return p.choices[i];
    }
    case Distribution::kUniform:
    case Distribution::kLogUniform: {
      double value = p.distribution == Distribution::kUniform
                         ? p.lo + u * (p.hi - p.lo)
                         : std::exp(std::log(p.lo) + u * (std::log(p.hi) - std::log(p.lo)));
      if (p.integer) {
        value = std::min(std::max(std::round(value), std::ceil(p.lo)), std::floor(p.hi));
        return absl::StrFormat("%d", static_cast<int64_t>(value));
      }
      // 4 significant digits, kept inside [lo, hi] after rounding.
      std::string text = absl::StrFormat("%.4g", value);
      const double rounded = std::stod(text);
      if (rounded < p.lo) text = absl::StrFormat("%.4g", p.lo);
      if (rounded > p.hi) text = absl::StrFormat("%.4g", p.hi);
      return text;
    }
  }
  return "";
}

}  // namespace

std::string NameSuffix(const std::vector<Override>& overrides) {
  std::string out;
  for (const Override& o : overrides) {
    std::string value;
    for (char c : o.value) {
      if (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '+' || c == '-') value += c;
    }
    if (value.size() > kMaxValueChars) value.resize(kMaxValueChars);
    std::string item = Leaf(o.key) + value;
    if (!out.empty() && out.size() + 1 + item.size() > kMaxSuffix) break;
    if (out.empty() && item.size() > kMaxSuffix) item.resize(kMaxSuffix);
    absl::StrAppend(&out, out.empty() ? "" : "_", item);
  }
  return out;
}

std::string OverridesSummary(const SweepRun& run) {
  std::vector<std::string> parts;
  for (const Override& o : run.overrides) parts.push_back(absl::StrCat(Leaf(o.key), "=", o.value));
  return absl::StrJoin(parts, " ");
}

std::vector<std::string> RunAssignments(const SweepSpec& spec, const SweepRun& run) {
  std::vector<std::string> out;
  for (const Override& o : spec.common) out.push_back(absl::StrCat(o.key, "=", o.value));
  for (const Override& o : run.overrides) out.push_back(absl::StrCat(o.key, "=", o.value));
  out.push_back(absl::StrCat("train.run_dir=", run.run_dir));
  return out;
}

absl::StatusOr<std::vector<SweepRun>> ExpandSweep(const SweepSpec& spec) {
  std::vector<SweepRun> runs;
  auto add = [&](std::vector<Override> overrides, const char* origin) {
    SweepRun run;
    run.index = static_cast<int64_t>(runs.size());
    run.origin = origin;
    run.overrides = std::move(overrides);
    const std::string suffix = NameSuffix(run.overrides);
    run.name = absl::StrFormat("%s-%03d%s%s", spec.name, run.index, suffix.empty() ? "" : "_", suffix);
    run.run_dir = absl::StrCat(spec.runs_dir, "/", spec.name, "/", run.name);
    runs.push_back(std::move(run));
  };

  if (!spec.grid.empty()) {
    // Odometer over the axes: the last axis turns fastest.
    std::vector<size_t> at(spec.grid.size(), 0);
    for (bool done = false; !done;) {
      std::vector<Override> overrides;
      for (size_t a = 0; a < spec.grid.size(); ++a) overrides.push_back(spec.grid[a].values[at[a]]);
      add(std::move(overrides), "grid");
      done = true;
      for (size_t a = spec.grid.size(); a-- > 0;) {
        if (++at[a] < spec.grid[a].values.size()) {
          done = false;
          break;
        }
        at[a] = 0;
      }
    }
  }
  for (const std::vector<Override>& entry : spec.list) add(entry, "list");
  SplitMix64 rng(spec.random_seed);
  for (int64_t s = 0; s < spec.random_samples; ++s) {
    std::vector<Override> overrides;
    for (const RandomParam& p : spec.random_params) overrides.push_back({p.key, Draw(p, rng), p.line});
    add(std::move(overrides), "random");
  }
  std::set<std::string> names;
  for (const SweepRun& r : runs) {
    if (!names.insert(r.name).second) {
      return absl::InternalError(absl::StrCat(spec.path, ": two runs named '", r.name, "'"));
    }
  }
  return runs;
}

}  // namespace tessera::sweep
