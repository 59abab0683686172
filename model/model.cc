// Llama 3 forward pass, initialisation and tensor-parallel layout. Mixed precision is explicit
// rather than autocast: weights are cast to the compute dtype where they enter a matrix product
// (autograd returns fp32 gradients through the cast), the residual stream stays fp32, and
// RMSNorm, softmax-cross-entropy and the loss mean run in fp32.
//
// Tensor parallelism wraps each matrix product in the parallel layers (column-parallel qkv and
// gate|up, row-parallel wo and down, vocab-parallel embedding, head and loss). With a group of
// one those layers are exactly kernels::Linear and torch::embedding, and the loss takes
// LibTorch's cross_entropy as before, so a single process computes bit for bit what it did
// before tensor parallelism existed.
#include "model/model.h"

#include <torch/csrc/autograd/engine.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "kernels/add_rms_norm.h"
#include "kernels/attention_backend.h"
#include "kernels/linear.h"
#include "kernels/rms_norm.h"
#include "kernels/swiglu.h"
#include "kernels/weight_grad.h"
#include "model/recompute.h"
#include "parallel/tensor_parallel/chunked_cross_entropy.h"
#include "parallel/tensor_parallel/layers.h"
#include "parallel/tensor_parallel/mappings.h"
#include "parallel/tensor_parallel/norm_column_linear.h"
#include "parallel/tensor_parallel/vocab_parallel.h"

namespace tessera {
namespace {

// Softmax and loss reductions never run below fp32.
torch::Tensor AtLeastFloat(const torch::Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kHalf ? t.to(torch::kFloat) : t;
}

// 64-bit FNV-1a of the name, mixed with the seed: a stable per-parameter stream.
uint64_t ParameterSeed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull ^ (seed * 0x9E3779B97F4A7C15ull);
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

ParameterLayout LayoutOrThrow(const ModelConfig& config, const std::string& name, int tp_size, int tp_rank) {
  absl::StatusOr<ParameterLayout> layout = LayoutOfParameter(config, name, tp_size, tp_rank);
  TORCH_CHECK(layout.ok(), std::string(layout.status().message()));
  return *std::move(layout);
}

// An uninitialised tensor of this rank's shape for the parameter `name`.
torch::Tensor EmptyLocal(const ModelConfig& config, const std::string& name,
                         const TensorParallelContext& tp) {
  return torch::empty(LocalShape(LayoutOrThrow(config, name, tp.size, tp.rank)));
}

TensorParallelContext MakeContext(const ModelShardOptions& options) {
  TensorParallelContext context;
  if (options.tp != nullptr && options.tp->size() > 1) {
    context.group = options.tp;
    context.size = options.tp->size();
    context.rank = options.tp->rank();
    context.sequence_parallel = options.sequence_parallel;
  }
  return context;
}

// Sums the gradients of `params` over `group` in place, as one flat collective. Undefined
// gradients become zeros first, so every rank contributes the same sizes.
absl::Status SumGradients(const std::vector<torch::Tensor>& params, parallel::Communicator& group) {
  if (params.empty()) return absl::OkStatus();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat;
  for (const torch::Tensor& p : params) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p, p.options().dtype(torch::kFloat));
    flat.push_back(p.grad().reshape({-1}));
  }
  torch::Tensor buffer = torch::cat(flat);
  TS_RETURN_IF_ERROR(group.AllReduce(buffer, parallel::ReduceOp::kSum));
  int64_t offset = 0;
  for (const torch::Tensor& p : params) {
    const int64_t n = p.numel();
    p.grad().copy_(buffer.narrow(0, offset, n).view_as(p));
    offset += n;
  }
  return absl::OkStatus();
}

}  // namespace

AttentionImpl::AttentionImpl(const ModelConfig& config, const TensorParallelContext& tp)
    : tp_(tp),
      n_heads_(config.n_heads / tp.size),
      head_dim_(config.head_dim()),
      selective_(config.recompute == RecomputeMode::kSelective) {
  wq = register_parameter("wq", EmptyLocal(config, "wq", tp));
  wk = register_parameter("wk", EmptyLocal(config, "wk", tp));
  wv = register_parameter("wv", EmptyLocal(config, "wv", tp));
  wo = register_parameter("wo", EmptyLocal(config, "wo", tp));
  n_kv_heads_ = wk.size(0) / head_dim_;
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const AttentionInputs& inputs,
                                     const PreNorm* norm) {
  // One matrix product for q, k and v: a wider GEMM runs closer to peak than three narrow ones
  // (the trainer's flat buffers hold the three as one matrix, kernels::StackRows). Under sequence
  // parallelism it gathers the whole sequence first.
  torch::Tensor fused =
      norm == nullptr ? parallel::ColumnParallelLinear(x, {wq, wk, wv}, tp_.group, tp_.sequence_parallel)
                      : parallel::NormColumnParallelLinear(x, norm->weight, norm->eps, norm->dtype,
                                                           {wq, wk, wv}, tp_.group, tp_.sequence_parallel);
  // Under selective recomputation the core (rotary, the kv heads' expansion, attention) keeps only
  // its input q|k|v and runs again in backward: its saved rotated q and k, attention output and
  // softmax statistics (and expanded k and v off the CPU) do not live between the passes.
  const torch::Tensor y =
      selective_ ? Recompute(fused, [this, inputs](const torch::Tensor& qkv) { return Core(qkv, inputs); })
                 : Core(fused, inputs);
  return parallel::RowParallelLinear(y, wo, tp_.group, tp_.sequence_parallel);
}

torch::Tensor AttentionImpl::Core(const torch::Tensor& fused, const AttentionInputs& inputs) const {
  const int64_t batch = fused.size(0), seq = fused.size(1);
  std::vector<torch::Tensor> qkv =
      fused.split_with_sizes({n_heads_ * head_dim_, n_kv_heads_ * head_dim_, n_kv_heads_ * head_dim_}, -1);
  torch::Tensor q = qkv[0].view({batch, seq, n_heads_, head_dim_});
  torch::Tensor k = qkv[1].view({batch, seq, n_kv_heads_, head_dim_});
  torch::Tensor v = qkv[2].view({batch, seq, n_kv_heads_, head_dim_});
  if (inputs.per_token_rotary) {
    q = kernels::ApplyRotaryPerToken(q, inputs.rotary).transpose(1, 2);  // [B, H, T, hd]
    k = kernels::ApplyRotaryPerToken(k, inputs.rotary).transpose(1, 2);
  } else {
    q = kernels::ApplyRotary(q, inputs.rotary).transpose(1, 2);
    k = kernels::ApplyRotary(k, inputs.rotary).transpose(1, 2);
  }
  v = v.transpose(1, 2);
  if (inputs.context != nullptr) {
    const torch::Tensor y = parallel::ContextParallelAttention(q, k, v, *inputs.context);
    return y.transpose(1, 2).reshape({batch, seq, n_heads_ * head_dim_});
  }
  // Each kv head serves n_heads / n_kv_heads consecutive query heads (on this rank too: its
  // query heads are consecutive and their kv heads are the ones it holds). The fused kernels read
  // shared kv heads themselves (enable_gqa; on the CPU measured ~13% faster per attention
  // forward + backward than expanding, and no copies of k and v); only where no fused kernel
  // takes grouped inputs are k and v expanded, which keeps a fused kernel rather than the math.
  // The document mask off the CPU: the kernels that take a mask may not take grouped heads, so
  // those are expanded; the variable-length flash kernel (kernels/document_attention.h) reads them
  // in place.
  const kernels::DocumentAttentionPlan* documents = inputs.documents.get();
  const bool grouped = n_kv_heads_ != n_heads_;
  const bool varlen = documents != nullptr && kernels::UsesVarlenFlash(*documents, q, k, v, grouped);
  const bool masked = documents != nullptr && !documents->per_document && !varlen;
  const bool native_gqa =
      grouped && (varlen || (masked ? q.device().is_cpu() : kernels::NativeGroupedAttention(q, k, v)));
  if (grouped && !native_gqa) {
    k = kernels::ExpandKvHeads(k, n_heads_);
    v = kernels::ExpandKvHeads(v, n_heads_);
  }
  torch::Tensor y = documents != nullptr
                        ? kernels::DocumentAttention(q, k, v, *documents, native_gqa)
                        : at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                                           /*is_causal=*/true, /*scale=*/std::nullopt,
                                                           /*enable_gqa=*/native_gqa);
  return y.transpose(1, 2).reshape({batch, seq, n_heads_ * head_dim_});
}

FeedForwardImpl::FeedForwardImpl(const ModelConfig& config, const TensorParallelContext& tp)
    : tp_(tp), selective_(config.recompute == RecomputeMode::kSelective) {
  w_gate = register_parameter("w_gate", EmptyLocal(config, "w_gate", tp));
  w_up = register_parameter("w_up", EmptyLocal(config, "w_up", tp));
  w_down = register_parameter("w_down", EmptyLocal(config, "w_down", tp));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x, const PreNorm* norm) {
  // gate and up in one matrix product, as for q/k/v; each rank's gate|up rows are its blocks of
  // both, so SwiGLU pairs them locally.
  torch::Tensor gate_up =
      norm == nullptr ? parallel::ColumnParallelLinear(x, {w_gate, w_up}, tp_.group, tp_.sequence_parallel)
                      : parallel::NormColumnParallelLinear(x, norm->weight, norm->eps, norm->dtype,
                                                           {w_gate, w_up}, tp_.group, tp_.sequence_parallel);
  if (selective_) return parallel::RowParallelSwigluLinear(gate_up, w_down, tp_.group, tp_.sequence_parallel);
  return parallel::RowParallelLinear(kernels::Swiglu(gate_up), w_down, tp_.group, tp_.sequence_parallel);
}

BlockImpl::BlockImpl(const ModelConfig& config, const TensorParallelContext& tp)
    : norm_eps_(config.norm_eps), fold_norms_(config.recompute == RecomputeMode::kSelective) {
  attention_norm = register_parameter("attention_norm", torch::ones({config.dim}));
  ffn_norm = register_parameter("ffn_norm", torch::ones({config.dim}));
  attention = register_module("attention", Attention(config, tp));
  feed_forward = register_module("feed_forward", FeedForward(config, tp));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& h, const AttentionInputs& inputs,
                                 torch::ScalarType compute_dtype) {
  if (fold_norms_) {
    const PreNorm before_attention{attention_norm, norm_eps_, compute_dtype};
    const torch::Tensor x = h + attention->forward(h, inputs, &before_attention);
    const PreNorm before_mlp{ffn_norm, norm_eps_, compute_dtype};
    return x + feed_forward->forward(x, &before_mlp);
  }
  const torch::Tensor attended = attention->forward(
      kernels::RmsNorm(h, kernels::Fp32Weight(attention_norm), norm_eps_, compute_dtype), inputs);
  // The attention's residual add and the FFN's norm in one pass (kernels/add_rms_norm.h): x is the
  // fp32 residual stream after attention, normed the FFN's input in the compute dtype. Only this
  // add is fused. The FFN's add and the next block's attention norm stay apart: a block is the
  // unit of pipeline stages (the stream crosses ranks between them), of full recomputation (one
  // function of h per block) and of ZeRO 3's parameter gathers, and fusing across it would make
  // each of these pass a pair of tensors; under selective recomputation (above) the norms are
  // folded into the products and recomputed in backward, so there is no normalised activation to
  // produce here and the adds stay plain.
  const kernels::AddRmsNormOutput x =
      kernels::AddRmsNorm(h, attended, kernels::Fp32Weight(ffn_norm), norm_eps_, compute_dtype);
  return x.sum + feed_forward->forward(x.normed);
}

TransformerImpl::TransformerImpl(const ModelConfig& config, int64_t max_seq_len,
                                 const ModelShardOptions& options)
    : config_(config), options_(options), tp_(MakeContext(options)), first_layer_(options.first_layer) {
  const absl::Status valid = ValidateShardOptions(config, max_seq_len, options);
  TORCH_CHECK(valid.ok(), std::string(valid.message()));
  if (options.has_embedding)
    tok_embeddings = register_parameter("tok_embeddings", EmptyLocal(config, "tok_embeddings", tp_));
  // Blocks are registered under their global index ("layers.7." on the chunk holding layer 7),
  // so names, initialisation and checkpoints are the same whatever the pipeline split.
  auto list = register_module("layers", std::make_shared<torch::nn::Module>());
  const int64_t count = options.num_layers < 0 ? config.n_layers - first_layer_ : options.num_layers;
  for (int64_t i = first_layer_; i < first_layer_ + count; ++i) {
    layers.push_back(Block(config, tp_));
    list->register_module(std::to_string(i), layers.back());
  }
  if (options.has_head) {
    norm = register_parameter("norm", torch::ones({config.dim}));
    // Tied embeddings on a chunk without the embedding: the head is a copy (tied_copy_of).
    if (!config.tie_embeddings || !options.has_embedding) {
      output = register_parameter("output", EmptyLocal(config, "output", tp_));
    }
  }
  kernels::RotaryTables tables = kernels::MakeRotaryTables(max_seq_len, config.head_dim(), config.rope_theta,
                                                           torch::kCPU, RotaryScalingOf(config));
  // Buffers follow the module across .to(device); rotary_ shares their storage.
  rotary_.cos = register_buffer("rotary_cos", tables.cos);
  rotary_.sin = register_buffer("rotary_sin", tables.sin);

  // Replicated kv heads need their gradients summed over the ranks sharing them: a
  // sub-communicator per kv head, split once here (collective over the TP group; every rank of
  // the group holds the same layers, so all of them take this branch).
  if (tp_.size > 1 && count > 0 && config.n_kv_heads % tp_.size != 0) {
    const parallel::ShardSpec kv = LayoutOrThrow(config, "wk", tp_.size, tp_.rank).shard;
    auto group = options.tp->Split(kv.index, tp_.rank, absl::StrCat(options.tp->name(), ".kv_replicas"));
    TORCH_CHECK(group.ok(), "splitting the kv-head replica groups off ", options.tp->name(), ": ",
                group.status().ToString());
    kv_replica_group_ = std::move(*group);
  }
}

std::vector<ParameterInfo> TransformerImpl::ParameterInfos() const {
  // The plan's list, which the planner uses too, with this chunk's tensors: the two must name the
  // same parameters in the same order (the order fixes the flat buffers' layout).
  std::vector<ParameterInfo> infos = ChunkParameterLayouts(config_, options_, tp_.size, tp_.rank);
  const auto params = named_parameters();
  TORCH_CHECK(infos.size() == params.size(), "the sharding plan lists ", infos.size(),
              " parameters, the module ", params.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    TORCH_CHECK(params[i].key() == infos[i].name, "parameter ", i, " is ", params[i].key(),
                " in the module but ", infos[i].name, " in the sharding plan");
    infos[i].tensor = params[i].value();
  }
  return infos;
}

void TransformerImpl::InitializeWeights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  const double std = config_.init_std;
  // Residual-branch outputs are scaled down so the residual stream's variance does not grow
  // with depth (GPT-2 / Megatron convention).
  const double out_std = std / std::sqrt(2.0 * static_cast<double>(config_.n_layers));
  for (ParameterInfo& info : ParameterInfos()) {
    const std::string& name = info.name;
    torch::Tensor& param = info.tensor;
    const bool is_norm = name.find("norm") != std::string::npos;
    if (is_norm) {
      param.fill_(1.0);
      continue;
    }
    const bool is_out_proj = name.ends_with(".wo") || name.ends_with(".w_down");
    // The whole logical tensor, drawn as a single process draws it; this rank keeps its block.
    auto generator = at::make_generator<at::CPUGeneratorImpl>(
        ParameterSeed(seed, info.is_tied_copy() ? info.tied_copy_of : name));
    torch::Tensor values = at::normal(0.0, is_out_proj ? out_std : std, info.global_shape, generator,
                                      torch::TensorOptions().dtype(torch::kFloat));
    const parallel::ShardSpec& s = info.shard;
    if (s.dim < 0 || (s.parts == 1 && s.block_size() == s.global_size)) {
      param.copy_(values);
      continue;
    }
    param.zero_();  // padding rows stay zero
    const int64_t rows = s.valid_size();
    if (rows > 0) param.narrow(s.dim, 0, rows).copy_(values.narrow(s.dim, s.begin(), rows));
  }
}

int64_t TransformerImpl::VocabBegin() const {
  return parallel::VocabShard(config_.vocab_size, tp_.size, tp_.rank).begin();
}

AttentionInputs TransformerImpl::MakeAttentionInputs(const SequenceDocuments& documents, int64_t batch,
                                                     int64_t seq) const {
  AttentionInputs inputs(rotary_);
  const auto check = [&](const torch::Tensor& t, const char* what, int64_t length) {
    TORCH_CHECK(t.dim() == 2 && t.size(0) == batch && t.size(1) == length && t.scalar_type() == torch::kLong,
                "document ", what, ": int64 [", batch, ", ", length, "] for this micro-batch, got ",
                t.scalar_type(), " ", t.sizes());
  };
  if (parallel::GroupSize(options_.cp) > 1) return MakeContextAttentionInputs(documents, batch, seq);
  if (documents.positions.defined()) {
    check(documents.positions, "positions", seq);
    inputs.rotary = kernels::RotaryTablesAt(rotary_, documents.positions);
    inputs.per_token_rotary = true;
  }
  if (documents.segments.defined()) {
    check(documents.segments, "segments", seq);
    inputs.documents = std::make_shared<const kernels::DocumentAttentionPlan>(
        kernels::PlanDocumentAttention(documents.segments, rotary_.cos.device(), document_path_));
  }
  return inputs;
}

AttentionInputs TransformerImpl::MakeContextAttentionInputs(const SequenceDocuments& documents, int64_t batch,
                                                            int64_t local) const {
  const int cp = parallel::GroupSize(options_.cp);
  absl::StatusOr<parallel::ContextChunks> chunks =
      parallel::ContextChunks::Create(local * cp, cp, parallel::GroupRank(options_.cp));
  TORCH_CHECK(chunks.ok(), std::string(chunks.status().message()));
  // Rotary by each token's global position (or its position in its document).
  torch::Tensor positions = documents.positions;
  if (positions.defined()) {
    TORCH_CHECK(positions.dim() == 2 && positions.size(0) == batch && positions.size(1) == local,
                "document positions under context parallelism: [", batch, ", ", local,
                "] for this rank's tokens, got ", positions.sizes());
  } else {
    positions = torch::tensor(chunks->Positions(), torch::kLong).unsqueeze(0).expand({batch, local});
  }
  AttentionInputs inputs(kernels::RotaryTablesAt(rotary_, positions));
  inputs.per_token_rotary = true;
  TORCH_CHECK(!documents.segments.defined() ||
                  (documents.segments.size(0) == batch && documents.segments.size(1) == local * cp),
              "document segments under context parallelism: [", batch, ", ", local * cp,
              "] for the whole rows, got ", documents.segments.sizes());
  inputs.context = std::make_shared<const parallel::ContextAttentionPlan>(parallel::PlanContextAttention(
      options_.cp, *chunks, documents.segments, rotary_.cos.device(), compute_dtype_));
  return inputs;
}

torch::Tensor TransformerImpl::StageForward(const torch::Tensor& input, const SequenceDocuments& documents) {
  int64_t seq = 0;
  torch::Tensor h;
  if (options_.has_embedding) {
    TORCH_CHECK(input.dim() == 2 && input.scalar_type() == torch::kLong,
                "a chunk with the embedding takes int64 tokens [batch, seq], got ", input.scalar_type(), " ",
                input.sizes());
    seq = input.size(1);
  } else {
    TORCH_CHECK(input.dim() == 3 && input.size(2) == config_.dim,
                "a chunk without the embedding takes the residual stream [batch, seq, ", config_.dim,
                "], got ", input.sizes());
    seq = input.size(1) * (tp_.sequence_parallel ? tp_.size : 1);
  }
  TORCH_CHECK(seq <= rotary_.cos.size(0), "sequence of ", seq, " tokens exceeds the model's maximum ",
              rotary_.cos.size(0));
  TORCH_CHECK(!tp_.sequence_parallel || seq % tp_.size == 0, "sequence parallelism splits each sequence of ",
              seq, " tokens over tp = ", tp_.size, " ranks: the length must be a multiple of ", tp_.size);
  if (options_.has_embedding) {
    // The residual stream in the weights' dtype (fp32); this rank's sequence block under SP.
    BeginStep(0);
    h = parallel::VocabParallelEmbedding(input, tok_embeddings, VocabBegin(), tp_.group,
                                         tp_.sequence_parallel);
    EndStep(0);
  } else {
    h = input;
  }
  const AttentionInputs attention = MakeAttentionInputs(documents, input.size(0), seq);
  size_t step = options_.has_embedding ? 1 : 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    BeginStep(step);
    h = GateBackward(ForwardBlock(i, h, attention), step);
    EndStep(step++);
  }
  return h;
}

torch::Tensor TransformerImpl::ForwardBlock(size_t index, const torch::Tensor& h,
                                            const AttentionInputs& inputs) {
  Block& block = layers[index];
  const int64_t recomputed = config_.recompute_layers == 0 ? num_layers() : config_.recompute_layers;
  if (config_.recompute != RecomputeMode::kFull || static_cast<int64_t>(index) >= recomputed) {
    return block->forward(h, inputs, compute_dtype_);
  }
  return Recompute(
      h,
      [block, inputs, dtype = compute_dtype_](const torch::Tensor& x) mutable {
        return block->forward(x, inputs, dtype);
      },
      block->parameters());
}

torch::Tensor TransformerImpl::LocalLogits(const torch::Tensor& input, const SequenceDocuments& documents) {
  TORCH_CHECK(options_.has_head, "this model chunk (layers ", first_layer_, "..", first_layer_ + num_layers(),
              ") has no head: use StageForward");
  torch::Tensor h = StageForward(input, documents);
  const size_t head = ForwardSteps().size() - 1;
  BeginStep(head);
  // The final norm, then the head: column-parallel over the (padded) vocabulary; under SP it
  // gathers the whole sequence.
  torch::Tensor logits =
      parallel::ColumnParallelLinear(FinalNorm(h), HeadWeight(), tp_.group, tp_.sequence_parallel);
  EndStep(head);
  return GateBackward(logits, head);
}

torch::Tensor TransformerImpl::FinalNorm(const torch::Tensor& h) {
  return kernels::RmsNorm(h, kernels::Fp32Weight(norm), config_.norm_eps, compute_dtype_);
}

std::vector<std::vector<int>> TransformerImpl::ForwardSteps() const {
  if (!steps_.empty()) return steps_;
  std::vector<std::vector<int>> steps;
  if (options_.has_embedding) steps.push_back({ParameterUnit("tok_embeddings", config_.n_layers)});
  for (int64_t i = 0; i < num_layers(); ++i) {
    steps.push_back(
        {ParameterUnit(absl::StrCat("layers.", first_layer_ + i, ".ffn_norm"), config_.n_layers)});
  }
  if (options_.has_head) {
    steps.push_back({ParameterUnit("norm", config_.n_layers)});
    if (!output.defined()) steps.back().push_back(ParameterUnit("tok_embeddings", config_.n_layers));
  }
  return steps;
}

void TransformerImpl::BeginStep(size_t step) {
  if (gatherer_ == nullptr) return;
  if (steps_.empty()) steps_ = ForwardSteps();
  for (int unit : steps_[step]) gatherer_->Gather(unit);
  for (size_t next = step + 1; next < steps_.size() && next <= step + gatherer_->prefetch(); ++next) {
    for (int unit : steps_[next]) gatherer_->Prefetch(unit);
  }
}

void TransformerImpl::EndStep(size_t step) {
  if (gatherer_ == nullptr) return;
  for (int unit : steps_[step]) gatherer_->Release(unit);
}

namespace {

// Identity in forward; its backward, which runs before the backward of whatever produced its
// input (that node waits for this gradient), gathers the units that produced it, prefetches the
// ones whose backward comes next, and makes sure everything is released when the pass ends.
class GatherBeforeBackward : public torch::autograd::Function<GatherBeforeBackward> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               parallel::UnitGatherer* gatherer, std::vector<int64_t> units,
                               std::vector<int64_t> prefetch) {
    // An IValue holds no raw pointer: the address as an integer. The gatherer (the trainer's
    // reducer) outlives every graph the model builds.
    ctx->saved_data["gatherer"] = reinterpret_cast<int64_t>(gatherer);
    ctx->saved_data["units"] = units;
    ctx->saved_data["prefetch"] = prefetch;
    return x;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto* gatherer = reinterpret_cast<parallel::UnitGatherer*>(ctx->saved_data["gatherer"].toInt());
    for (int64_t unit : ctx->saved_data["units"].toIntVector()) gatherer->Gather(static_cast<int>(unit));
    for (int64_t unit : ctx->saved_data["prefetch"].toIntVector()) gatherer->Prefetch(static_cast<int>(unit));
    torch::autograd::Engine::get_default_engine().queue_callback([gatherer] { gatherer->ReleaseAll(); });
    return {grad[0], torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor TransformerImpl::GateBackward(const torch::Tensor& output, size_t step) {
  // Zero 1 and 2 keep every unit whole once waited for: nothing to gather before backward.
  if (gatherer_ == nullptr || !gatherer_->releases_units() || !torch::GradMode::is_enabled() ||
      !output.requires_grad()) {
    return output;
  }
  std::vector<int64_t> units(steps_[step].begin(), steps_[step].end()), prefetch;
  // The previous steps, whose backward follows; not the embedding's (it reads no weights).
  const size_t first = options_.has_embedding ? 1 : 0;
  for (size_t back = 1; back <= static_cast<size_t>(gatherer_->prefetch()) && step >= first + back; ++back) {
    prefetch.insert(prefetch.end(), steps_[step - back].begin(), steps_[step - back].end());
  }
  return GatherBeforeBackward::apply(output, gatherer_, units, prefetch);
}

torch::Tensor TransformerImpl::forward(const torch::Tensor& input, const SequenceDocuments& documents) {
  torch::Tensor logits = LocalLogits(input, documents);
  if (tp_.size == 1) return AtLeastFloat(logits);
  return AtLeastFloat(parallel::GatherFromLastDim(logits, tp_.group)).narrow(-1, 0, config_.vocab_size);
}

torch::Tensor TransformerImpl::StageLoss(const torch::Tensor& input, const torch::Tensor& targets,
                                         const SequenceDocuments& documents) {
  const int64_t chunk = config_.loss_chunk_tokens;
  // The z-loss needs log Z per token, which the fused function keeps: with it the head always
  // runs there (one chunk of the whole micro-batch when chunking is off or the batch is small).
  const double z_loss = torch::GradMode::is_enabled() ? z_loss_ : 0.0;
  if ((chunk > 0 && targets.numel() > chunk) || z_loss != 0.0) {
    // The head and the loss chunk by chunk, vocab-parallel; without SP the head's input
    // gradient is summed over the group by CopyToTensorParallel, under SP the function gathers
    // the sequence itself (and again in backward) and reduce-scatters the gradient.
    TORCH_CHECK(options_.has_head, "this model chunk (layers ", first_layer_, "..",
                first_layer_ + num_layers(), ") has no head: use StageForward");
    const torch::Tensor h = StageForward(input, documents);
    const size_t head = ForwardSteps().size() - 1;
    BeginStep(head);
    const torch::Tensor hidden = FinalNorm(h);
    torch::Tensor loss = parallel::ChunkedLinearCrossEntropy(
        tp_.sequence_parallel ? hidden : parallel::CopyToTensorParallel(hidden, tp_.group), HeadWeight(),
        targets,
        {.chunk_tokens = chunk > 0 ? chunk : targets.numel(),
         .vocab_begin = VocabBegin(),
         .vocab_size = config_.vocab_size,
         .group = tp_.group,
         .sequence_parallel = tp_.sequence_parallel,
         .z_loss = z_loss});
    EndStep(head);
    return GateBackward(loss, head);
  }
  torch::Tensor logits = LocalLogits(input, documents);
  if (tp_.size == 1) {
    return torch::nn::functional::cross_entropy(AtLeastFloat(logits.view({-1, logits.size(-1)})),
                                                targets.reshape({-1}));
  }
  return parallel::VocabParallelCrossEntropy(logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}),
                                             VocabBegin(), config_.vocab_size, tp_.group)
      .mean();
}

torch::Tensor TransformerImpl::Loss(const torch::Tensor& input, const torch::Tensor& targets,
                                    const SequenceDocuments& documents) {
  return StageLoss(input, targets, documents);
}

absl::Status TransformerImpl::SyncTensorParallelGrads() {
  if (tp_.size == 1) return absl::OkStatus();
  std::vector<torch::Tensor> norms, kv;
  for (const ParameterInfo& info : ParameterInfos()) {
    if (tp_.sequence_parallel && info.shard.dim < 0) norms.push_back(info.tensor);  // the RMSNorm weights
    if (info.shard.replicas > 1) kv.push_back(info.tensor);                         // replicated wk, wv
  }
  TS_RETURN_IF_ERROR(SumGradients(norms, *options_.tp));
  if (kv_replica_group_ != nullptr) TS_RETURN_IF_ERROR(SumGradients(kv, *kv_replica_group_));
  return absl::OkStatus();
}

kernels::RotaryScaling RotaryScalingOf(const ModelConfig& config) {
  using Kind = kernels::RotaryScaling::Kind;
  kernels::RotaryScaling scaling;
  switch (config.rope_scaling) {
    case RopeScaling::kNone:
      return scaling;
    case RopeScaling::kLinear:
      scaling.kind = Kind::kLinear;
      break;
    case RopeScaling::kLlama3:
      scaling.kind = Kind::kLlama3;
      scaling.low_freq_factor = config.rope_low_freq_factor;
      scaling.high_freq_factor = config.rope_high_freq_factor;
      scaling.original_max_positions = static_cast<double>(config.rope_original_max_position_embeddings);
      break;
  }
  scaling.factor = config.rope_factor;
  return scaling;
}

int64_t ParameterCount(const ModelConfig& c) {
  const int64_t hd = c.head_dim();
  const int64_t attention = c.dim * (c.n_heads * hd) * 2 + c.dim * (c.n_kv_heads * hd) * 2;
  const int64_t mlp = 3 * c.dim * c.ffn_dim;
  const int64_t block = attention + mlp + 2 * c.dim;
  const int64_t embeddings = c.vocab_size * c.dim * (c.tie_embeddings ? 1 : 2);
  return c.n_layers * block + embeddings + c.dim;
}

int64_t MatmulParameterCount(const ModelConfig& c) {
  const int64_t hd = c.head_dim();
  const int64_t attention = c.dim * (c.n_heads * hd) * 2 + c.dim * (c.n_kv_heads * hd) * 2;
  return c.n_layers * (attention + 3 * c.dim * c.ffn_dim) + c.vocab_size * c.dim;
}

}  // namespace tessera
