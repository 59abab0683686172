// The model's sharding plan (sharding.h): the pipeline split, each parameter's tensor-parallel
// layout, and what each parameter is to the optimizer and the gradient reduction.
#include "model/sharding.h"

#include <algorithm>
#include <string>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "model/model.h"
#include "parallel/tensor_parallel/vocab_parallel.h"

namespace tessera {
namespace {

parallel::ShardSpec Spec(int dim, int parts, int index, int64_t global_size, int replicas = 1) {
  parallel::ShardSpec spec;
  spec.dim = dim;
  spec.parts = parts;
  spec.index = index;
  spec.global_size = global_size;
  spec.replicas = replicas;
  return spec;
}

}  // namespace

absl::Status ValidateShardOptions(const ModelConfig& config, int64_t max_seq_len,
                                  const ModelShardOptions& options) {
  const ModelShardOptions& o = options;
  if (o.first_layer < 0 || o.first_layer > config.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("model chunk: first_layer = ", o.first_layer,
                                                   " is outside [0, n_layers = ", config.n_layers, "]"));
  }
  if (o.num_layers < -1 || o.first_layer + std::max<int64_t>(o.num_layers, 0) > config.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model chunk: layers [", o.first_layer, ", ", o.first_layer + o.num_layers,
        ") do not fit in n_layers = ", config.n_layers, " (num_layers = -1 takes all remaining)"));
  }
  const int64_t count = o.num_layers < 0 ? config.n_layers - o.first_layer : o.num_layers;
  if (count == 0 && !o.has_embedding && !o.has_head) {
    return absl::InvalidArgumentError(
        "model chunk: no layers, no embedding and no head: the chunk holds nothing");
  }
  const int64_t tp = o.tp == nullptr ? 1 : o.tp->size();
  if (tp <= 1) return absl::OkStatus();
  if (config.n_heads % tp != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor parallelism splits the query heads over the ranks: model.n_heads = ", config.n_heads,
        " is not a multiple of tp = ", tp));
  }
  if (config.n_kv_heads % tp != 0 && tp % config.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor parallelism needs model.n_kv_heads = ", config.n_kv_heads, " to be a multiple of tp = ", tp,
        " (kv heads split over the ranks) or a divisor of it (each kv head replicated on tp / n_kv_heads "
        "ranks)"));
  }
  if (config.ffn_dim % tp != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor parallelism splits the MLP's hidden features: model.ffn_dim = ", config.ffn_dim,
                     " is not a multiple of tp = ", tp));
  }
  if (o.sequence_parallel && max_seq_len % tp != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence parallelism splits each sequence over the ranks: seq_len = ", max_seq_len,
                     " is not a multiple of tp = ", tp));
  }
  return absl::OkStatus();
}

parallel::pipeline::StageCosts PipelineStageCosts(const ModelConfig& config, int64_t seq_len) {
  ModelConfig one_layer = config;
  one_layer.n_layers = 1;
  parallel::pipeline::StageCosts costs;
  costs.layer =
      6.0 * (MatmulParameterCount(one_layer) - config.vocab_size * config.dim) + 12.0 * seq_len * config.dim;
  costs.head = 6.0 * config.vocab_size * config.dim;
  costs.embedding = 0;
  return costs;
}

absl::StatusOr<parallel::pipeline::Partition> PlanPartition(const ModelConfig& config, int64_t seq_len,
                                                            int64_t pp, int64_t v,
                                                            const std::vector<int64_t>& pp_layers) {
  absl::StatusOr<parallel::pipeline::Partition> split;
  if (pp_layers.empty()) {
    split =
        parallel::pipeline::BalancedPartition(config.n_layers, pp, v, PipelineStageCosts(config, seq_len));
    if (!split.ok()) return split;
  } else {
    split = parallel::pipeline::ExplicitPartition(config.n_layers, pp, v, pp_layers);
    if (!split.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("parallel.pp_layers: ", split.status().message()));
    }
  }
  // Checked here, on the whole partition, so every rank reaches the same verdict: a chunk with
  // fewer layers than recompute_layers recomputes all of its blocks (a balanced split gives the
  // stages with the embedding or the head fewer), but a count above every chunk's is a mistake.
  if (config.recompute == RecomputeMode::kFull && config.recompute_layers > 0) {
    int64_t largest = 0, first = 0, first_of_largest = 0;
    for (int64_t layers : split->layers) {
      if (layers > largest) {
        largest = layers;
        first_of_largest = first;
      }
      first += layers;
    }
    if (config.recompute_layers > largest) {
      return absl::InvalidArgumentError(absl::StrCat("model.recompute_layers = ", config.recompute_layers,
                                                     " is more than the ", largest,
                                                     " layer(s) of the largest model chunk (layers [",
                                                     first_of_largest, ", ", first_of_largest + largest,
                                                     ")): it counts blocks per chunk (per pipeline stage, or "
                                                     "per virtual stage), from the chunk's first; "
                                                     "at most ",
                                                     largest, ", or all"));
    }
  }
  return split;
}

std::vector<ModelShardOptions> ChunkShardOptions(const parallel::pipeline::Partition& partition,
                                                 int64_t pp_rank, parallel::Communicator* tp,
                                                 bool sequence_parallel) {
  std::vector<ModelShardOptions> chunks;
  for (int64_t c = 0; c < partition.v; ++c) {
    ModelShardOptions shard;
    shard.tp = tp;
    shard.sequence_parallel = sequence_parallel;
    shard.first_layer = partition.FirstLayer(pp_rank, c);
    shard.num_layers = partition.NumLayers(pp_rank, c);
    shard.has_embedding = partition.HasEmbedding(pp_rank, c);
    shard.has_head = partition.HasHead(pp_rank, c);
    chunks.push_back(shard);
  }
  return chunks;
}

absl::StatusOr<ParameterLayout> LayoutOfParameter(const ModelConfig& config, const std::string& name,
                                                  int tp_size, int tp_rank) {
  const size_t dot = name.rfind('.');
  const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  const int n = tp_size, r = tp_rank;
  const int64_t hd = config.head_dim(), q = config.n_heads * hd, kv = config.n_kv_heads * hd;
  if (leaf == "tok_embeddings" || leaf == "output") {
    return ParameterLayout{parallel::VocabShard(config.vocab_size, n, r), {config.vocab_size, config.dim}};
  }
  if (leaf == "norm" || leaf == "attention_norm" || leaf == "ffn_norm") {
    return ParameterLayout{Spec(-1, 1, 0, config.dim), {config.dim}};
  }
  if (leaf == "wq") return ParameterLayout{Spec(0, n, r, q), {q, config.dim}};
  if (leaf == "wk" || leaf == "wv") {
    if (config.n_kv_heads % n == 0) return ParameterLayout{Spec(0, n, r, kv), {kv, config.dim}};
    // Fewer kv heads than ranks: rank r's query heads all use kv head r / (n / n_kv_heads),
    // which n / n_kv_heads consecutive ranks hold.
    const int replicas = n / static_cast<int>(config.n_kv_heads);
    return ParameterLayout{Spec(0, static_cast<int>(config.n_kv_heads), r / replicas, kv, replicas),
                           {kv, config.dim}};
  }
  if (leaf == "wo") return ParameterLayout{Spec(1, n, r, q), {config.dim, q}};
  if (leaf == "w_gate" || leaf == "w_up")
    return ParameterLayout{Spec(0, n, r, config.ffn_dim), {config.ffn_dim, config.dim}};
  if (leaf == "w_down") return ParameterLayout{Spec(1, n, r, config.ffn_dim), {config.dim, config.ffn_dim}};
  return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a parameter of the model"));
}

std::vector<int64_t> LocalShape(const ParameterLayout& layout) {
  std::vector<int64_t> shape = layout.global_shape;
  if (layout.shard.dim >= 0) shape[layout.shard.dim] = layout.shard.block_size();
  return shape;
}

std::vector<ParameterInfo> ChunkParameterLayouts(const ModelConfig& config, const ModelShardOptions& options,
                                                 int tp_size, int tp_rank) {
  std::vector<std::string> names;
  if (options.has_embedding) names.push_back("tok_embeddings");
  if (options.has_head) {
    names.push_back("norm");
    if (!config.tie_embeddings || !options.has_embedding) names.push_back("output");
  }
  const int64_t count = options.num_layers < 0 ? config.n_layers - options.first_layer : options.num_layers;
  for (int64_t i = options.first_layer; i < options.first_layer + count; ++i) {
    for (const char* leaf :
         {"attention_norm", "ffn_norm", "attention.wq", "attention.wk", "attention.wv", "attention.wo",
          "feed_forward.w_gate", "feed_forward.w_up", "feed_forward.w_down"}) {
      names.push_back(absl::StrCat("layers.", i, ".", leaf));
    }
  }
  std::vector<ParameterInfo> infos;
  for (std::string& name : names) {
    absl::StatusOr<ParameterLayout> layout = LayoutOfParameter(config, name, tp_size, tp_rank);
    TORCH_CHECK(layout.ok(), std::string(layout.status().message()));
    ParameterInfo info;
    info.name = std::move(name);
    info.shard = layout->shard;
    info.global_shape = std::move(layout->global_shape);
    if (info.name == "output" && config.tie_embeddings) info.tied_copy_of = "tok_embeddings";
    infos.push_back(std::move(info));
  }
  return infos;
}

ParameterRole RoleOf(const ParameterInfo& info, const ModelConfig& config, const ShardingContext& context) {
  ParameterRole role;
  const bool embedding_like = info.logical_name() == "tok_embeddings";
  role.decay = (info.global_shape.size() >= 2 && !embedding_like) || context.decay_norms_and_embeddings;
  if (info.is_tied_copy()) {
    role.norm_weight = 0.0;
  } else if (info.shard.dim < 0) {
    role.norm_weight = 1.0 / static_cast<double>(context.tp);
  } else if (info.shard.replicas > 1) {
    role.norm_weight = 1.0 / info.shard.replicas;
  }
  role.tied_across_stages = config.tie_embeddings && context.pp > 1 && embedding_like;
  role.late =
      (context.sequence_parallel && info.shard.dim < 0) || info.shard.replicas > 1 || role.tied_across_stages;
  return role;
}

int ParameterUnit(const std::string& name, int64_t n_layers) {
  if (name == "tok_embeddings") return 0;
  if (name.starts_with("layers.")) {
    int64_t layer = 0;
    const size_t end = name.find('.', 7);
    if (end != std::string::npos && absl::SimpleAtoi(name.substr(7, end - 7), &layer)) {
      return static_cast<int>(layer + 1);
    }
  }
  return static_cast<int>(n_layers + 1);  // norm, output
}

namespace {

// Whether the parameters named `a` and `b` (full names) are rows of one product, `a` first, in
// the order Attention and FeedForward stack them (q|k|v, gate|up).
bool ReadTogether(const std::string& a, const std::string& b) {
  const size_t dot = a.rfind('.');
  if (dot == std::string::npos || b.rfind('.') != dot || a.compare(0, dot, b, 0, dot) != 0) return false;
  const std::string_view x = std::string_view(a).substr(dot + 1), y = std::string_view(b).substr(dot + 1);
  return (x == "wq" && y == "wk") || (x == "wk" && y == "wv") || (x == "w_gate" && y == "w_up");
}

}  // namespace

std::vector<PlannedParameter> PlanParameters(const std::vector<std::vector<ParameterInfo>>& chunk_infos,
                                             const ModelConfig& config, const ShardingContext& context) {
  std::vector<PlannedParameter> plan;
  for (size_t c = 0; c < chunk_infos.size(); ++c) {
    for (const ParameterInfo& info : chunk_infos[c]) {
      plan.push_back({info, static_cast<int>(c), RoleOf(info, config, context),
                      ParameterUnit(info.name, config.n_layers)});
    }
  }
  for (size_t i = 0; i + 1 < plan.size(); ++i) {
    plan[i].fuse_with_next = ReadTogether(plan[i].info.name, plan[i + 1].info.name);
  }
  return plan;
}

}  // namespace tessera
