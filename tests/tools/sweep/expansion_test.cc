// Tests of trainer/sweep/expansion: the grid product's order, list and random runs after it,
// deterministic random samples (same seed, same runs; more samples keep the earlier ones),
// values inside their ranges, names and run folders.
#include "tools/sweep/expansion.h"

#include <cmath>
#include <set>
#include <string>

#include "tests/catch_compat.h"
#include "tests/tools/sweep/sweep_test_util.h"

using tessera::sweep::ExpandSweep;
using tessera::sweep::NameSuffix;
using tessera::sweep::Override;
using tessera::sweep::ParseSweepYaml;
using tessera::sweep::RunAssignments;
using tessera::sweep::SweepRun;
using tessera::sweep::SweepSpec;
using tessera::sweep::testing::TempDir;

namespace {

std::vector<SweepRun> Expand(const std::string& body, SweepSpec* spec_out = nullptr) {
  TempDir dir;
  dir.Write("base.yaml", "");
  auto spec = ParseSweepYaml("name: s\nbase: base.yaml\n" + body, dir.path() + "/sweep.yaml");
  CATCH_REQUIRE(spec.ok());
  auto runs = ExpandSweep(*spec);
  CATCH_REQUIRE(runs.ok());
  if (spec_out != nullptr) *spec_out = *spec;
  return *runs;
}

std::string ValueOf(const SweepRun& run, const std::string& key) {
  for (const Override& o : run.overrides) {
    if (o.key == key) return o.value;
  }
  return "<none>";
}

}  // namespace

CATCH_TEST_CASE("expansion: grid product in file order with the last key fastest") {
  const auto runs = Expand("grid:\n  train.lr: [1e-3, 3e-3]\n  model.n_layers: [2, 4, 8]\n");
  CATCH_REQUIRE(runs.size() == 6);
  const char* lr[] = {"1e-3", "1e-3", "1e-3", "3e-3", "3e-3", "3e-3"};
  const char* layers[] = {"2", "4", "8", "2", "4", "8"};
  for (size_t i = 0; i < runs.size(); ++i) {
    CATCH_CHECK(runs[i].index == static_cast<int64_t>(i));
    CATCH_CHECK(runs[i].origin == "grid");
    CATCH_CHECK(ValueOf(runs[i], "train.lr") == lr[i]);
    CATCH_CHECK(ValueOf(runs[i], "model.n_layers") == layers[i]);
  }
  CATCH_CHECK(runs[0].name == "s-000_lr1e-3_n_layers2");
  CATCH_CHECK(runs[5].name == "s-005_lr3e-3_n_layers8");
  CATCH_CHECK(runs[5].run_dir == "runs/s/s-005_lr3e-3_n_layers8");
}

CATCH_TEST_CASE("expansion: grid then list then random, set: first and run_dir last") {
  SweepSpec spec;
  const auto runs = Expand(
      "runs_dir: out\n"
      "set: {train.steps: 10}\n"
      "grid: {train.lr: [0.1, 0.2]}\n"
      "list:\n  - {model.dim: 64}\n  - {}\n"
      "random: {samples: 2, seed: 1, params: {train.lr: {uniform: [0.01, 0.02]}}}\n",
      &spec);
  CATCH_REQUIRE(runs.size() == 6);
  const char* origins[] = {"grid", "grid", "list", "list", "random", "random"};
  for (size_t i = 0; i < runs.size(); ++i) CATCH_CHECK(runs[i].origin == origins[i]);
  CATCH_CHECK(runs[2].name == "s-002_dim64");
  CATCH_CHECK(runs[3].name == "s-003");  // the base config as it is
  CATCH_CHECK(RunAssignments(spec, runs[2]) ==
              std::vector<std::string>{"train.steps=10", "model.dim=64", "train.run_dir=out/s/s-002_dim64"});
}

CATCH_TEST_CASE("expansion: random samples are deterministic and in range and stable when more are drawn") {
  const std::string params =
      "  params:\n"
      "    train.lr: {log_uniform: [1e-5, 1e-2]}\n"
      "    train.weight_decay: {uniform: [0, 0.3]}\n"
      "    model.n_layers: {uniform: [2, 6]}\n"
      "    train.precision: {choice: [fp32, bf16]}\n";
  const auto a = Expand("random:\n  samples: 20\n  seed: 42\n" + params);
  const auto b = Expand("random:\n  samples: 20\n  seed: 42\n" + params);
  const auto more = Expand("random:\n  samples: 30\n  seed: 42\n" + params);
  const auto other = Expand("random:\n  samples: 20\n  seed: 43\n" + params);
  CATCH_REQUIRE(a.size() == 20);
  std::set<std::string> lrs, precisions, layers;
  int differs = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    CATCH_CHECK(a[i].overrides == b[i].overrides);
    CATCH_CHECK(a[i].name == b[i].name);
    CATCH_CHECK(a[i].overrides == more[i].overrides);
    if (a[i].overrides != other[i].overrides) ++differs;
    const double lr = std::stod(ValueOf(a[i], "train.lr"));
    CATCH_CHECK(lr >= 1e-5);
    CATCH_CHECK(lr <= 1e-2);
    const double wd = std::stod(ValueOf(a[i], "train.weight_decay"));
    CATCH_CHECK(wd >= 0);
    CATCH_CHECK(wd <= 0.3);
    const std::string n = ValueOf(a[i], "model.n_layers");
    CATCH_CHECK(n.find_first_not_of("0123456789") ==
                std::string::npos);  // integer keys are drawn as integers
    CATCH_CHECK(std::stoi(n) >= 2);
    CATCH_CHECK(std::stoi(n) <= 6);
    lrs.insert(ValueOf(a[i], "train.lr"));
    precisions.insert(ValueOf(a[i], "train.precision"));
    layers.insert(n);
  }
  // A different seed gives different runs; 20 draws are all distinct and cover both choices.
  // The seeds are fixed, so these are deterministic; they catch a generator that ignores its seed,
  // repeats itself or never reaches part of a range.
  CATCH_CHECK(differs == 20);
  CATCH_CHECK(lrs.size() == 20);
  CATCH_CHECK(precisions.size() == 2);
  CATCH_CHECK(layers.size() >= 4);
  // log_uniform spreads over the decades: some draws below 1e-4 and some above 1e-3.
  bool low = false, high = false;
  for (const std::string& lr : lrs) {
    low = low || std::stod(lr) < 1e-4;
    high = high || std::stod(lr) > 1e-3;
  }
  CATCH_CHECK(low);
  CATCH_CHECK(high);
}

CATCH_TEST_CASE("expansion: name suffixes are short and safe for paths") {
  CATCH_CHECK(NameSuffix({{"train.lr", "3e-4", 0}}) == "lr3e-4");
  CATCH_CHECK(NameSuffix({{"data.train", "[{prefix: /data/x y, weight: 1}]", 0}}) == "trainprefixdataxyweig");
  const std::string long_suffix = NameSuffix({{"train.warmup_steps", "100000", 0},
                                              {"train.weight_decay", "0.123456", 0},
                                              {"model.n_layers", "12", 0},
                                              {"train.precision", "bf16", 0}});
  CATCH_CHECK(long_suffix.size() <= 48);
  CATCH_CHECK(long_suffix.rfind("warmup_steps100000_weight_decay0.123456", 0) == 0);
}
