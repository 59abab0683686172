// Reading a sweep file (sweep_file.h): YAML with line numbers, every key and value checked against
// the config schema by applying it to a scratch config, so that errors carry the sweep file's line
// instead of the `--set` they would otherwise become.
#include "tools/sweep/sweep_file.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "config/config.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "core/strings.h"

namespace tessera::sweep {
namespace {

namespace fs = std::filesystem;

// Tasks per node when a sweep file says nothing: the GPUs of a typical node.
constexpr int64_t kDefaultTasksPerNode = 8;

const std::vector<std::string>& TopLevelKeys() {
  static const std::vector<std::string>* keys = new std::vector<std::string>{
      "name", "base", "runs_dir", "ranks", "mpirun", "set", "grid", "list", "random", "slurm"};
  return *keys;
}

std::string Suggest(const std::string& key, const std::vector<std::string>& known) {
  return DidYouMean(key, known, /*below=*/3);  // only close matches are worth suggesting
}

class Parser {
 public:
  explicit Parser(std::string path) : path_(std::move(path)) {}

  absl::Status Error(const YAML::Node& at, const std::string& message) const {
    return absl::InvalidArgumentError(absl::StrCat(Where(at), ": ", message));
  }
  std::string Where(const YAML::Node& at) const {
    const YAML::Mark mark = at.Mark();
    return mark.is_null() ? path_ : absl::StrCat(path_, ":", mark.line + 1);
  }
  static int Line(const YAML::Node& at) { return at.Mark().is_null() ? 0 : at.Mark().line + 1; }

  absl::StatusOr<std::string> Scalar(const YAML::Node& node, const std::string& what) const {
    if (!node.IsScalar()) return Error(node, absl::StrCat("'", what, "' expects a single value"));
    return node.Scalar();
  }

  absl::StatusOr<int64_t> Integer(const YAML::Node& node, const std::string& what, int64_t min) const {
    int64_t value = 0;
    if (!node.IsScalar() || !YAML::convert<int64_t>::decode(node, value)) {
      return Error(node, absl::StrCat("'", what, "' expects an integer, got '", Text(node), "'"));
    }
    if (value < min) {
      return Error(node, absl::StrCat("'", what, "' = ", value, ": expected an integer >= ", min));
    }
    return value;
  }

  absl::StatusOr<double> Number(const YAML::Node& node, const std::string& what) const {
    double value = 0;
    if (!node.IsScalar() || !YAML::convert<double>::decode(node, value) || !std::isfinite(value)) {
      return Error(node, absl::StrCat("'", what, "' expects a finite number, got '", Text(node), "'"));
    }
    return value;
  }

  absl::StatusOr<std::vector<std::string>> StringList(const YAML::Node& node, const std::string& what) const {
    std::vector<std::string> out;
    if (node.IsScalar()) {
      out.push_back(node.Scalar());
      return out;
    }
    if (!node.IsSequence()) return Error(node, absl::StrCat("'", what, "' expects a list of strings"));
    for (const YAML::Node& item : node) {
      TS_ASSIGN_OR_RETURN(std::string s, Scalar(item, what));
      out.push_back(std::move(s));
    }
    return out;
  }

  // A value as `--set key=VALUE` takes it: plain scalars as written, quoted ones quoted, lists
  // and mappings in flow style.
  static std::string Text(const YAML::Node& node) {
    YAML::Emitter out;
    if (node.IsScalar()) {
      if (node.Tag() != "!") return node.Scalar();
      out << YAML::DoubleQuoted << node.Scalar();
    } else {
      out << YAML::Flow << node;
    }
    return out.c_str();
  }

  // Checks `key: value` against the schema by applying it to a scratch config.
  absl::StatusOr<Override> CheckOverride(const YAML::Node& key_node, const YAML::Node& value,
                                         const std::string& section) const {
    if (!key_node.IsScalar()) return Error(key_node, absl::StrCat(section, ": keys must be plain names"));
    const std::string key = key_node.Scalar();
    if (key == "train.run_dir") {
      return Error(key_node, absl::StrCat(section,
                                          ": train.run_dir is set by the sweep for each run "
                                          "(RUNS_DIR/NAME/RUN); set runs_dir: at the top level instead"));
    }
    if (!value.IsDefined() || value.IsNull()) {
      return Error(key_node, absl::StrCat(section, ": key '", key, "' has no value"));
    }
    Override o{key, Text(value), Line(value) ? Line(value) : Line(key_node)};
    const std::string assignment = absl::StrCat(key, "=", o.value);
    Config scratch;
    if (absl::Status s = ApplyOverride(scratch, assignment); !s.ok()) {
      // ApplyOverride's messages start with "--set KEY=VALUE: "; here the line says where.
      std::string message(s.message());
      const std::string prefix = absl::StrCat("--set ", assignment, ": ");
      if (message.rfind(prefix, 0) == 0) message = message.substr(prefix.size());
      if (message.find("unknown key") != std::string::npos && IsSection(key)) {
        message = absl::StrCat("'", key, "' is a section: use dotted keys such as '", key, ".",
                               FirstLeaf(key), "'");
      }
      return Error(key_node, absl::StrCat(section, ": ", message));
    }
    return o;
  }

  // A mapping of config keys to values (`set:` and each entry of `list:`).
  absl::StatusOr<std::vector<Override>> OverrideMap(const YAML::Node& node,
                                                    const std::string& section) const {
    std::vector<Override> out;
    if (node.IsNull()) return out;
    if (!node.IsMap()) {
      return Error(
          node,
          absl::StrCat(section, ": expected a mapping of config keys to values, e.g. {train.lr: 3e-4}"));
    }
    std::set<std::string> seen;
    for (const auto& item : node) {
      TS_ASSIGN_OR_RETURN(Override o, CheckOverride(item.first, item.second, section));
      if (!seen.insert(o.key).second) {
        return Error(item.first, absl::StrCat(section, ": key '", o.key, "' appears twice"));
      }
      out.push_back(std::move(o));
    }
    return out;
  }

  absl::Status ParseGrid(const YAML::Node& node, SweepSpec& spec) const {
    if (!node.IsMap()) {
      return Error(
          node, "grid: expected a mapping of config keys to lists of values, e.g. {train.lr: [1e-3, 3e-3]}");
    }
    std::set<std::string> seen;
    for (const auto& item : node) {
      const YAML::Node& values = item.second;
      GridAxis axis;
      axis.line = Line(item.first);
      if (!values.IsSequence()) {
        return Error(item.first, absl::StrCat("grid: key '", Text(item.first),
                                              "' expects a list of values, e.g. [1e-3, 3e-3]"));
      }
      if (values.size() == 0) {
        return Error(item.first,
                     absl::StrCat("grid: key '", Text(item.first), "' has an empty list of values"));
      }
      for (const YAML::Node& v : values) {
        TS_ASSIGN_OR_RETURN(Override o, CheckOverride(item.first, v, "grid"));
        axis.key = o.key;
        axis.values.push_back(std::move(o));
      }
      if (!seen.insert(axis.key).second) {
        return Error(item.first, absl::StrCat("grid: key '", axis.key, "' appears twice"));
      }
      spec.grid.push_back(std::move(axis));
    }
    return absl::OkStatus();
  }

  absl::Status ParseList(const YAML::Node& node, SweepSpec& spec) const {
    if (!node.IsSequence()) {
      return Error(node, "list: expected a list of mappings, e.g. [{train.lr: 1e-3, model.dim: 128}]");
    }
    for (const YAML::Node& entry : node) {
      TS_ASSIGN_OR_RETURN(std::vector<Override> run, OverrideMap(entry, "list"));
      spec.list.push_back(std::move(run));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<RandomParam> ParseRandomParam(const YAML::Node& key_node, const YAML::Node& value) const {
    RandomParam p;
    p.line = Line(key_node);
    if (!key_node.IsScalar()) return Error(key_node, "random.params: keys must be plain names");
    p.key = key_node.Scalar();
    const FieldSpec* field = nullptr;
    for (const FieldSpec& f : ConfigSchema()) {
      if (f.key == p.key) field = &f;
    }
    if (field == nullptr || p.key == "train.run_dir") {
      // CheckOverride words the error (unknown key with a suggestion, or run_dir).
      TS_RETURN_IF_ERROR(CheckOverride(key_node, YAML::Node("0"), "random.params").status());
      return Error(key_node, absl::StrCat("random.params: unknown key '", p.key, "'"));
    }
    if (!value.IsMap() || value.size() != 1) {
      return Error(key_node, absl::StrCat("random.params: key '", p.key,
                                          "' expects one of {uniform: [lo, hi]}, "
                                          "{log_uniform: [lo, hi]} or {choice: [a, b, ...]}"));
    }
    const YAML::Node kind_node = value.begin()->first;
    const YAML::Node args = value.begin()->second;
    const std::string kind = kind_node.IsScalar() ? kind_node.Scalar() : "";
    if (kind == "choice") {
      p.distribution = Distribution::kChoice;
      if (!args.IsSequence() || args.size() == 0) {
        return Error(kind_node,
                     absl::StrCat("random.params: ", p.key, ": choice expects a non-empty list of values"));
      }
      for (const YAML::Node& v : args) {
        TS_ASSIGN_OR_RETURN(Override o, CheckOverride(key_node, v, "random.params"));
        p.choices.push_back(o.value);
      }
      return p;
    }
    if (kind != "uniform" && kind != "log_uniform") {
      return Error(kind_node, absl::StrCat("random.params: ", p.key, ": unknown distribution '", kind,
                                           "': expected uniform, log_uniform or choice",
                                           Suggest(kind, {"uniform", "log_uniform", "choice"})));
    }
    p.distribution = kind == "uniform" ? Distribution::kUniform : Distribution::kLogUniform;
    if (field->type != FieldType::kInt && field->type != FieldType::kFloat) {
      return Error(kind_node,
                   absl::StrCat("random.params: ", p.key, " is not a number: only choice applies"));
    }
    p.integer = field->type == FieldType::kInt;
    if (!args.IsSequence() || args.size() != 2) {
      return Error(kind_node, absl::StrCat("random.params: ", p.key, ": ", kind, " expects [lo, hi]"));
    }
    TS_ASSIGN_OR_RETURN(p.lo, Number(args[0], p.key));
    TS_ASSIGN_OR_RETURN(p.hi, Number(args[1], p.key));
    if (!(p.lo < p.hi)) {
      return Error(kind_node, absl::StrCat("random.params: ", p.key, ": ", kind, " [", p.lo, ", ", p.hi,
                                           "]: expected lo < hi"));
    }
    if (p.distribution == Distribution::kLogUniform && p.lo <= 0) {
      return Error(kind_node, absl::StrCat("random.params: ", p.key, ": log_uniform [", p.lo, ", ", p.hi,
                                           "]: expected 0 < lo < hi"));
    }
    if (p.integer && std::ceil(p.lo) > std::floor(p.hi)) {
      return Error(kind_node,
                   absl::StrCat("random.params: ", p.key, ": [", p.lo, ", ", p.hi, "] holds no integer"));
    }
    if (field->has_range && (p.lo < field->min || p.hi > field->max)) {
      return Error(kind_node, absl::StrCat("random.params: ", p.key, ": [", p.lo, ", ", p.hi,
                                           "] leaves the key's range [", field->min, ", ", field->max, "]"));
    }
    return p;
  }

  absl::Status ParseRandom(const YAML::Node& node, SweepSpec& spec) const {
    if (!node.IsMap()) return Error(node, "random: expected a mapping with samples, seed and params");
    bool has_samples = false;
    for (const auto& item : node) {
      const std::string key = item.first.IsScalar() ? item.first.Scalar() : "";
      if (key == "samples") {
        TS_ASSIGN_OR_RETURN(spec.random_samples, Integer(item.second, "random.samples", 1));
        has_samples = true;
      } else if (key == "seed") {
        TS_ASSIGN_OR_RETURN(int64_t seed, Integer(item.second, "random.seed", 0));
        spec.random_seed = static_cast<uint64_t>(seed);
      } else if (key == "params") {
        if (!item.second.IsMap() || item.second.size() == 0) {
          return Error(item.first, "random.params: expected a mapping of config keys to distributions");
        }
        std::set<std::string> seen;
        for (const auto& param : item.second) {
          TS_ASSIGN_OR_RETURN(RandomParam p, ParseRandomParam(param.first, param.second));
          if (!seen.insert(p.key).second) {
            return Error(param.first, absl::StrCat("random.params: key '", p.key, "' appears twice"));
          }
          spec.random_params.push_back(std::move(p));
        }
      } else {
        return Error(item.first,
                     absl::StrCat("random: unknown key '", key, "': expected samples, seed or params",
                                  Suggest(key, {"samples", "seed", "params"})));
      }
    }
    if (!has_samples) return Error(node, "random: 'samples' (the number of runs to draw) is missing");
    if (spec.random_params.empty()) return Error(node, "random: 'params' (what to draw) is missing");
    return absl::OkStatus();
  }

  absl::Status ParseSlurm(const YAML::Node& node, SweepSpec& spec) const {
    if (!node.IsMap()) return Error(node, "slurm: expected a mapping (nodes, ntasks_per_node, time, ...)");
    static const std::vector<std::string> keys = {
        "nodes",   "ntasks_per_node", "gpus_per_node", "cpus_per_task", "time", "partition",
        "account", "max_parallel",    "sbatch",        "setup",         "srun"};
    SlurmOptions& s = spec.slurm;
    for (const auto& item : node) {
      const std::string key = item.first.IsScalar() ? item.first.Scalar() : "";
      const std::string what = absl::StrCat("slurm.", key);
      const YAML::Node& v = item.second;
      if (key == "nodes") {
        TS_ASSIGN_OR_RETURN(s.nodes, Integer(v, what, 1));
      } else if (key == "ntasks_per_node") {
        TS_ASSIGN_OR_RETURN(s.ntasks_per_node, Integer(v, what, 1));
      } else if (key == "gpus_per_node") {
        TS_ASSIGN_OR_RETURN(s.gpus_per_node, Integer(v, what, 0));
      } else if (key == "cpus_per_task") {
        TS_ASSIGN_OR_RETURN(s.cpus_per_task, Integer(v, what, 1));
      } else if (key == "max_parallel") {
        TS_ASSIGN_OR_RETURN(s.max_parallel, Integer(v, what, 1));
      } else if (key == "time") {
        TS_ASSIGN_OR_RETURN(s.time, Scalar(v, what));
      } else if (key == "partition") {
        TS_ASSIGN_OR_RETURN(s.partition, Scalar(v, what));
      } else if (key == "account") {
        TS_ASSIGN_OR_RETURN(s.account, Scalar(v, what));
      } else if (key == "sbatch") {
        TS_ASSIGN_OR_RETURN(s.sbatch, StringList(v, what));
      } else if (key == "setup") {
        TS_ASSIGN_OR_RETURN(s.setup, StringList(v, what));
      } else if (key == "srun") {
        TS_ASSIGN_OR_RETURN(s.srun, StringList(v, what));
      } else {
        return Error(item.first, absl::StrCat("slurm: unknown key '", key, "'", Suggest(key, keys)));
      }
    }
    return absl::OkStatus();
  }

  // Tasks per node and nodes from ranks where the file leaves them out; they must multiply to ranks.
  absl::Status ResolveSlurmShape(const YAML::Node& root, SweepSpec& spec) const {
    SlurmOptions& s = spec.slurm;
    const YAML::Node at = root["slurm"] ? root["slurm"] : root;
    if (s.ntasks_per_node == 0) {
      if (s.nodes > 0) {
        if (spec.ranks % s.nodes != 0) {
          return Error(at, absl::StrCat("slurm.nodes = ", s.nodes, " does not divide ranks = ", spec.ranks));
        }
        s.ntasks_per_node = spec.ranks / s.nodes;
      } else {
        s.ntasks_per_node = std::min(spec.ranks, kDefaultTasksPerNode);
      }
    }
    if (s.nodes == 0) {
      if (spec.ranks % s.ntasks_per_node != 0) {
        return Error(at, absl::StrCat("slurm.ntasks_per_node = ", s.ntasks_per_node,
                                      " does not divide ranks = ", spec.ranks,
                                      ": set slurm.nodes and slurm.ntasks_per_node"));
      }
      s.nodes = spec.ranks / s.ntasks_per_node;
    }
    if (s.nodes * s.ntasks_per_node != spec.ranks) {
      return Error(
          at, absl::StrCat("slurm.nodes x slurm.ntasks_per_node = ", s.nodes, " x ", s.ntasks_per_node, " = ",
                           s.nodes * s.ntasks_per_node, ", but ranks = ", spec.ranks));
    }
    if (s.gpus_per_node < 0) s.gpus_per_node = s.ntasks_per_node;
    return absl::OkStatus();
  }

  absl::StatusOr<SweepSpec> Parse(const std::string& yaml) const {
    YAML::Node root;
    try {
      root = YAML::Load(yaml);
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(
          e.mark.is_null() ? path_ : absl::StrCat(path_, ":", e.mark.line + 1), ": not valid YAML: ", e.msg));
    }
    if (!root.IsMap()) {
      return absl::InvalidArgumentError(absl::StrCat(path_,
                                                     ": expected a mapping with name, base and grid, list "
                                                     "or random (docs/sweeps.md)"));
    }
    SweepSpec spec;
    spec.path = path_;
    std::set<std::string> seen;
    try {
      for (const auto& item : root) {
        const std::string key = item.first.IsScalar() ? item.first.Scalar() : "";
        const YAML::Node& v = item.second;
        if (!seen.insert(key).second) return Error(item.first, absl::StrCat("key '", key, "' appears twice"));
        if (key == "name") {
          TS_ASSIGN_OR_RETURN(spec.name, Scalar(v, key));
          const bool ok = !spec.name.empty() && std::all_of(spec.name.begin(), spec.name.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
          });
          if (!ok || spec.name[0] == '.') {
            return Error(v, absl::StrCat("name '", spec.name,
                                         "': expected letters, digits, '.', '_' and '-' "
                                         "(it names folders and jobs)"));
          }
        } else if (key == "base") {
          TS_ASSIGN_OR_RETURN(std::string base, Scalar(v, key));
          fs::path p = base;
          if (p.is_relative()) p = fs::path(path_).parent_path() / p;
          spec.base = p.lexically_normal().string();
          if (!PathExists(spec.base)) {
            return Error(v, absl::StrCat("base config '", base, "' does not exist (looked for '", spec.base,
                                         "': relative to the sweep file's folder)"));
          }
        } else if (key == "runs_dir") {
          TS_ASSIGN_OR_RETURN(spec.runs_dir, Scalar(v, key));
          if (spec.runs_dir.empty()) return Error(v, "runs_dir: expected a folder");
        } else if (key == "ranks") {
          TS_ASSIGN_OR_RETURN(spec.ranks, Integer(v, key, 1));
        } else if (key == "mpirun") {
          TS_ASSIGN_OR_RETURN(spec.mpirun_args, StringList(v, key));
        } else if (key == "set") {
          TS_ASSIGN_OR_RETURN(spec.common, OverrideMap(v, "set"));
        } else if (key == "grid") {
          TS_RETURN_IF_ERROR(ParseGrid(v, spec));
        } else if (key == "list") {
          TS_RETURN_IF_ERROR(ParseList(v, spec));
        } else if (key == "random") {
          TS_RETURN_IF_ERROR(ParseRandom(v, spec));
        } else if (key == "slurm") {
          TS_RETURN_IF_ERROR(ParseSlurm(v, spec));
        } else {
          return Error(item.first,
                       absl::StrCat("unknown key '", key, "': expected one of ",
                                    absl::StrJoin(TopLevelKeys(), ", "), Suggest(key, TopLevelKeys())));
        }
      }
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": ", e.what()));
    }
    if (spec.name.empty()) return absl::InvalidArgumentError(absl::StrCat(path_, ": 'name' is missing"));
    if (spec.base.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": 'base' (the config every run starts from) is missing"));
    }
    if (spec.grid.empty() && spec.list.empty() && spec.random_samples == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": no runs: give grid, list or random (docs/sweeps.md)"));
    }
    TS_RETURN_IF_ERROR(ResolveSlurmShape(root, spec));
    return spec;
  }

 private:
  static bool IsSection(const std::string& key) {
    for (const FieldSpec& f : ConfigSchema()) {
      if (f.key.rfind(key + ".", 0) == 0) return true;
    }
    return false;
  }
  static std::string FirstLeaf(const std::string& section) {
    for (const FieldSpec& f : ConfigSchema()) {
      if (f.key.rfind(section + ".", 0) == 0) return f.key.substr(section.size() + 1);
    }
    return "";
  }

  std::string path_;
};

}  // namespace

absl::StatusOr<SweepSpec> ParseSweepYaml(const std::string& yaml, const std::string& path) {
  return Parser(path).Parse(yaml);
}

absl::StatusOr<SweepSpec> ReadSweepFile(const std::string& path) {
  if (!PathExists(path)) return absl::NotFoundError(absl::StrCat("sweep file '", path, "' does not exist"));
  TS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseSweepYaml(text, path);
}

}  // namespace tessera::sweep
