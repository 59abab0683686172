// The typed configuration of a training run, and its schema: every key's type, default, range
// and meaning live in one table (config.cc), which drives YAML loading, `--set` overrides,
// validation, the effective-config dump and docs/config.md. Unknown keys are errors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

struct ModelConfig {
  int64_t dim = 256;
  int64_t n_layers = 4;
  int64_t n_heads = 8;
  int64_t n_kv_heads = 4;
  int64_t ffn_dim = 768;
  int64_t vocab_size = 512;
  double rope_theta = 500000.0;
  double norm_eps = 1e-5;
  double init_std = 0.02;
  bool tie_embeddings = true;

  int64_t head_dim() const { return dim / n_heads; }
};

struct TrainConfig {
  int64_t seq_len = 256;
  int64_t micro_batch = 8;
  int64_t global_batch = 16;
  int64_t steps = 300;
  int64_t warmup_steps = 20;
  double lr = 3e-3;
  double min_lr = 3e-4;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double adam_eps = 1e-8;
  double grad_clip = 1.0;
  bool decay_norms_and_embeddings = false;
  std::string precision = "fp32";
  std::string device = "auto";
  int64_t seed = 1234;
  int64_t threads = 0;
  int64_t log_every = 10;
  int64_t eval_every = 100;
  int64_t eval_batches = 8;
  std::string run_dir = "runs/default";
  double peak_tflops = 0.0;
  int64_t profile_step = 0;
  double spike_factor = 3.0;
  int64_t max_skips = 5;
  std::string on_divergence = "stop";
  bool tensorboard = true;
};

// One corpus of a blend: the PREFIX of Megatron-format PREFIX.idx/.bin (or of shards
// PREFIX_00000...), and its share of the samples.
struct CorpusEntry {
  std::string prefix;
  double weight = 1.0;
  bool operator==(const CorpusEntry&) const = default;
};

struct DataConfig {
  std::vector<CorpusEntry> train;
  std::vector<CorpusEntry> val;
  bool shuffle = true;
  int64_t prefetch = 2;
};

// The process grid and its communication (parallel/process_grid.h, docs/launch.md).
struct ParallelConfig {
  int64_t tp = 1;
  int64_t pp = 1;
  int64_t dp = 0;  // 0 = auto: world size / (tp x pp); written "auto"
  std::string order = "tp-dp-pp";
  std::string backend = "auto";
  std::string rendezvous = "auto";
  double comm_timeout_s = 300;
  double startup_timeout_s = 900;
  bool sequence_parallel = false;
  std::string pp_schedule = "1f1b";
  std::vector<std::string> pp_layers;  // explicit layer counts per model chunk; empty = balanced
  int64_t virtual_stages = 1;
  int64_t zero = 0;
  double bucket_mb = 25;
};

// Checkpoints (docs/checkpoints.md).
struct CheckpointConfig {
  std::string dir;    // "" = RUN_DIR/checkpoints
  int64_t every = 0;  // steps between saves; 0 = only at the end and on a signal
  int64_t keep = 2;   // committed checkpoints kept (newest); 0 = all
  bool async = false;
  std::string resume = "auto";  // auto | never | PATH of a checkpoint (step directory or dir)
  bool at_end = true;
};

struct Config {
  ModelConfig model;
  TrainConfig train;
  DataConfig data;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  // Where the config came from (for messages); not a key.
  std::string source;
};

enum class FieldType { kInt, kFloat, kBool, kString, kStringList, kCorpusList };

// One key of the schema. `ref` returns the address of the field inside a Config; its C++ type
// follows `type` (int64_t, double, bool, std::string, std::vector<std::string>,
// std::vector<CorpusEntry>).
struct FieldSpec {
  std::string key;
  FieldType type;
  std::string doc;
  std::vector<std::string> choices;  // allowed values of a string key; empty = any
  double min = 0;                    // inclusive numeric range, when has_range
  double max = 0;
  bool has_range = false;
  void* (*ref)(Config&);
  // An integer key whose 0 reads and writes as this word (parallel.dp: "auto"); empty = none.
  std::string zero_word = {};
};

const std::vector<FieldSpec>& ConfigSchema();

// Loads a YAML file (following `base: other.yaml` includes, resolved relative to the including
// file), then applies `--set key=value` overrides in order, then validates.
absl::StatusOr<Config> LoadConfig(const std::string& path, const std::vector<std::string>& overrides);
// The defaults plus the keys of YAML text (a config file's contents, e.g. a checkpoint's saved
// effective config), without includes (`base:` is an error) and WITHOUT validation: callers that
// need only some sections check what they use (ValidateConfig checks all). `source` names the
// text in messages ("ckpt/step-00000100/manifest.pb:config_yaml").
absl::StatusOr<Config> ConfigFromYamlString(const std::string& yaml, const std::string& source);
// The defaults plus overrides, validated (no file).
absl::StatusOr<Config> ConfigFromOverrides(const std::vector<std::string>& overrides);
// Applies one `key=value` override (value in YAML syntax) without validating.
absl::Status ApplyOverride(Config& config, const std::string& assignment);
// Range, choice and cross-key checks; the error names the key, the value and what was expected.
absl::Status ValidateConfig(const Config& config);
// The checks of the parallel.* keys alone (`tessera topology` needs no data or model keys).
absl::Status ValidateParallelConfig(const Config& config);

// The effective config as YAML, every key present, loadable by LoadConfig.
std::string ConfigToYaml(const Config& config);
// docs/config.md: every key with type, default and meaning.
std::string ConfigSchemaMarkdown();

}  // namespace tessera
