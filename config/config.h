// The typed configuration of a training run, and its schema: every key's type, default, range
// and meaning live in one table (config.cc), which drives YAML loading, `--set` overrides,
// validation, the effective-config dump and docs/config.md. Unknown keys are errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

// The closed choices of the schema, typed. Each key's YAML spelling is EnumNames<E>() (in enum
// order) and EnumName(value); the schema reads and writes these words, so a config file, `--set`
// and RUN_DIR/config.yaml spell them as before, and code compares enums, never strings.
enum class Precision { kFp32, kBf16 };                                     // train.precision
enum class DeviceChoice { kAuto, kCpu, kCuda };                            // train.device
enum class DivergencePolicy { kStop, kRollback };                          // train.on_divergence
enum class CommBackend { kAuto, kLocal, kMpi, kNccl };                     // parallel.backend
enum class RecomputeMode { kNone, kSelective, kFull };                     // model.recompute
enum class AttentionBackend { kAuto, kCudnn, kFlash, kEfficient, kMath };  // model.attention_backend
enum class RopeScaling { kNone, kLlama3, kLinear };                        // model.rope_scaling
enum class CudaGraphsMode { kAuto, kTrue, kFalse };                        // train.cuda_graphs
// parallel.pp_schedule: a generated schedule by name, or kFile: a schedule file's path.
enum class PipelineScheduleKind { kGpipe, k1F1B, kInterleaved, kZbH1, kFile };

template <typename E>
std::span<const std::string_view> EnumNames();
template <>
std::span<const std::string_view> EnumNames<Precision>();
template <>
std::span<const std::string_view> EnumNames<DeviceChoice>();
template <>
std::span<const std::string_view> EnumNames<DivergencePolicy>();
template <>
std::span<const std::string_view> EnumNames<CommBackend>();
// The four generated schedules' names; kFile has none (its text is the path).
template <>
std::span<const std::string_view> EnumNames<PipelineScheduleKind>();
template <>
std::span<const std::string_view> EnumNames<RecomputeMode>();
template <>
std::span<const std::string_view> EnumNames<AttentionBackend>();
template <>
std::span<const std::string_view> EnumNames<RopeScaling>();
template <>
std::span<const std::string_view> EnumNames<CudaGraphsMode>();

template <typename E>
std::string EnumName(E value) {
  const std::span<const std::string_view> names = EnumNames<E>();
  const size_t i = static_cast<size_t>(value);
  return i < names.size() ? std::string(names[i]) : std::string();
}

// parallel.pp_schedule as written: "1f1b", ..., or the path of a schedule file.
struct PipelineScheduleChoice {
  PipelineScheduleKind kind = PipelineScheduleKind::k1F1B;
  std::string file;  // kind == kFile: the path

  // The YAML text: the schedule's name, or the file's path.
  std::string Text() const { return kind == PipelineScheduleKind::kFile ? file : EnumName(kind); }
};

struct ModelConfig {
  int64_t dim = 256;
  int64_t n_layers = 4;
  int64_t n_heads = 8;
  int64_t n_kv_heads = 4;
  // model.head_dim: the width of one attention head when set; 0 derives it, dim / n_heads. Llama
  // 3.2 3B and others choose it apart from dim, so q/k/v are n_heads x head_dim wide, not dim.
  int64_t explicit_head_dim = 0;
  int64_t ffn_dim = 768;
  int64_t vocab_size = 512;
  double rope_theta = 500000.0;
  // Rescaling of the rotary frequencies for contexts beyond the pretraining length
  // (kernels/rotary.h RotaryScaling). 0 leaves a parameter unset: only the scaling that uses a
  // parameter accepts it, and it must then be set, so a config never carries a silent default.
  RopeScaling rope_scaling = RopeScaling::kNone;
  double rope_factor = 0;
  double rope_low_freq_factor = 0;
  double rope_high_freq_factor = 0;
  int64_t rope_original_max_position_embeddings = 0;
  double norm_eps = 1e-5;
  double init_std = 0.02;
  bool tie_embeddings = true;
  // Tokens per chunk of the fused head + cross-entropy (parallel/tensor_parallel/
  // chunked_cross_entropy.h); 0: the whole micro-batch's logits at once.
  int64_t loss_chunk_tokens = 2048;
  // Activations recomputed in backward instead of saved (model/recompute.h): under kFull the
  // first `recompute_layers` blocks of each model chunk (0: all of them) keep only their input.
  RecomputeMode recompute = RecomputeMode::kNone;
  int64_t recompute_layers = 0;
  // The scaled-dot-product-attention kernel (kernels/attention_backend.h): kAuto lets LibTorch
  // pick; any other is the only one LibTorch may run (an input it does not take is an error).
  AttentionBackend attention_backend = AttentionBackend::kAuto;

  int64_t head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : dim / n_heads; }
  // The width of q and of the attention output: n_heads x head_dim (dim unless head_dim is set).
  int64_t attention_dim() const { return n_heads * head_dim(); }
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
  // Weight of PaLM's z-loss, mean log(Z)^2 over the tokens, added to the training loss; 0: off.
  double z_loss = 0.0;
  bool decay_norms_and_embeddings = false;
  Precision precision = Precision::kFp32;
  DeviceChoice device = DeviceChoice::kAuto;
  int64_t seed = 1234;
  int64_t threads = 0;
  int64_t log_every = 10;
  int64_t eval_every = 100;
  int64_t eval_batches = 8;
  std::string run_dir = "runs/default";
  double peak_tflops = 0.0;
  bool allow_tf32 = true;  // fp32 products on CUDA tensor cores as TF32
  int64_t profile_step = 0;
  // CUDA graphs for the micro-step where the layout allows (trainer/cuda_graph_policy.h).
  // Off by default until the captured step has been measured against the eager one on a GPU.
  CudaGraphsMode cuda_graphs = CudaGraphsMode::kFalse;
  double spike_factor = 3.0;
  int64_t max_skips = 5;
  DivergencePolicy on_divergence = DivergencePolicy::kStop;
  bool tensorboard = true;
  // Every sample_every steps rank 0 prints a greedy continuation of sample_prompt,
  // sample_tokens long (model/generate.h); 0: off. Needs data.tokenizer.
  int64_t sample_every = 0;
  std::string sample_prompt = "The";
  int64_t sample_tokens = 32;
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
  int64_t eod_token = -1;  // the end-of-document token id; -1 = not given
  bool document_mask = false;
  bool reset_position_ids = false;
  // The tokenizer the corpora were made with (as --tokenizer spells it); "" = not given.
  std::string tokenizer;
};

// The process grid and its communication (parallel/process_grid.h, docs/launch.md).
struct ParallelConfig {
  int64_t tp = 1;
  int64_t pp = 1;
  int64_t dp = 0;  // 0 = auto: world size / (tp x cp x pp); written "auto"
  int64_t cp = 1;  // context parallelism: ranks sharing each sequence
  // Innermost first: tp, cp, pp, dp once each ("tp-dp-pp": cp just outside tp).
  std::string order = "tp-cp-dp-pp";
  CommBackend backend = CommBackend::kAuto;
  std::string rendezvous = "auto";
  double comm_timeout_s = 300;
  double startup_timeout_s = 900;
  bool sequence_parallel = false;
  PipelineScheduleChoice pp_schedule;
  std::vector<int64_t> pp_layers;  // explicit layer counts per model chunk; empty = balanced
  int64_t virtual_stages = 1;
  int64_t zero = 0;
  int64_t zero3_prefetch = 1;  // units gathered ahead of the one in use under zero 3
  double bucket_mb = 25;
};

// Checkpoints (docs/checkpoints.md).
struct CheckpointConfig {
  std::string dir;    // "" = RUN_DIR/checkpoints
  int64_t every = 0;  // steps between saves; 0 = only at the end and on a signal
  int64_t keep = 2;   // committed checkpoints kept (newest); 0 = all
  bool async = false;
  bool direct_io = true;        // shard files written with O_DIRECT where the file system takes it
  std::string resume = "auto";  // auto | never | PATH of a checkpoint (step directory or dir)
  std::string init_from;        // weights that start a run with nothing to resume; "" = none
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

enum class FieldType { kInt, kFloat, kBool, kString, kEnum, kIntList, kCorpusList };

// One key of the schema. `ref` returns the address of the field inside a Config; its C++ type
// follows `type` (int64_t, double, bool, std::string, an enum of the choices above or
// PipelineScheduleChoice, std::vector<int64_t>, std::vector<CorpusEntry>).
struct FieldSpec {
  std::string key;
  FieldType type;
  std::string doc;
  // The allowed words of a string or enum key; empty = any (an enum key then stores a word that
  // is not one of its names as a path: parallel.pp_schedule).
  std::vector<std::string> choices;
  double min = 0;  // inclusive numeric range, when has_range
  double max = 0;
  bool has_range = false;
  void* (*ref)(Config&);
  // An integer key whose 0 reads and writes as this word (parallel.dp: "auto"); empty = none.
  std::string zero_word = {};
  // kEnum: the field's text, and setting it from a word (false: not a word it takes).
  std::string (*enum_text)(const void* field) = nullptr;
  bool (*enum_set)(void* field, const std::string& word) = nullptr;
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
// The constraints between the model.* keys alone (head sizes, rotary scaling, recomputation), for
// a model section read without the rest (a checkpoint's); ranges are ValidateConfig's.
absl::Status ValidateModelConfig(const Config& config);
// The checks of the parallel.* keys alone (`tessera topology` needs no data or model keys).
absl::Status ValidateParallelConfig(const Config& config);

// The effective config as YAML, every key present, loadable by LoadConfig.
std::string ConfigToYaml(const Config& config);
// docs/config.md: every key with type, default and meaning.
std::string ConfigSchemaMarkdown();

}  // namespace tessera
