// Saving and restoring this rank's part of the training state (training_state.h).
#include "trainer/training_state.h"

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <optional>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "checkpoint/tensor_slices.h"
#include "config/config.h"
#include "core/logging.h"
#include "core/status_macros.h"

namespace tessera {
namespace {

constexpr char kExpAvg[] = "optim.exp_avg/";
constexpr char kExpAvgSq[] = "optim.exp_avg_sq/";

// The logical tensor a parameter stands for (a tied copy is the embedding).
const std::string& LogicalName(const ParameterInfo& info) {
  return info.is_tied_copy() ? info.tied_copy_of : info.name;
}

// Whether this rank writes `info`'s slice: one writer per distinct slice of each logical tensor.
bool Writes(const ParameterInfo& info, parallel::ProcessGrid& grid) {
  // Context-parallel ranks hold the same parameters as their cp 0: only that one writes.
  if (info.is_tied_copy() || grid.coords().dp != 0 || grid.coords().cp != 0) return false;
  const int tp_rank = grid.coords().tp;
  if (info.shard.dim < 0) return tp_rank == 0;
  return info.shard.replicas <= 1 || tp_rank % info.shard.replicas == 0;
}

// A per-element quantity the optimizer keeps per owned range (a moment, the fp32 master),
// readable at any parameter's flat offset. When this rank owns every parameter's range (zero 0,
// or one data-parallel rank) the parts are views of the optimizer's own tensors: a save then
// writes straight from them, with no staging copy. Otherwise the ranges are gathered over dp
// (the gathered copy is itself the snapshot).
class FlatValues {
 public:
  static absl::StatusOr<FlatValues> Of(parallel::GradReducer& reducer, const RankParameters& params,
                                       std::vector<at::Tensor> owned) {
    FlatValues v;
    v.ranges_ = &reducer.owned();
    v.owned_ = std::move(owned);
    for (size_t i = 0; i < params.infos.size(); ++i) {
      if (v.Range(reducer.flat_offset(static_cast<int>(i)), params.infos[i].tensor.numel()) < 0) {
        TS_ASSIGN_OR_RETURN(v.gathered_, reducer.GatherFlat(v.owned_));
        break;
      }
    }
    return v;
  }
  // The `numel` values of the parameter at `offset` of the flat buffer, 1-D.
  at::Tensor Part(int64_t offset, int64_t numel) const {
    if (gathered_.defined()) return gathered_.narrow(0, offset, numel);
    const int r = Range(offset, numel);
    return owned_[r].reshape({-1}).narrow(0, offset - (*ranges_)[r].flat_offset, numel);
  }

 private:
  // The owned range holding [offset, offset + numel), or -1.
  int Range(int64_t offset, int64_t numel) const {
    for (size_t r = 0; r < ranges_->size(); ++r) {
      const int64_t begin = (*ranges_)[r].flat_offset;
      if (offset >= begin && offset + numel <= begin + owned_[r].numel()) return static_cast<int>(r);
    }
    return -1;
  }

  const std::vector<parallel::OwnedRange>* ranges_ = nullptr;
  std::vector<at::Tensor> owned_;
  at::Tensor gathered_;
};

// AdamW's moments from `reader` into the optimizer's owned ranges. Only the parameters that
// overlap an owned range are read (under ZeRO a rank owns a slice of each bucket: the rest is
// other ranks' to load), and each block goes straight into the ranges it overlaps; the
// padding between parameters stays zero.
absl::Status RestoreMoments(const checkpoint::CheckpointReader& reader, const RankParameters& params,
                            parallel::GradReducer& reducer, FlatAdamW& optimizer) {
  const auto& owned = reducer.owned();
  std::vector<torch::Tensor> m = optimizer.ExpAvgByRange(), v = optimizer.ExpAvgSqByRange();
  for (size_t r = 0; r < owned.size(); ++r) {
    m[r].zero_();
    v[r].zero_();
  }
  for (size_t i = 0; i < params.infos.size(); ++i) {
    const ParameterInfo& info = params.infos[i];
    const int64_t begin = reducer.flat_offset(static_cast<int>(i)), end = begin + info.tensor.numel();
    std::vector<std::array<int64_t, 3>> parts;  // {owned range, first, last} in flat offsets
    for (size_t r = 0; r < owned.size(); ++r) {
      const int64_t lo = std::max(begin, owned[r].flat_offset);
      const int64_t hi = std::min(end, owned[r].flat_offset + m[r].numel());
      if (lo < hi) parts.push_back({static_cast<int64_t>(r), lo, hi});
    }
    if (parts.empty()) continue;
    for (auto [prefix, moments] :
         {std::pair<const char*, std::vector<torch::Tensor>*>{kExpAvg, &m}, {kExpAvgSq, &v}}) {
      auto block = checkpoint::ReadShardSpecBlock(reader, prefix + LogicalName(info), info.shard);
      if (!block.ok()) return Annotate(block.status(), absl::StrCat(reader.step_dir(), ": "));
      const at::Tensor flat = block->reshape({-1});
      for (const auto& [r, lo, hi] : parts) {
        (*moments)[r]
            .narrow(0, lo - owned[r].flat_offset, hi - lo)
            .copy_(flat.narrow(0, lo - begin, hi - lo));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string LoopState::Serialize() const {
  std::string out = absl::StrCat("step ", step, "\nskipped_total ", skipped_total, "\nconsecutive_skips ",
                                 consecutive_skips, "\nadam_steps ", adam_steps, "\nrecent_losses");
  for (double l : recent_losses) absl::StrAppend(&out, absl::StrFormat(" %.17g", l));
  return out + "\n";
}

absl::StatusOr<LoopState> LoopState::Parse(const std::string& text, const std::string& where) {
  LoopState s;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    ++line_number;
    std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    auto bad = [&] {
      return absl::DataLossError(
          absl::StrCat(where, ": line ", line_number, " '", std::string(line), "': expected KEY VALUE..."));
    };
    if (words.empty()) return bad();
    const std::string& key = words[0];
    if (key == "recent_losses") {
      for (size_t i = 1; i < words.size(); ++i) {
        double v;
        if (!absl::SimpleAtod(words[i], &v)) return bad();
        s.recent_losses.push_back(v);
      }
      continue;
    }
    int64_t v;
    if (words.size() != 2 || !absl::SimpleAtoi(words[1], &v)) return bad();
    if (key == "step")
      s.step = v;
    else if (key == "skipped_total")
      s.skipped_total = v;
    else if (key == "consecutive_skips")
      s.consecutive_skips = v;
    else if (key == "adam_steps")
      s.adam_steps = v;
    // Unknown keys come from newer versions: ignored, so old readers tolerate added fields.
  }
  return s;
}

absl::StatusOr<std::vector<checkpoint::TensorSlice>> CollectStateSlices(const RankParameters& params,
                                                                        parallel::GradReducer& reducer,
                                                                        const FlatAdamW& optimizer,
                                                                        parallel::ProcessGrid& grid) {
  torch::NoGradGuard no_grad;
  TS_CHECK(!reducer.ParamsPending()) << "a checkpoint would save weights still being gathered";
  std::vector<checkpoint::TensorSlice> slices;
  TS_ASSIGN_OR_RETURN(const FlatValues exp_avg, FlatValues::Of(reducer, params, optimizer.ExpAvgByRange()));
  TS_ASSIGN_OR_RETURN(const FlatValues exp_avg_sq,
                      FlatValues::Of(reducer, params, optimizer.ExpAvgSqByRange()));
  // The weights are saved in fp32 whatever the model computes with: with bf16 parameters, the
  // optimizer's fp32 master (so that a resumed run continues exactly); under zero 3 the shards
  // are the weights.
  std::optional<FlatValues> master;
  if (reducer.has_master() || reducer.zero() == 3) {
    std::vector<at::Tensor> ranges;
    for (const parallel::OwnedRange& r : reducer.owned())
      ranges.push_back(reducer.has_master() ? r.master : r.params);
    TS_ASSIGN_OR_RETURN(master, FlatValues::Of(reducer, params, std::move(ranges)));
  }
  for (size_t i = 0; i < params.infos.size(); ++i) {
    const ParameterInfo& info = params.infos[i];
    if (!Writes(info, grid)) continue;
    const at::Tensor& t = info.tensor;
    const int64_t offset = reducer.flat_offset(static_cast<int>(i));
    const at::Tensor weights = master ? master->Part(offset, t.numel()).view(t.sizes()) : t.detach();
    slices.push_back(checkpoint::ShardSpecSlice(info.name, info.global_shape, info.shard, weights));
    slices.push_back(checkpoint::ShardSpecSlice(kExpAvg + info.name, info.global_shape, info.shard,
                                                exp_avg.Part(offset, t.numel()).view(t.sizes())));
    slices.push_back(checkpoint::ShardSpecSlice(kExpAvgSq + info.name, info.global_shape, info.shard,
                                                exp_avg_sq.Part(offset, t.numel()).view(t.sizes())));
  }
  return slices;
}

absl::Status RestoreState(const checkpoint::CheckpointReader& reader, const RankParameters& params,
                          parallel::GradReducer& reducer, FlatAdamW& optimizer, bool* had_optimizer,
                          bool weights_only) {
  torch::NoGradGuard no_grad;
  TS_CHECK(!reducer.ParamsPending()) << "a checkpoint would load into weights still being gathered";
  const std::string& where = reader.step_dir();
  // fp32 values over the whole flat buffer, from which each owned range takes its part.
  const torch::TensorOptions fp32 = torch::TensorOptions().dtype(torch::kFloat).device(reducer.device());
  // With bf16 parameters the fp32 checkpoint values also become the optimizer's master; under
  // zero 3 they also become the parameter shards (the parameters themselves are not gathered).
  at::Tensor master;
  const bool sharded = reducer.zero() == 3;
  if (reducer.has_master() || sharded) master = torch::zeros({reducer.flat_numel()}, fp32);
  for (size_t i = 0; i < params.infos.size(); ++i) {
    const ParameterInfo& info = params.infos[i];
    auto block = checkpoint::ReadShardSpecBlock(reader, LogicalName(info), info.shard);
    if (!block.ok()) return Annotate(block.status(), absl::StrCat(where, ": "));
    if (block->sizes() != info.tensor.sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": tensor ", LogicalName(info), " block of shape ", block->sizes().vec().size(),
                       " dims does not fit this rank's ", info.tensor.sizes().vec().size(), "-dim shard"));
    }
    if (!sharded) info.tensor.copy_(*block);  // rounded to bf16 where the parameters are bf16
    if (master.defined()) {
      const int64_t offset = reducer.flat_offset(static_cast<int>(i));
      master.narrow(0, offset, info.tensor.numel()).copy_(block->reshape({-1}));
    }
  }
  const auto& owned = reducer.owned();
  if (master.defined()) {
    for (const parallel::OwnedRange& r : owned) {
      const at::Tensor values = master.narrow(0, r.flat_offset, r.params.numel());
      if (r.master.defined()) r.master.copy_(values);
      if (sharded) r.params.copy_(values);  // rounded to bf16 where the parameters are bf16
    }
    // The late bucket, kept gathered, takes the loaded shards (collective over dp).
    if (sharded) TS_RETURN_IF_ERROR(reducer.GatherParams());
  }
  *had_optimizer = !weights_only && !params.infos.empty() &&
                   reader.Tensor(kExpAvg + LogicalName(params.infos.front())).ok();
  if (!*had_optimizer) return absl::OkStatus();
  return RestoreMoments(reader, params, reducer, optimizer);
}

absl::Status CheckCheckpointModel(const checkpoint::Manifest& manifest, const ModelConfig& model,
                                  const std::string& where) {
  auto saved = ConfigFromYamlString(manifest.config_yaml, where + "/manifest.pb config");
  if (!saved.ok()) return saved.status();
  const ModelConfig& s = saved->model;
  auto mismatch = [&](const char* key, auto a, auto b) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": the checkpoint's model.", key, " = ", a,
                                                   ", this run's = ", b,
                                                   ": a checkpoint loads only into the same model shape"));
  };
  if (s.dim != model.dim) return mismatch("dim", s.dim, model.dim);
  if (s.n_layers != model.n_layers) return mismatch("n_layers", s.n_layers, model.n_layers);
  if (s.n_heads != model.n_heads) return mismatch("n_heads", s.n_heads, model.n_heads);
  if (s.n_kv_heads != model.n_kv_heads) return mismatch("n_kv_heads", s.n_kv_heads, model.n_kv_heads);
  if (s.head_dim() != model.head_dim()) return mismatch("head_dim", s.head_dim(), model.head_dim());
  if (s.ffn_dim != model.ffn_dim) return mismatch("ffn_dim", s.ffn_dim, model.ffn_dim);
  if (s.vocab_size != model.vocab_size) return mismatch("vocab_size", s.vocab_size, model.vocab_size);
  if (s.tie_embeddings != model.tie_embeddings)
    return mismatch("tie_embeddings", s.tie_embeddings, model.tie_embeddings);
  return absl::OkStatus();
}

}  // namespace tessera
