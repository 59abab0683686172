// Schema table, YAML loading with includes, overrides, validation and dumping for config.h.
// Messages always say where a value came from: "FILE:LINE" for YAML, "--set KEY=VALUE" for
// overrides, so a typo in a sweep of hundreds of runs points at its source.
#include "config/config.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/status_macros.h"
#include "core/strings.h"

namespace tessera {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

#define TS_FIELD_REF(member) [](Config& c) -> void* { return &c.member; }

FieldSpec Int(std::string key, void* (*ref)(Config&), double min, double max, std::string doc) {
  return FieldSpec{std::move(key), FieldType::kInt, std::move(doc), {}, min, max, true, ref};
}
FieldSpec Float(std::string key, void* (*ref)(Config&), double min, double max, std::string doc) {
  return FieldSpec{std::move(key), FieldType::kFloat, std::move(doc), {}, min, max, true, ref};
}
FieldSpec Bool(std::string key, void* (*ref)(Config&), std::string doc) {
  return FieldSpec{std::move(key), FieldType::kBool, std::move(doc), {}, 0, 0, false, ref};
}
FieldSpec String(std::string key, void* (*ref)(Config&), std::vector<std::string> choices, std::string doc) {
  return FieldSpec{std::move(key), FieldType::kString, std::move(doc), std::move(choices), 0, 0, false, ref};
}
// An integer in [min, max] that may also be written as `word`, which stands for 0.
FieldSpec IntOrWord(std::string key, void* (*ref)(Config&), double min, double max, std::string word,
                    std::string doc) {
  FieldSpec f = Int(std::move(key), ref, min, max, std::move(doc));
  f.zero_word = std::move(word);
  return f;
}
// The position of `word` among `names`, or -1.
int IndexOfName(std::span<const std::string_view> names, const std::string& word) {
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == word) return static_cast<int>(i);
  }
  return -1;
}

// A closed choice stored as the enum E, spelled EnumNames<E>().
template <typename E>
FieldSpec Enum(std::string key, void* (*ref)(Config&), std::string doc) {
  std::vector<std::string> words;
  for (std::string_view name : EnumNames<E>()) words.emplace_back(name);
  FieldSpec f{std::move(key), FieldType::kEnum, std::move(doc), std::move(words), 0, 0, false, ref};
  f.enum_text = [](const void* field) { return EnumName(*static_cast<const E*>(field)); };
  f.enum_set = [](void* field, const std::string& word) {
    const int i = IndexOfName(EnumNames<E>(), word);
    if (i >= 0) *static_cast<E*>(field) = static_cast<E>(i);
    return i >= 0;
  };
  return f;
}
// parallel.pp_schedule: a generated schedule's name, or else the path of a schedule file (so
// the words are open, and the key reads as a string).
FieldSpec Schedule(std::string key, void* (*ref)(Config&), std::string doc) {
  FieldSpec f{std::move(key), FieldType::kEnum, std::move(doc), {}, 0, 0, false, ref};
  f.enum_text = [](const void* field) { return static_cast<const PipelineScheduleChoice*>(field)->Text(); };
  f.enum_set = [](void* field, const std::string& word) {
    const int i = IndexOfName(EnumNames<PipelineScheduleKind>(), word);
    *static_cast<PipelineScheduleChoice*>(field) =
        i >= 0 ? PipelineScheduleChoice{static_cast<PipelineScheduleKind>(i), ""}
               : PipelineScheduleChoice{PipelineScheduleKind::kFile, word};
    return true;
  };
  return f;
}
FieldSpec IntList(std::string key, void* (*ref)(Config&), std::string doc) {
  return FieldSpec{std::move(key), FieldType::kIntList, std::move(doc), {}, 0, 0, false, ref};
}
FieldSpec CorpusList(std::string key, void* (*ref)(Config&), std::string doc) {
  return FieldSpec{std::move(key), FieldType::kCorpusList, std::move(doc), {}, 0, 0, false, ref};
}

// Long: the table of every key, one entry (key, type, range, documentation) after another; read
// top to bottom, it is the schema, and splitting it would only scatter it.
std::vector<FieldSpec> BuildSchema() {
  return {
      Int("model.dim", TS_FIELD_REF(model.dim), 1, 1 << 20, "Hidden size (model width)."),
      Int("model.n_layers", TS_FIELD_REF(model.n_layers), 1, 4096, "Number of transformer blocks."),
      Int("model.n_heads", TS_FIELD_REF(model.n_heads), 1, 4096,
          "Query heads; unless model.head_dim is set, must divide model.dim, and dim / n_heads must "
          "be even (rotary pairs)."),
      Int("model.n_kv_heads", TS_FIELD_REF(model.n_kv_heads), 1, 4096,
          "Key/value heads (grouped-query attention); must divide model.n_heads."),
      IntOrWord("model.head_dim", TS_FIELD_REF(model.explicit_head_dim), 0, 1 << 16, "auto",
                "Width of one attention head, even (rotary pairs); auto (0): model.dim / "
                "model.n_heads. q and the attention output are n_heads x head_dim wide, k and v "
                "n_kv_heads x head_dim, whatever model.dim is (as Hugging Face's head_dim)."),
      Int("model.ffn_dim", TS_FIELD_REF(model.ffn_dim), 1, 1 << 22,
          "Inner size of the SwiGLU MLP (Llama 3 8B: 14336)."),
      Int("model.vocab_size", TS_FIELD_REF(model.vocab_size), 2, 1 << 24,
          "Rows of the embedding and output head; at least the tokenizer's id count."),
      Float("model.rope_theta", TS_FIELD_REF(model.rope_theta), 1, kInf,
            "Base of the rotary position embedding frequencies (Llama 3: 500000)."),
      Enum<RopeScaling>(
          "model.rope_scaling", TS_FIELD_REF(model.rope_scaling),
          "Scaling of the rotary frequencies inv_freq[i] = theta^(-2i/head_dim), as transformers' "
          "rope_type. none: unscaled. linear: every inv_freq / model.rope_factor (positions divided by "
          "the factor). llama3 (Llama 3.1 and later, transformers' _compute_llama3_parameters): with "
          "wavelen = 2 pi / inv_freq, L = model.rope_original_max_position_embeddings, l = "
          "model.rope_low_freq_factor, h = model.rope_high_freq_factor, f = model.rope_factor: "
          "wavelen < L / h keeps inv_freq; wavelen > L / l takes inv_freq / f; between, with s = "
          "(L / wavelen - l) / (h - l), (1 - s) inv_freq / f + s inv_freq. Each scaling needs its "
          "keys set; the others must stay 0."),
      Float("model.rope_factor", TS_FIELD_REF(model.rope_factor), 0, kInf,
            "Factor of model.rope_scaling linear or llama3 (Llama 3.1: 8, 3.2: 32); 0: unset."),
      Float("model.rope_low_freq_factor", TS_FIELD_REF(model.rope_low_freq_factor), 0, kInf,
            "llama3 scaling: wavelengths above original_max_position_embeddings / this are divided "
            "by model.rope_factor (Llama 3.1: 1); 0: unset."),
      Float("model.rope_high_freq_factor", TS_FIELD_REF(model.rope_high_freq_factor), 0, kInf,
            "llama3 scaling: wavelengths below original_max_position_embeddings / this are kept; "
            "above model.rope_low_freq_factor (Llama 3.1: 4); 0: unset."),
      Int("model.rope_original_max_position_embeddings",
          TS_FIELD_REF(model.rope_original_max_position_embeddings), 0, 1 << 30,
          "llama3 scaling: the context length of pretraining before the extension (Llama 3.1: "
          "8192); 0: unset."),
      Float("model.norm_eps", TS_FIELD_REF(model.norm_eps), 0, 1, "Epsilon of RMSNorm."),
      Float("model.init_std", TS_FIELD_REF(model.init_std), 0, 10,
            "Standard deviation of the normal initialisation of embeddings and linear weights; "
            "output projections of attention and MLP use init_std / sqrt(2 * n_layers)."),
      Bool("model.tie_embeddings", TS_FIELD_REF(model.tie_embeddings),
           "Share the token embedding with the output head."),
      Enum<RecomputeMode>("model.recompute", TS_FIELD_REF(model.recompute),
                          "Activations recomputed in backward instead of saved: none; selective (every "
                          "block keeps its attention core's input q|k|v and runs rotary and attention "
                          "again in backward, and forms the SwiGLU values and the two norm outputs again "
                          "instead of keeping them: "
                          "one more attention forward per block); or full (each recomputed block keeps "
                          "only its input, 4 x tokens x dim bytes (the fp32 residual stream), and runs "
                          "its forward again in backward: about a third more compute for those blocks). "
                          "The model has no dropout, so a recomputed forward equals the first."),
      IntOrWord("model.recompute_layers", TS_FIELD_REF(model.recompute_layers), 0, 4096, "all",
                "Under model.recompute: full, how many blocks of each model chunk (pipeline stage, or "
                "virtual stage), from its first, are recomputed (all: every block). A chunk with fewer "
                "layers recomputes all of its blocks; a count above the largest chunk's is refused."),
      Enum<AttentionBackend>("model.attention_backend", TS_FIELD_REF(model.attention_backend),
                             "The scaled-dot-product-attention kernel: auto lets LibTorch pick (on CUDA "
                             "cuDNN, flash or memory-efficient, in its order, before the unfused math; on "
                             "the CPU its flash kernel); cudnn, flash, efficient or math is then the only "
                             "one allowed, and inputs it does not take are an error. The start-up log "
                             "names the kernel and whether kv heads are read in place (enable_gqa) or "
                             "expanded."),
      IntOrWord("model.loss_chunk_tokens", TS_FIELD_REF(model.loss_chunk_tokens), 0, 1 << 30, "off",
                "Tokens per chunk of the fused output head + cross-entropy: the logits [tokens, vocab] "
                "never exist beyond one chunk (chunk x vocab/tp x ~10 bytes at a time, instead of the "
                "micro-batch's), at the cost of computing each chunk's logits again in backward. A "
                "micro-batch of at most this many tokens takes the unchunked path; off (0): always "
                "unchunked."),

      Int("train.seq_len", TS_FIELD_REF(train.seq_len), 1, 1 << 24, "Tokens per training sequence."),
      Int("train.micro_batch", TS_FIELD_REF(train.micro_batch), 1, 1 << 20,
          "Sequences per forward/backward pass."),
      Int("train.global_batch", TS_FIELD_REF(train.global_batch), 1, 1 << 24,
          "Sequences per optimizer step; a multiple of train.micro_batch (the ratio is the number "
          "of gradient-accumulation micro-steps)."),
      Int("train.steps", TS_FIELD_REF(train.steps), 0, 1e12, "Optimizer steps to run."),
      Int("train.warmup_steps", TS_FIELD_REF(train.warmup_steps), 0, 1e12,
          "Steps of linear learning-rate warmup from 0 to train.lr."),
      Float("train.lr", TS_FIELD_REF(train.lr), 0, 10, "Peak learning rate."),
      Float("train.min_lr", TS_FIELD_REF(train.min_lr), 0, 10,
            "Learning rate at the end of the cosine decay (reached at train.steps)."),
      Float("train.weight_decay", TS_FIELD_REF(train.weight_decay), 0, 10,
            "AdamW decoupled weight decay (lr x weight_decay x weight per step)."),
      Float("train.beta1", TS_FIELD_REF(train.beta1), 0, 0.999999, "AdamW beta1."),
      Float("train.beta2", TS_FIELD_REF(train.beta2), 0, 0.999999999, "AdamW beta2."),
      Float("train.adam_eps", TS_FIELD_REF(train.adam_eps), 0, 1, "AdamW epsilon."),
      Float("train.grad_clip", TS_FIELD_REF(train.grad_clip), 0, kInf,
            "Clip the global gradient L2 norm to this value; 0 disables clipping."),
      Float("train.z_loss", TS_FIELD_REF(train.z_loss), 0, 1,
            "Weight of the z-loss (PaLM): z_loss x mean over tokens of log(Z)^2, Z the softmax's "
            "normaliser, added to the training loss to keep the logits from drifting (1e-4 in "
            "PaLM). The logged training loss includes it; evaluation reports the cross-entropy "
            "alone. 0: off."),
      Bool("train.decay_norms_and_embeddings", TS_FIELD_REF(train.decay_norms_and_embeddings),
           "Apply weight decay to norm weights and embeddings too (off: only matrices of linear "
           "layers decay)."),
      Enum<Precision>(
          "train.precision", TS_FIELD_REF(train.precision),
          "fp32: fp32 weights, compute in fp32. bf16: bf16 weights, matrix products and attention "
          "in bf16; fp32 gradients, an fp32 master copy and fp32 moments in the optimizer (saved "
          "in checkpoints), fp32 norm, softmax and loss reductions."),
      Enum<DeviceChoice>("train.device", TS_FIELD_REF(train.device),
                         "auto: CUDA when the LibTorch build and the machine have it, else CPU."),
      Int("train.seed", TS_FIELD_REF(train.seed), 0, 9.2e18, "Seed of initialisation and data sampling."),
      Int("train.threads", TS_FIELD_REF(train.threads), 0, 4096,
          "CPU threads for LibTorch; 0 = OMP_NUM_THREADS if set, else the node's cores shared by its ranks."),
      Int("train.log_every", TS_FIELD_REF(train.log_every), 1, 1e12,
          "Print and record metrics every N steps (and at the last step)."),
      Int("train.eval_every", TS_FIELD_REF(train.eval_every), 0, 1e12,
          "Evaluate held-out loss every N steps and at the end; 0 disables evaluation."),
      Int("train.eval_batches", TS_FIELD_REF(train.eval_batches), 1, 1e9,
          "Micro-batches of held-out data per evaluation."),
      String("train.run_dir", TS_FIELD_REF(train.run_dir), {},
             "Directory for config.yaml, metrics.jsonl and logs."),
      Float("train.peak_tflops", TS_FIELD_REF(train.peak_tflops), 0, kInf,
            "Peak TFLOP/s of one device for MFU; 0 = measure it (CPU: a short matmul probe at the "
            "compute precision) or look it up (known GPUs)."),
      Bool("train.allow_tf32", TS_FIELD_REF(train.allow_tf32),
           "On CUDA, run fp32 matrix products and convolutions on the tensor cores as TF32 (10-bit "
           "mantissa inputs, fp32 accumulation), as Megatron-LM and PyTorch's AMP recipes do; MFU "
           "of fp32 runs is then counted against the TF32 peak, else against the CUDA cores' fp32 "
           "peak. No effect on CPU or on bf16 products."),
      Int("train.profile_step", TS_FIELD_REF(train.profile_step), 0, 1e12,
          "Record LibTorch's profiler over this optimizer step (1-based) and write a Chrome trace "
          "to RUN_DIR/profile_step_N.json (open in chrome://tracing or Perfetto); 0 = off."),
      Enum<CudaGraphsMode>(
          "train.cuda_graphs", TS_FIELD_REF(train.cuda_graphs),
          "CUDA graphs for the training micro-step: after 3 eager warm-up steps the forward and "
          "backward of one micro-batch are captured once (static input buffers, a private memory "
          "pool) and every later micro-batch replays them; the data-parallel reduction, the "
          "gradient norm and the optimizer run after the replays, uncaptured, as does evaluation. "
          "Only where the layout allows: a CUDA device, no pipeline, tensor or context "
          "parallelism, parallel.zero 0 or 1, no data.document_mask or data.reset_position_ids, no "
          "train.profile_step. auto: on where allowed, else off without a word. true: on where "
          "allowed; elsewhere off, and the start-up log names every reason. false (the default "
          "until the captured step has been timed against the eager one on a GPU): off."),
      Float("train.spike_factor", TS_FIELD_REF(train.spike_factor), 0, kInf,
            "Loss-spike guard: a step whose loss exceeds spike_factor x the mean of the last 50 "
            "accepted steps' losses skips its update (counted and logged), as does any step with a "
            "non-finite loss or gradient norm; 0 turns the spike test off (non-finite steps are "
            "always skipped). Active after 10 accepted steps."),
      Int("train.max_skips", TS_FIELD_REF(train.max_skips), 0, 1e9,
          "Skipped updates in a row after which the run is declared diverged (train.on_divergence)."),
      Enum<DivergencePolicy>(
          "train.on_divergence", TS_FIELD_REF(train.on_divergence),
          "When more than train.max_skips updates in a row were skipped: stop ends the run with "
          "exit code 4; rollback reloads the newest checkpoint and goes on with the data after "
          "the offending batches (at most 3 times, then stop)."),
      Bool("train.tensorboard", TS_FIELD_REF(train.tensorboard),
           "Write TensorBoard event files (every metrics.jsonl record's scalars) to the run directory."),
      Int("train.sample_every", TS_FIELD_REF(train.sample_every), 0, 1e12,
          "Every N steps (and at the last step) rank 0 prints a greedy continuation of "
          "train.sample_prompt, train.sample_tokens long, with the key/value cache; 0 disables it. "
          "Needs data.tokenizer and a layout where rank 0 holds the whole model (one process, data "
          "parallelism, ZeRO 1 or 2); otherwise the run says once why it does not sample. It "
          "draws no random numbers and changes no state of the run."),
      String("train.sample_prompt", TS_FIELD_REF(train.sample_prompt), {},
             "The text train.sample_every continues (encoded without special tokens)."),
      Int("train.sample_tokens", TS_FIELD_REF(train.sample_tokens), 1, 4096,
          "New tokens of each train.sample_every sample (fewer when the end-of-text token comes)."),

      CorpusList("data.train", TS_FIELD_REF(data.train),
                 "Training corpora, Megatron-format (`tessera preprocess` writes them): a list of "
                 "PREFIX (of PREFIX.idx/.bin, or of shards PREFIX_00000...) or of {prefix: P, "
                 "weight: W} to blend several by weight (weights are relative shares)."),
      CorpusList("data.val", TS_FIELD_REF(data.val),
                 "Held-out corpora for evaluation, as data.train (read in order, not shuffled); "
                 "required when train.eval_every > 0."),
      Bool("data.shuffle", TS_FIELD_REF(data.shuffle),
           "Shuffle documents and samples each epoch from train.seed; false reads the corpora in "
           "file order (sample j = tokens [j x seq_len, (j+1) x seq_len + 1))."),
      Int("data.prefetch", TS_FIELD_REF(data.prefetch), 1, 64,
          "Global batches the background loader reads ahead."),
      Int("data.eod_token", TS_FIELD_REF(data.eod_token), -1, 1 << 24,
          "Id of the end-of-document token that `tessera preprocess` appends after every document "
          "(the tokenizer's `eod`, e.g. <|endoftext|>); -1 = not given. Needed by "
          "data.document_mask and data.reset_position_ids, which find the documents of a packed "
          "sample by it: a document ends with (and includes) each such token."),
      Bool("data.document_mask", TS_FIELD_REF(data.document_mask),
           "Attention stays inside each document of a packed sample: block-diagonal causal "
           "instead of causal over the whole sequence (Megatron's --reset-attention-mask; Llama 3 "
           "was trained so). Needs data.eod_token. Runs one attention call per document on the "
           "CPU and LibTorch's variable-length flash kernel on CUDA; a [seq, seq] mask per "
           "micro-batch only where flash cannot take the inputs (docs/data.md)."),
      Bool("data.reset_position_ids", TS_FIELD_REF(data.reset_position_ids),
           "Rotary positions restart at 0 at each document of a packed sample (Megatron's "
           "--reset-position-ids) instead of counting 0..seq_len-1. Needs data.eod_token."),
      String("data.tokenizer", TS_FIELD_REF(data.tokenizer), {},
             "The tokenizer the corpora were made with, as --tokenizer takes it (cl100k_base:FILE, "
             "o200k_base:FILE, llama3:FILE or a rank file; a relative path is read from the "
             "directory tessera runs in); used to print train.sample_every's samples. Empty: none."),

      Int("parallel.tp", TS_FIELD_REF(parallel.tp), 1, 1 << 20,
          "Tensor-parallel size: ranks that split each layer's matrices (under the default order "
          "they are neighbours, so a TP group shares a node)."),
      Int("parallel.pp", TS_FIELD_REF(parallel.pp), 1, 1 << 20, "Pipeline-parallel stages."),
      IntOrWord("parallel.dp", TS_FIELD_REF(parallel.dp), 0, 1 << 20, "auto",
                "Data-parallel replicas; auto = world size / (tp x cp x pp). The launcher's world size "
                "must equal tp x cp x pp x dp."),
      Int("parallel.cp", TS_FIELD_REF(parallel.cp), 1, 1 << 20,
          "Context-parallel size: ranks that share each sequence, each holding two of its 2 x cp "
          "chunks (chunk i and 2 cp - 1 - i, which balances the causal work) and attending over "
          "the whole sequence's keys and values, all-gathered (docs/architecture.md). "
          "train.seq_len must be a multiple of 2 x cp."),
      String("parallel.order", TS_FIELD_REF(parallel.order), {},
             "Rank layout, innermost first: tp, cp, pp and dp once each joined by '-' (cp may be "
             "left out: it then sits just outside tp). With tp-cp-dp-pp consecutive ranks form a TP "
             "group, then the CP ranks of a sequence, then DP varies, then the pipeline stage. "
             "`tessera topology` prints the table."),
      Enum<CommBackend>("parallel.backend", TS_FIELD_REF(parallel.backend),
                        "Communication: auto = nccl on CUDA, mpi on CPU with several processes (or under "
                        "mpirun), local for a single process."),
      String("parallel.rendezvous", TS_FIELD_REF(parallel.rendezvous), {},
             "How NCCL's unique id reaches the ranks: auto (MPI under mpirun, else TCP at "
             "MASTER_ADDR:MASTER_PORT), mpi, tcp, or file:PATH on a filesystem all nodes share."),
      Float("parallel.comm_timeout_s", TS_FIELD_REF(parallel.comm_timeout_s), 0.001, kInf,
            "Seconds a collective may take after the first step; past it the watchdog prints "
            "what each rank was waiting in and every rank exits non-zero."),
      Float("parallel.startup_timeout_s", TS_FIELD_REF(parallel.startup_timeout_s), 0.001, kInf,
            "The same limit until the first step completes (start-up: launch, rendezvous, "
            "communicator creation, the first step)."),
      Bool("parallel.sequence_parallel", TS_FIELD_REF(parallel.sequence_parallel),
           "With tp > 1, also split the norm and residual regions along the sequence (Megatron "
           "sequence parallelism); train.seq_len must be divisible by parallel.tp."),
      Schedule("parallel.pp_schedule", TS_FIELD_REF(parallel.pp_schedule),
               "Pipeline schedule: gpipe, 1f1b, interleaved (needs parallel.virtual_stages > 1), "
               "zb-h1, or the path of a schedule file (docs/pipeline.md)."),
      IntList("parallel.pp_layers", TS_FIELD_REF(parallel.pp_layers),
              "Explicit layer counts per model chunk in model order (pp x virtual_stages "
              "integers summing to model.n_layers, e.g. [9, 8, 8, 7]); empty = balanced by FLOPs "
              "(the first stage also holds the embedding, the last the head and the loss)."),
      Int("parallel.virtual_stages", TS_FIELD_REF(parallel.virtual_stages), 1, 1024,
          "Model chunks per pipeline rank (interleaved schedule)."),
      Int("parallel.zero", TS_FIELD_REF(parallel.zero), 0, 3,
          "Sharded optimizer over the data-parallel group: 0 = replicated; 1 = AdamW moments "
          "sharded, gradients reduce-scattered, parameters all-gathered after the update; 2 = "
          "also only this rank's shard of the reduced gradients is kept; 3 = also the parameters "
          "stay sharded between uses (FSDP): each unit (the embedding, each layer, the final norm "
          "and head) is all-gathered before its forward and its backward and freed after."),
      Int("parallel.zero3_prefetch", TS_FIELD_REF(parallel.zero3_prefetch), 0, 64,
          "Under parallel.zero 3: units whose all-gather starts ahead of use (the next ones in "
          "forward, the previous ones in backward); 0 = gather each unit only when it is used."),
      Float("parallel.bucket_mb", TS_FIELD_REF(parallel.bucket_mb), 1e-6, kInf,
            "Size of a gradient-reduction bucket in MiB (fp32 gradients); a bucket's reduction "
            "starts as soon as backward has produced all its gradients."),

      String("checkpoint.dir", TS_FIELD_REF(checkpoint.dir), {},
             "Directory of step-NNNNNNNN checkpoints, on a filesystem every rank sees; empty = "
             "RUN_DIR/checkpoints."),
      Int("checkpoint.every", TS_FIELD_REF(checkpoint.every), 0, 1e12,
          "Save every N steps; 0 = only at the end (checkpoint.at_end) and when signalled."),
      Int("checkpoint.keep", TS_FIELD_REF(checkpoint.keep), 0, 1e6,
          "Committed checkpoints to keep (older ones are removed only after a newer one is "
          "committed); 0 keeps all."),
      Bool("checkpoint.async", TS_FIELD_REF(checkpoint.async),
           "Copy the state to host memory and write it in a background thread while training goes "
           "on (the next save waits for the previous one). With several ranks the background "
           "thread's collectives need MPI at MPI_THREAD_MULTIPLE (under NCCL they go over MPI, "
           "so the job must be started by mpirun or srun --mpi); otherwise the run stops at start "
           "with an error that says so."),
      Bool("checkpoint.direct_io", TS_FIELD_REF(checkpoint.direct_io),
           "Write shard files with O_DIRECT (around the page cache) from a ring of aligned "
           "buffers, the CRC-32C computed as each piece is copied in; where the file system "
           "refuses O_DIRECT (EINVAL) the page cache is used. The files are the same either way."),
      String("checkpoint.resume", TS_FIELD_REF(checkpoint.resume), {},
             "auto: continue from the newest valid checkpoint in checkpoint.dir if there is one; "
             "never: start fresh; or the path of a checkpoint (a step directory, or a directory "
             "of them) to start from, in any parallel layout."),
      String("checkpoint.init_from", TS_FIELD_REF(checkpoint.init_from), {},
             "A checkpoint (a step directory, or a directory of them; e.g. from tessera "
             "import-hf) whose model weights start the run when there is nothing to resume "
             "(checkpoint.resume auto and no checkpoint in checkpoint.dir yet, or never): the "
             "weights only, in any parallel layout; the step, data position, AdamW moments and "
             "loss history start fresh. Under auto, once the run has saved, a restart resumes from "
             "its own newest checkpoint instead. Refused beside a checkpoint.resume path. Empty: "
             "none."),
      Bool("checkpoint.at_end", TS_FIELD_REF(checkpoint.at_end), "Save a checkpoint after the last step."),
  };
}

#undef TS_FIELD_REF

const FieldSpec* FindField(const std::string& key) {
  for (const FieldSpec& f : ConfigSchema()) {
    if (f.key == key) return &f;
  }
  return nullptr;
}

bool IsSectionPrefix(const std::string& prefix) {
  for (const FieldSpec& f : ConfigSchema()) {
    if (f.key.rfind(prefix + ".", 0) == 0) return true;
  }
  return false;
}

std::string Suggestion(const std::string& key) {
  std::vector<std::string> keys;
  for (const FieldSpec& f : ConfigSchema()) keys.push_back(f.key);
  return DidYouMean(key, keys, /*below=*/4, DottedKeyDistance);  // suggest only close matches
}

std::string TypeName(const FieldSpec& f) {
  switch (f.type) {
    case FieldType::kInt:
      return f.zero_word.empty() ? "integer" : absl::StrCat("integer or ", f.zero_word);
    case FieldType::kFloat:
      return "number";
    case FieldType::kBool:
      return "boolean (true or false)";
    case FieldType::kString:
    case FieldType::kEnum:
      return f.choices.empty() ? "string" : absl::StrCat("one of ", absl::StrJoin(f.choices, " | "));
    case FieldType::kIntList:
      return "list of integers";
    case FieldType::kCorpusList:
      return "list of PREFIX or {prefix, weight}";
  }
  return "?";
}

std::string NodeText(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

// Sets one field from a YAML node. `where` prefixes the message ("config.yaml:12", "--set ...").
// Long: one short case per field type, side by side so that every type's parsing and errors read
// alike.
absl::Status SetField(Config& config, const FieldSpec& f, const YAML::Node& node, const std::string& where) {
  auto type_error = [&]() {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": key '", f.key, "' expects ", TypeName(f), ", got '", NodeText(node), "'"));
  };
  void* target = f.ref(config);
  try {
    switch (f.type) {
      case FieldType::kInt: {
        if (!node.IsScalar()) return type_error();
        // yaml-cpp accepts "1e3" as int64 nowhere; accept integral floats written as 1e3.
        int64_t value;
        if (!f.zero_word.empty() && node.Scalar() == f.zero_word) {
          value = 0;
        } else if (!YAML::convert<int64_t>::decode(node, value)) {
          double d;
          if (!YAML::convert<double>::decode(node, d) || std::floor(d) != d) return type_error();
          // An integer too large for int64 (yaml-cpp refuses it as int64, then reads it as a double).
          if (std::fabs(d) > 9.2e18) {
            return absl::InvalidArgumentError(absl::StrCat(where, ": key '", f.key, "' = ", NodeText(node),
                                                           " does not fit a 64-bit integer"));
          }
          value = static_cast<int64_t>(d);
        }
        *static_cast<int64_t*>(target) = value;
        break;
      }
      case FieldType::kFloat: {
        double value;
        if (!node.IsScalar() || !YAML::convert<double>::decode(node, value) || std::isnan(value)) {
          return type_error();
        }
        *static_cast<double*>(target) = value;
        break;
      }
      case FieldType::kBool: {
        bool value;
        if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) return type_error();
        *static_cast<bool*>(target) = value;
        break;
      }
      case FieldType::kString: {
        if (!node.IsScalar() && !node.IsNull()) return type_error();
        std::string value = node.IsNull() ? "" : node.Scalar();
        if (!f.choices.empty() && std::find(f.choices.begin(), f.choices.end(), value) == f.choices.end()) {
          return type_error();
        }
        *static_cast<std::string*>(target) = value;
        break;
      }
      case FieldType::kEnum: {
        if (!node.IsScalar() && !node.IsNull()) return type_error();
        const std::string value = node.IsNull() ? "" : node.Scalar();
        if (!f.choices.empty() && std::find(f.choices.begin(), f.choices.end(), value) == f.choices.end()) {
          return type_error();
        }
        if (!f.enum_set(target, value)) return type_error();
        break;
      }
      case FieldType::kIntList: {
        std::vector<int64_t> values;
        auto parse_item = [&](const YAML::Node& item) {
          int64_t value;
          if (!item.IsScalar() || !YAML::convert<int64_t>::decode(item, value)) return false;
          values.push_back(value);
          return true;
        };
        if (node.IsScalar()) {
          if (!parse_item(node)) return type_error();
        } else if (node.IsSequence()) {
          for (const YAML::Node& item : node) {
            if (!parse_item(item)) return type_error();
          }
        } else if (!node.IsNull()) {
          return type_error();
        }
        *static_cast<std::vector<int64_t>*>(target) = values;
        break;
      }
      case FieldType::kCorpusList: {
        std::vector<CorpusEntry> values;
        auto parse_item = [&](const YAML::Node& item) -> absl::Status {
          CorpusEntry entry;
          if (item.IsScalar()) {
            entry.prefix = item.Scalar();
          } else if (item.IsMap()) {
            for (const auto& kv : item) {
              const std::string k = kv.first.IsScalar() ? kv.first.Scalar() : "?";
              if (k == "prefix" && kv.second.IsScalar()) {
                entry.prefix = kv.second.Scalar();
              } else if (k == "weight" && kv.second.IsScalar() &&
                         YAML::convert<double>::decode(kv.second, entry.weight) &&
                         std::isfinite(entry.weight)) {
              } else {
                return absl::InvalidArgumentError(
                    absl::StrCat(where, ": key '", f.key, "': unexpected '", k, ": ", NodeText(kv.second),
                                 "' in a corpus entry: expected prefix: PATH and weight: NUMBER"));
              }
            }
          } else {
            return type_error();
          }
          if (entry.prefix.empty()) {
            return absl::InvalidArgumentError(absl::StrCat(where, ": key '", f.key, "': a corpus entry '",
                                                           NodeText(item), "' has no prefix"));
          }
          if (entry.weight < 0) {
            return absl::InvalidArgumentError(absl::StrCat(where, ": key '", f.key, "': corpus '",
                                                           entry.prefix, "' has weight ", entry.weight,
                                                           ": expected a weight >= 0"));
          }
          values.push_back(entry);
          return absl::OkStatus();
        };
        if (node.IsScalar() || node.IsMap()) {
          TS_RETURN_IF_ERROR(parse_item(node));
        } else if (node.IsSequence()) {
          for (const YAML::Node& item : node) TS_RETURN_IF_ERROR(parse_item(item));
        } else if (!node.IsNull()) {
          return type_error();
        }
        *static_cast<std::vector<CorpusEntry>*>(target) = values;
        break;
      }
    }
  } catch (const YAML::Exception&) {
    return type_error();
  }
  return absl::OkStatus();
}

// What yaml-cpp's exception says, except for its nesting limit: since 0.7 yaml-cpp's parser stops
// at a fixed recursion depth (500 here), long before the stack runs out, but reports it as "bad
// file". (tests/config checks 100000-deep documents of every kind.)
std::string YamlErrorText(const YAML::Exception& e) {
  if (const auto* deep = dynamic_cast<const YAML::DeepRecursion*>(&e)) {
    return absl::StrCat("nested too deeply (the YAML parser stops at a depth of ", deep->depth(), ")");
  }
  return e.msg;
}

std::string MarkText(const std::string& file, const YAML::Mark& mark) {
  if (mark.is_null()) return file;
  return absl::StrCat(file, ":", mark.line + 1);
}

// Applies a YAML mapping whose keys are relative to `prefix` ("" at the top level).
absl::Status ApplyMapping(Config& config, const YAML::Node& map, const std::string& prefix,
                          const std::string& file) {
  for (const auto& item : map) {
    const YAML::Node& key_node = item.first;
    const YAML::Node& value = item.second;
    const std::string where = MarkText(file, key_node.Mark());
    if (!key_node.IsScalar()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": keys must be plain names"));
    }
    const std::string key = prefix.empty() ? key_node.Scalar() : prefix + "." + key_node.Scalar();
    if (prefix.empty() && key == "base") continue;  // handled by the loader
    if (const FieldSpec* f = FindField(key)) {
      TS_RETURN_IF_ERROR(SetField(config, *f, value, where));
    } else if (IsSectionPrefix(key)) {
      if (!value.IsMap()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": '", key, "' is a section and expects a mapping of keys"));
      }
      TS_RETURN_IF_ERROR(ApplyMapping(config, value, key, file));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown key '", key, "'", Suggestion(key)));
    }
  }
  return absl::OkStatus();
}

absl::Status ApplyFile(Config& config, const std::string& path, std::set<std::string>& visiting) {
  std::error_code ec;
  const std::string canonical = std::filesystem::weakly_canonical(path, ec).string();
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("config file '", path, "' does not exist"));
  }
  if (!visiting.insert(canonical).second) {
    return absl::InvalidArgumentError(absl::StrCat("config file '", path, "' includes itself"));
  }
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(MarkText(path, e.mark), ": not valid YAML: ", YamlErrorText(e)));
  }
  if (root.IsNull()) return absl::OkStatus();  // an empty file sets nothing
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a mapping of keys at the top level"));
  }
  if (const YAML::Node base = root["base"]) {
    if (!base.IsScalar()) {
      return absl::InvalidArgumentError(
          absl::StrCat(MarkText(path, base.Mark()), ": 'base' expects a file name"));
    }
    std::filesystem::path base_path = base.Scalar();
    if (base_path.is_relative()) base_path = std::filesystem::path(path).parent_path() / base_path;
    TS_RETURN_IF_ERROR(ApplyFile(config, base_path.string(), visiting));
  }
  return ApplyMapping(config, root, "", path);
}

std::string FormatNumber(double v) {
  // The shortest text that reads back as the same double (0.7, not 0.69999999999999996).
  std::string s;
  for (int precision = 15; precision <= 17; ++precision) {
    std::ostringstream out;
    out.precision(precision);
    out << v;
    s = out.str();
    if (std::strtod(s.c_str(), nullptr) == v) break;
  }
  // Keep floats recognisable as floats in YAML.
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string FieldValueText(Config& config, const FieldSpec& f) {
  void* target = f.ref(config);
  switch (f.type) {
    case FieldType::kInt: {
      const int64_t value = *static_cast<int64_t*>(target);
      return value == 0 && !f.zero_word.empty() ? f.zero_word : std::to_string(value);
    }
    case FieldType::kFloat:
      return FormatNumber(*static_cast<double*>(target));
    case FieldType::kBool:
      return *static_cast<bool*>(target) ? "true" : "false";
    case FieldType::kString: {
      YAML::Emitter out;
      out << YAML::DoubleQuoted << *static_cast<std::string*>(target);
      return out.c_str();
    }
    case FieldType::kEnum: {
      YAML::Emitter out;
      out << YAML::DoubleQuoted << f.enum_text(target);
      return out.c_str();
    }
    case FieldType::kIntList:
      return absl::StrCat("[", absl::StrJoin(*static_cast<std::vector<int64_t>*>(target), ", "), "]");
    case FieldType::kCorpusList: {
      std::vector<std::string> items;
      for (const CorpusEntry& e : *static_cast<std::vector<CorpusEntry>*>(target)) {
        YAML::Emitter out;
        out << YAML::DoubleQuoted << e.prefix;
        items.push_back(absl::StrCat("{prefix: ", out.c_str(), ", weight: ", FormatNumber(e.weight), "}"));
      }
      return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
    }
  }
  return "";
}

absl::Status Invalid(const std::string& source, const std::string& message) {
  return absl::InvalidArgumentError(source.empty() ? message : absl::StrCat(source, ": ", message));
}

}  // namespace

template <>
std::span<const std::string_view> EnumNames<Precision>() {
  static constexpr std::string_view kNames[] = {"fp32", "bf16"};
  return kNames;
}
template <>
std::span<const std::string_view> EnumNames<DeviceChoice>() {
  static constexpr std::string_view kNames[] = {"auto", "cpu", "cuda"};
  return kNames;
}
template <>
std::span<const std::string_view> EnumNames<DivergencePolicy>() {
  static constexpr std::string_view kNames[] = {"stop", "rollback"};
  return kNames;
}
template <>
std::span<const std::string_view> EnumNames<CommBackend>() {
  static constexpr std::string_view kNames[] = {"auto", "local", "mpi", "nccl"};
  return kNames;
}
template <>
std::span<const std::string_view> EnumNames<RecomputeMode>() {
  static constexpr std::string_view kNames[] = {"none", "selective", "full"};
  return kNames;
}
template <>
std::span<const std::string_view> EnumNames<AttentionBackend>() {
  static constexpr std::string_view kNames[] = {"auto", "cudnn", "flash", "efficient", "math"};
  return kNames;
}
template <>
std::span<const std::string_view> EnumNames<RopeScaling>() {
  static constexpr std::string_view kNames[] = {"none", "llama3", "linear"};
  return kNames;
}
template <>
std::span<const std::string_view> EnumNames<CudaGraphsMode>() {
  static constexpr std::string_view kNames[] = {"auto", "true", "false"};
  return kNames;
}
template <>
std::span<const std::string_view> EnumNames<PipelineScheduleKind>() {
  static constexpr std::string_view kNames[] = {"gpipe", "1f1b", "interleaved", "zb-h1"};
  return kNames;
}

const std::vector<FieldSpec>& ConfigSchema() {
  static const std::vector<FieldSpec>* schema = new std::vector<FieldSpec>(BuildSchema());
  return *schema;
}

absl::Status ApplyOverride(Config& config, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  // Messages quote the assignment, shortened: a hostile one may be megabytes long.
  const std::string where = absl::StrCat(
      "--set ", assignment.size() > 120 ? absl::StrCat(assignment.substr(0, 117), "...") : assignment);
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected KEY=VALUE, e.g. train.lr=1e-3"));
  }
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  const FieldSpec* f = FindField(key);
  if (!f) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": unknown key '", key, "'", Suggestion(key)));
  }
  YAML::Node node;
  try {
    node = text.empty() ? YAML::Node(std::string()) : YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": value is not valid YAML: ", YamlErrorText(e)));
  }
  return SetField(config, *f, node, where);
}

namespace {

// The head width: derived from dim and n_heads unless model.head_dim sets it.
absl::Status ValidateHeadDim(const ModelConfig& m, const std::string& src) {
  if (m.explicit_head_dim > 0) {
    if (m.explicit_head_dim % 2 != 0) {
      return Invalid(src, absl::StrCat("model.head_dim = ", m.explicit_head_dim,
                                       " is odd: rotary embeddings rotate pairs and need an even "
                                       "head dimension"));
    }
    return absl::OkStatus();
  }
  if (m.dim % m.n_heads != 0) {
    return Invalid(src,
                   absl::StrCat("model.dim = ", m.dim, " is not divisible by model.n_heads = ", m.n_heads,
                                ": expected dim to be a multiple of n_heads, or model.head_dim set"));
  }
  if ((m.dim / m.n_heads) % 2 != 0) {
    return Invalid(src, absl::StrCat("head dimension model.dim / model.n_heads = ", m.dim / m.n_heads,
                                     " is odd: rotary embeddings rotate pairs and need an even "
                                     "head dimension"));
  }
  return absl::OkStatus();
}

// model.rope_scaling and its parameters: each scaling needs exactly the keys it reads, so that
// a forgotten key is not silently a default and a key meant for another scaling is not ignored.
absl::Status ValidateRopeScaling(const ModelConfig& m, const std::string& src) {
  const std::string type = EnumName(m.rope_scaling);
  const bool llama3 = m.rope_scaling == RopeScaling::kLlama3;
  const bool any = m.rope_scaling != RopeScaling::kNone;
  struct Key {
    const char* name;
    double value;
    std::string text;  // as written: 8.0 for a number, 8192 for the integer key
    bool used;
    const char* readers;  // the scalings that read the key
  };
  const Key keys[] = {
      {"model.rope_factor", m.rope_factor, FormatNumber(m.rope_factor), any, "linear and llama3 read it"},
      {"model.rope_low_freq_factor", m.rope_low_freq_factor, FormatNumber(m.rope_low_freq_factor), llama3,
       "only llama3 reads it"},
      {"model.rope_high_freq_factor", m.rope_high_freq_factor, FormatNumber(m.rope_high_freq_factor), llama3,
       "only llama3 reads it"},
      {"model.rope_original_max_position_embeddings",
       static_cast<double>(m.rope_original_max_position_embeddings),
       absl::StrCat(m.rope_original_max_position_embeddings), llama3, "only llama3 reads it"},
  };
  for (const Key& k : keys) {
    if (k.used && !(k.value > 0)) {
      return Invalid(src, absl::StrCat("model.rope_scaling = ", type, " needs ", k.name, " > 0; ", k.name,
                                       " = ", k.text, k.value == 0 ? " (unset)" : ""));
    }
    if (!k.used && k.value != 0) {
      return Invalid(
          src, absl::StrCat(k.name, " = ", k.text, " has no effect under model.rope_scaling = ", type, " (",
                            k.readers, "): set model.rope_scaling, or remove the key"));
    }
  }
  if (llama3 && !(m.rope_low_freq_factor < m.rope_high_freq_factor)) {
    return Invalid(src, absl::StrCat("model.rope_low_freq_factor = ", FormatNumber(m.rope_low_freq_factor),
                                     " is not below model.rope_high_freq_factor = ",
                                     FormatNumber(m.rope_high_freq_factor),
                                     ": llama3 scaling blends the frequencies between the two "
                                     "wavelengths L / high < L / low"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateModelConfig(const Config& config) {
  const std::string& src = config.source;
  const ModelConfig& m = config.model;
  TS_RETURN_IF_ERROR(ValidateHeadDim(m, src));
  TS_RETURN_IF_ERROR(ValidateRopeScaling(m, src));
  if (m.n_heads % m.n_kv_heads != 0) {
    return Invalid(src, absl::StrCat("model.n_heads = ", m.n_heads,
                                     " is not divisible by model.n_kv_heads = ", m.n_kv_heads,
                                     ": each key/value head must serve a whole group of query heads"));
  }
  // Entries below 1 are the partition's to explain; above n_layers they are wrong too, and bounding
  // them here keeps their sum far from overflowing int64.
  for (size_t k = 0; k < config.parallel.pp_layers.size(); ++k) {
    if (config.parallel.pp_layers[k] > m.n_layers) {
      return Invalid(src, absl::StrCat("parallel.pp_layers entry ", k, " = ", config.parallel.pp_layers[k],
                                       " exceeds model.n_layers = ", m.n_layers));
    }
  }
  if (m.recompute_layers != 0 && m.recompute != RecomputeMode::kFull) {
    return Invalid(
        src, absl::StrCat("model.recompute_layers = ", m.recompute_layers,
                          " counts the blocks that model.recompute: full recomputes; model.recompute is ",
                          EnumName(m.recompute), " (selective recomputes parts of every block)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateConfig(const Config& const_config) {
  Config config = const_config;  // FieldSpec::ref takes a mutable Config
  const std::string& src = config.source;
  for (const FieldSpec& f : ConfigSchema()) {
    if (!f.has_range) continue;
    double value = f.type == FieldType::kInt ? static_cast<double>(*static_cast<int64_t*>(f.ref(config)))
                                             : *static_cast<double*>(f.ref(config));
    if (value < f.min || value > f.max) {
      return Invalid(src, absl::StrCat("key '", f.key, "' = ", FieldValueText(config, f),
                                       " is out of range: expected a value in [", f.min, ", ", f.max, "]"));
    }
  }
  TS_RETURN_IF_ERROR(ValidateModelConfig(config));
  const ModelConfig& m = config.model;
  const TrainConfig& t = config.train;
  if (t.global_batch % t.micro_batch != 0) {
    return Invalid(src, absl::StrCat("train.global_batch = ", t.global_batch,
                                     " is not a multiple of train.micro_batch = ", t.micro_batch));
  }
  if (t.min_lr > t.lr) {
    return Invalid(src, absl::StrCat("train.min_lr = ", FormatNumber(t.min_lr),
                                     " is above train.lr = ", FormatNumber(t.lr)));
  }
  const CheckpointConfig& c = config.checkpoint;
  if (!c.init_from.empty() && c.resume != "auto" && c.resume != "never") {
    return Invalid(
        src, absl::StrCat("checkpoint.init_from = '", c.init_from, "' beside checkpoint.resume = '", c.resume,
                          "': a run starts either from a checkpoint's whole state "
                          "(resume) or from weights alone (init_from), not both"));
  }
  TS_RETURN_IF_ERROR(ValidateParallelConfig(config));
  const ParallelConfig& p = config.parallel;
  if (m.n_heads % p.tp != 0) {
    return Invalid(src, absl::StrCat("parallel.tp = ", p.tp, " does not divide model.n_heads = ", m.n_heads,
                                     ": each tensor-parallel rank must hold whole query heads"));
  }
  if (m.n_kv_heads % p.tp != 0 && p.tp % m.n_kv_heads != 0) {
    return Invalid(src, absl::StrCat("parallel.tp = ", p.tp, " and model.n_kv_heads = ", m.n_kv_heads,
                                     ": expected one to divide the other, so that the key/value "
                                     "heads split evenly or each rank needs exactly one"));
  }
  if (p.sequence_parallel && t.seq_len % p.tp != 0) {
    return Invalid(src, absl::StrCat("parallel.sequence_parallel needs train.seq_len = ", t.seq_len,
                                     " to be divisible by parallel.tp = ", p.tp));
  }
  if (p.pp * p.virtual_stages > m.n_layers) {
    return Invalid(
        src, absl::StrCat("parallel.pp x parallel.virtual_stages = ", p.pp, " x ", p.virtual_stages, " = ",
                          p.pp * p.virtual_stages, " model chunks, but model.n_layers = ", m.n_layers,
                          ": every chunk needs at least one layer"));
  }
  const DataConfig& d = config.data;
  if (d.train.empty()) {
    return Invalid(src,
                   "no training data: set data.train (prefixes of Megatron-format corpora, "
                   "e.g. written by `tessera preprocess`)");
  }
  double weight_sum = 0;
  for (const CorpusEntry& e : d.train) weight_sum += e.weight;
  if (weight_sum <= 0) {
    return Invalid(src, "data.train: every corpus has weight 0: expected at least one positive weight");
  }
  if ((d.document_mask || d.reset_position_ids) && d.eod_token < 0) {
    return Invalid(src, absl::StrCat(d.document_mask ? "data.document_mask" : "data.reset_position_ids",
                                     " finds documents by their end-of-document token: set data.eod_token to "
                                     "its id (the tokenizer's eod token, which `tessera preprocess` appends "
                                     "after each document)"));
  }
  if (d.eod_token >= m.vocab_size) {
    return Invalid(src, absl::StrCat("data.eod_token = ", d.eod_token,
                                     " is not below model.vocab_size = ", m.vocab_size));
  }
  if (t.eval_every > 0 && d.val.empty()) {
    return Invalid(src, absl::StrCat("train.eval_every = ", t.eval_every,
                                     " needs held-out data: set data.val, or train.eval_every: 0"));
  }
  return absl::OkStatus();
}

absl::Status ValidateParallelConfig(const Config& config) {
  const ParallelConfig& p = config.parallel;
  const std::string& r = p.rendezvous;
  if (r != "auto" && r != "mpi" && r != "tcp" && !(r.rfind("file:", 0) == 0 && r.size() > 5)) {
    return Invalid(config.source,
                   absl::StrCat("parallel.rendezvous = '", r, "': expected auto, mpi, tcp or file:PATH"));
  }
  if (p.backend == CommBackend::kLocal && p.tp * p.cp * p.pp * std::max<int64_t>(p.dp, 1) > 1) {
    return Invalid(
        config.source,
        absl::StrCat("parallel.backend = local runs one process, but tp x cp x pp x dp = ", p.tp, " x ", p.cp,
                     " x ", p.pp, " x ", p.dp == 0 ? "auto" : std::to_string(p.dp), " asks for more"));
  }
  std::vector<std::string> names = absl::StrSplit(p.order, '-');
  std::sort(names.begin(), names.end());
  const std::vector<std::string> three = {"dp", "pp", "tp"}, four = {"cp", "dp", "pp", "tp"};
  if (names != three && names != four) {
    return Invalid(config.source, absl::StrCat("parallel.order = '", p.order,
                                               "': expected tp, pp, dp and optionally cp, each once, joined "
                                               "by '-' (innermost first), e.g. tp-cp-dp-pp or tp-dp-pp"));
  }
  if (p.cp > 1 && config.train.seq_len % (2 * p.cp) != 0) {
    return Invalid(config.source,
                   absl::StrCat("parallel.cp = ", p.cp, " cuts each sequence into 2 x cp = ", 2 * p.cp,
                                " chunks, but train.seq_len = ", config.train.seq_len,
                                " is not a multiple of ", 2 * p.cp));
  }
  if (p.cp > 1 && config.model.attention_backend == AttentionBackend::kFlash) {
    return Invalid(config.source, absl::StrCat("parallel.cp = ", p.cp,
                                               ": context-parallel attention masks each chunk at its offset in the "
                                               "sequence, and model.attention_backend = flash takes no mask (use "
                                               "auto, efficient or math)"));
  }
  if (p.cp > 1 && p.sequence_parallel && p.tp > 1 && (config.train.seq_len / p.cp) % p.tp != 0) {
    return Invalid(config.source,
                   absl::StrCat("parallel.sequence_parallel splits each rank's ", config.train.seq_len / p.cp,
                                " tokens (train.seq_len / parallel.cp) over tp = ", p.tp,
                                " ranks: it must be a multiple of ", p.tp));
  }
  return absl::OkStatus();
}

absl::StatusOr<Config> LoadConfig(const std::string& path, const std::vector<std::string>& overrides) {
  Config config;
  config.source = path;
  std::set<std::string> visiting;
  TS_RETURN_IF_ERROR(ApplyFile(config, path, visiting));
  for (const std::string& o : overrides) TS_RETURN_IF_ERROR(ApplyOverride(config, o));
  TS_RETURN_IF_ERROR(ValidateConfig(config));
  return config;
}

absl::StatusOr<Config> ConfigFromYamlString(const std::string& yaml, const std::string& source) {
  Config config;
  config.source = source;
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(MarkText(source, e.mark), ": not valid YAML: ", YamlErrorText(e)));
  }
  if (root.IsNull()) return config;
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": expected a mapping of keys at the top level"));
  }
  if (root["base"]) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": 'base' includes are not allowed here"));
  }
  TS_RETURN_IF_ERROR(ApplyMapping(config, root, "", source));
  return config;
}

absl::StatusOr<Config> ConfigFromOverrides(const std::vector<std::string>& overrides) {
  Config config;
  for (const std::string& o : overrides) TS_RETURN_IF_ERROR(ApplyOverride(config, o));
  TS_RETURN_IF_ERROR(ValidateConfig(config));
  return config;
}

std::string ConfigToYaml(const Config& const_config) {
  Config config = const_config;
  std::string out = "# Effective Tessera config: every key, after includes and --set overrides.\n";
  std::string section;
  for (const FieldSpec& f : ConfigSchema()) {
    const size_t dot = f.key.find('.');
    const std::string this_section = f.key.substr(0, dot);
    if (this_section != section) {
      section = this_section;
      absl::StrAppend(&out, section, ":\n");
    }
    absl::StrAppend(&out, "  ", f.key.substr(dot + 1), ": ", FieldValueText(config, f), "\n");
  }
  return out;
}

std::string ConfigSchemaMarkdown() {
  Config defaults;
  std::string out =
      "# Configuration reference\n\n"
      "Generated by `tessera config --markdown` from the schema in config/config.cc; a test keeps "
      "this file in step with the code.\n\n"
      "A config is a YAML file of these keys, nested by section (`train:` then `lr: 3e-4`). "
      "`base: other.yaml` at the top level includes another file first (relative to the "
      "including file); keys set later win. `--set section.key=value` on the command line "
      "overrides after all files (the value is YAML: `--set data.train=[{prefix: a, weight: 2}, b]`). "
      "Unknown keys, "
      "wrong types and values out of range are errors that name the file and line or the "
      "`--set`. The effective config is written to `RUN_DIR/config.yaml`.\n\n";
  std::string section;
  for (const FieldSpec& f : ConfigSchema()) {
    const std::string this_section = f.key.substr(0, f.key.find('.'));
    if (this_section != section) {
      section = this_section;
      absl::StrAppend(&out, "\n## ", section,
                      "\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n");
    }
    std::string type = TypeName(f);
    if (f.has_range) {
      type += absl::StrCat(" in [", f.min, ", ", f.max, "]");
    }
    absl::StrAppend(&out, "| `", f.key, "` | ", type, " | `", FieldValueText(defaults, f), "` | ", f.doc,
                    " |\n");
  }
  return out;
}

}  // namespace tessera
