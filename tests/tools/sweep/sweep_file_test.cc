// Tests of trainer/sweep/sweep_file: a complete sweep file read back, and bad sweep files whose
// errors name the file, the line and the key (with a suggestion for a near miss).
#include "tools/sweep/sweep_file.h"

#include <string>

#include "tests/catch_compat.h"
#include "tests/tools/sweep/sweep_test_util.h"

using tessera::sweep::Distribution;
using tessera::sweep::ParseSweepYaml;
using tessera::sweep::ReadSweepFile;
using tessera::sweep::SweepSpec;
using tessera::sweep::testing::TempDir;

namespace {

// Parses `yaml` as DIR/sweep.yaml next to an (empty) DIR/base.yaml and returns the error text,
// or "" when it parsed.
std::string ErrorOf(const std::string& yaml) {
  TempDir dir;
  dir.Write("base.yaml", "");
  auto spec = ParseSweepYaml(yaml, dir.path() + "/sweep.yaml");
  if (spec.ok()) return "";
  // Keep only what follows the folder, which differs per run.
  std::string message(spec.status().message());
  const std::string prefix = dir.path() + "/";
  for (size_t at; (at = message.find(prefix)) != std::string::npos;) message.erase(at, prefix.size());
  return message;
}

}  // namespace

CATCH_TEST_CASE("sweep file: every section read and base resolved against the sweep file's folder") {
  TempDir dir;
  dir.Write("configs/base.yaml", "train:\n  steps: 5\n");
  const std::string path =
      dir.Write("configs/sweeps/s.yaml",
                "name: lr-sweep\n"
                "base: ../base.yaml\n"
                "ranks: 4\n"
                "mpirun: [--bind-to, none]\n"
                "runs_dir: /scratch/runs\n"
                "set: {train.steps: 100, data.train: [{prefix: /d/text, weight: 1}]}\n"
                "grid:\n"
                "  train.lr: [1e-3, 3e-3]\n"
                "  model.n_layers: [2, 4, 8]\n"
                "list:\n"
                "  - {train.lr: 1e-2, train.precision: bf16}\n"
                "  - {}\n"
                "random:\n"
                "  samples: 3\n"
                "  seed: 7\n"
                "  params:\n"
                "    train.lr: {log_uniform: [1e-4, 1e-2]}\n"
                "    model.n_layers: {uniform: [2, 6]}\n"
                "    train.precision: {choice: [fp32, bf16]}\n"
                "slurm: {nodes: 1, time: '02:00:00', partition: gpu, sbatch: [--qos=high]}\n");
  auto spec = ReadSweepFile(path);
  CATCH_REQUIRE(spec.ok());
  CATCH_CHECK(spec->name == "lr-sweep");
  CATCH_CHECK(spec->base == dir.path() + "/configs/base.yaml");
  CATCH_CHECK(spec->ranks == 4);
  CATCH_CHECK(spec->mpirun_args == std::vector<std::string>{"--bind-to", "none"});
  CATCH_CHECK(spec->runs_dir == "/scratch/runs");
  CATCH_REQUIRE(spec->common.size() == 2);
  CATCH_CHECK(spec->common[0].key == "train.steps");
  CATCH_CHECK(spec->common[0].value == "100");
  CATCH_CHECK(spec->common[0].line == 6);
  CATCH_CHECK(spec->common[1].value == "[{prefix: /d/text, weight: 1}]");
  CATCH_REQUIRE(spec->grid.size() == 2);
  CATCH_CHECK(spec->grid[0].key == "train.lr");
  CATCH_CHECK(spec->grid[0].values.size() == 2);
  CATCH_CHECK(spec->grid[1].values[2].value == "8");
  CATCH_CHECK(spec->grid[1].line == 9);
  CATCH_REQUIRE(spec->list.size() == 2);
  CATCH_CHECK(spec->list[0].size() == 2);
  CATCH_CHECK(spec->list[1].empty());
  CATCH_CHECK(spec->random_samples == 3);
  CATCH_CHECK(spec->random_seed == 7);
  CATCH_REQUIRE(spec->random_params.size() == 3);
  CATCH_CHECK(spec->random_params[0].distribution == Distribution::kLogUniform);
  CATCH_CHECK(!spec->random_params[0].integer);
  CATCH_CHECK(spec->random_params[1].integer);
  CATCH_CHECK(spec->random_params[2].choices == std::vector<std::string>{"fp32", "bf16"});
  // Slurm shape from ranks: 1 node of 4 tasks, a GPU each.
  CATCH_CHECK(spec->slurm.nodes == 1);
  CATCH_CHECK(spec->slurm.ntasks_per_node == 4);
  CATCH_CHECK(spec->slurm.gpus_per_node == 4);
  CATCH_CHECK(spec->slurm.time == "02:00:00");
  CATCH_CHECK(spec->slurm.sbatch == std::vector<std::string>{"--qos=high"});
}

CATCH_TEST_CASE("sweep file: quoted strings stay strings and lists and mappings become flow YAML") {
  TempDir dir;
  dir.Write("base.yaml", "");
  auto spec =
      ParseSweepYaml("name: s\nbase: base.yaml\nlist:\n  - {train.device: \"cpu\", data.val: [a, b]}\n",
                     dir.path() + "/s.yaml");
  CATCH_REQUIRE(spec.ok());
  CATCH_CHECK(spec->list[0][0].value == "\"cpu\"");
  CATCH_CHECK(spec->list[0][1].value == "[a, b]");
}

CATCH_TEST_CASE("sweep file: errors name the file and the line and the key") {
  const std::string head = "name: s\nbase: base.yaml\n";
  CATCH_CHECK(ErrorOf(head + "grid:\n  train.lrr: [1e-3]\n") ==
              "sweep.yaml:4: grid: unknown key 'train.lrr' (did you mean 'train.lr'?)");
  CATCH_CHECK(ErrorOf(head + "grid:\n  train.lr: [1e-3, fast]\n") ==
              "sweep.yaml:4: grid: key 'train.lr' expects number, got 'fast'");
  CATCH_CHECK(ErrorOf(head + "grid:\n  train.lr: 1e-3\n") ==
              "sweep.yaml:4: grid: key 'train.lr' expects a list of values, e.g. [1e-3, 3e-3]");
  CATCH_CHECK(ErrorOf(head + "grid:\n  train.lr: []\n") ==
              "sweep.yaml:4: grid: key 'train.lr' has an empty list of values");
  CATCH_CHECK(ErrorOf(head + "grid:\n  train: [1]\n") ==
              "sweep.yaml:4: grid: 'train' is a section: use dotted keys such as 'train.seq_len'");
  CATCH_CHECK(ErrorOf(head + "gird:\n  train.lr: [1]\n")
                  .rfind("sweep.yaml:3: unknown key 'gird': expected one of", 0) == 0);
  CATCH_CHECK(ErrorOf(head + "gird:\n  train.lr: [1]\n").find("(did you mean 'grid'?)") != std::string::npos);
  CATCH_CHECK(ErrorOf(head + "list:\n  - {train.lr: 1e-3}\n  - {model.dimm: 3}\n") ==
              "sweep.yaml:5: list: unknown key 'model.dimm' (did you mean 'model.dim'?)");
  CATCH_CHECK(ErrorOf(head + "list:\n  - {train.run_dir: x}\n")
                  .find("sweep.yaml:4: list: train.run_dir is set by the sweep") == 0);
  CATCH_CHECK(ErrorOf(head + "set:\n  train.lr: 1\n  train.lr: 2\n") ==
              "sweep.yaml:5: set: key 'train.lr' appears twice");
  CATCH_CHECK(ErrorOf(head + "random:\n  samples: 2\n  params:\n    train.lr: {uniform: [0.1, 0.01]}\n") ==
              "sweep.yaml:6: random.params: train.lr: uniform [0.1, 0.01]: expected lo < hi");
  CATCH_CHECK(ErrorOf(head + "random:\n  samples: 2\n  params:\n    train.lr: {log_uniform: [0, 0.01]}\n") ==
              "sweep.yaml:6: random.params: train.lr: log_uniform [0, 0.01]: expected 0 < lo < hi");
  CATCH_CHECK(
      ErrorOf(head + "random:\n  samples: 2\n  params:\n    train.lr: {normal: [0, 1]}\n") ==
      "sweep.yaml:6: random.params: train.lr: unknown distribution 'normal': expected uniform, log_uniform "
      "or choice");
  CATCH_CHECK(ErrorOf(head + "random:\n  samples: 2\n  params:\n    train.precision: {uniform: [0, 1]}\n") ==
              "sweep.yaml:6: random.params: train.precision is not a number: only choice applies");
  CATCH_CHECK(ErrorOf(head + "random:\n  samples: 2\n  params:\n    train.lr: {uniform: [0, 11]}\n") ==
              "sweep.yaml:6: random.params: train.lr: [0, 11] leaves the key's range [0, 10]");
  CATCH_CHECK(ErrorOf(head + "random:\n  params:\n    train.lr: {uniform: [0, 1]}\n") ==
              "sweep.yaml:4: random: 'samples' (the number of runs to draw) is missing");
  CATCH_CHECK(ErrorOf(head + "ranks: 0\ngrid: {train.lr: [1]}\n") ==
              "sweep.yaml:3: 'ranks' = 0: expected an integer >= 1");
  CATCH_CHECK(ErrorOf(head + "ranks: 6\nslurm: {ntasks_per_node: 4}\ngrid: {train.lr: [1]}\n") ==
              "sweep.yaml:4: slurm.ntasks_per_node = 4 does not divide ranks = 6: set slurm.nodes and "
              "slurm.ntasks_per_node");
  CATCH_CHECK(ErrorOf(head + "slurm: {node: 2}\ngrid: {train.lr: [1]}\n") ==
              "sweep.yaml:3: slurm: unknown key 'node' (did you mean 'nodes'?)");
  CATCH_CHECK(ErrorOf("name: s\nbase: missing.yaml\n")
                  .find("sweep.yaml:2: base config 'missing.yaml' does not exist") == 0);
  CATCH_CHECK(ErrorOf("name: a/b\nbase: base.yaml\n").find("sweep.yaml:1: name 'a/b': expected letters") ==
              0);
  CATCH_CHECK(ErrorOf("base: base.yaml\ngrid: {train.lr: [1]}\n") == "sweep.yaml: 'name' is missing");
  CATCH_CHECK(ErrorOf(head) == "sweep.yaml: no runs: give grid, list or random (docs/sweeps.md)");
  CATCH_CHECK(ErrorOf(head + "grid: {train.lr: [1]\n").find("sweep.yaml:") ==
              0);  // YAML syntax error with a line
}
