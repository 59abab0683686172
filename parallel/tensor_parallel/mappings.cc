// The conjugate communication functions (mappings.h): three collectives along a chosen
// dimension (all-reduce, all-gather, reduce-scatter), a local block selection, and seven
// autograd functions pairing them.
#include "parallel/tensor_parallel/mappings.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace tessera::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void ThrowIfError(const absl::Status& status, const char* op, const Communicator& group) {
  TORCH_CHECK(status.ok(), "tensor parallelism: ", op, " on group ", group.name(), " (", group.size(),
              " ranks) failed: ", status.ToString());
}

// The communicator travels through the autograd context as an integer: saved_data holds
// IValues, and the group outlives every graph built on it (the model owns neither).
void SaveGroup(AutogradContext* ctx, Communicator* group) {
  ctx->saved_data["group"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(group));
}
Communicator& GroupOf(AutogradContext* ctx) {
  return *reinterpret_cast<Communicator*>(static_cast<intptr_t>(ctx->saved_data["group"].toInt()));
}

int64_t NormalizeDim(const torch::Tensor& x, int64_t dim) { return dim < 0 ? dim + x.dim() : dim; }

void CheckDivisible(const torch::Tensor& x, int64_t dim, const Communicator& group, const char* what) {
  TORCH_CHECK(x.dim() > dim, "tensor parallelism: ", what, " needs a tensor with a dimension ", dim,
              ", got shape ", x.sizes());
  TORCH_CHECK(x.size(dim) % group.size() == 0, "tensor parallelism: ", what, " splits dimension ", dim,
              " of shape ", x.sizes(), " into ", group.size(), " equal blocks: ", x.size(dim),
              " is not a multiple of ", group.size());
}

// A started collective whose result is `result`, or throws as the blocking form would.
PendingCollective Started(torch::Tensor result, absl::StatusOr<std::unique_ptr<Work>> work, const char* op,
                          Communicator& group) {
  ThrowIfError(work.status(), op, group);
  return PendingCollective(std::move(result), *std::move(work), &group, op);
}

// Sum over the group, into a fresh tensor (the incoming tensor may be shared by autograd).
PendingCollective AllReduceSumStart(const torch::Tensor& x, Communicator& group) {
  torch::Tensor y = x.clone(at::MemoryFormat::Contiguous);
  auto work = group.AllReduceAsync(y, ReduceOp::kSum);
  return Started(std::move(y), std::move(work), "all-reduce", group);
}
torch::Tensor AllReduceSum(const torch::Tensor& x, Communicator& group) {
  return AllReduceSumStart(x, group).Wait();
}

// Concatenation of every rank's x along `dim`, in rank order. The collective writes the
// rank-major buffer [n, d0, ..., dk, ...]; moving n next to dk and merging the two is one copy
// (none when every dimension before dk has size 1).
torch::Tensor AllGatherAlong(const torch::Tensor& x, int64_t dim, Communicator& group) {
  dim = NormalizeDim(x, dim);
  torch::Tensor in = x.contiguous();
  std::vector<int64_t> buffer_shape = in.sizes().vec();
  buffer_shape.insert(buffer_shape.begin(), group.size());
  torch::Tensor buffer = torch::empty(buffer_shape, in.options());
  ThrowIfError(group.AllGather(buffer, in), "all-gather", group);
  std::vector<int64_t> shape = in.sizes().vec();
  shape[dim] *= group.size();
  return buffer.movedim(0, dim).reshape(shape);
}

// Rank r receives the sum over the group of block r of x along `dim`. The blocks are permuted
// to the front first ([d0, ..., n, dk/n, ...] -> [n, d0, ..., dk/n, ...]), the layout the
// collective scatters.
PendingCollective ReduceScatterAlongStart(const torch::Tensor& x, int64_t dim, Communicator& group) {
  dim = NormalizeDim(x, dim);
  CheckDivisible(x, dim, group, "reduce-scatter");
  const int n = group.size();
  std::vector<int64_t> split = x.sizes().vec();
  split[dim] /= n;
  std::vector<int64_t> out_shape = split;
  split.insert(split.begin() + dim, n);
  torch::Tensor in = x.reshape(split).movedim(dim, 0).contiguous();
  torch::Tensor out = torch::empty(out_shape, x.options());
  // The backend keeps `in` until the collective completed.
  auto work = group.ReduceScatterAsync(out, in, ReduceOp::kSum);
  return Started(std::move(out), std::move(work), "reduce-scatter", group);
}
torch::Tensor ReduceScatterAlong(const torch::Tensor& x, int64_t dim, Communicator& group) {
  return ReduceScatterAlongStart(x, dim, group).Wait();
}

// This rank's block of x along `dim`, as a tensor of its own (autograd outputs must not alias
// their inputs here).
torch::Tensor BlockAlong(const torch::Tensor& x, int64_t dim, const Communicator& group) {
  dim = NormalizeDim(x, dim);
  CheckDivisible(x, dim, group, "split");
  const int64_t block = x.size(dim) / group.size();
  return x.narrow(dim, group.rank() * block, block).clone(at::MemoryFormat::Contiguous);
}

constexpr int64_t kSeqDim = 1;  // activations are [batch, seq, ...]

class CopyToFunction : public torch::autograd::Function<CopyToFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    SaveGroup(ctx, group);
    return x;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {AllReduceSum(grads[0], GroupOf(ctx)), torch::Tensor()};
  }
};

class ReduceFromFunction : public torch::autograd::Function<ReduceFromFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    return AllReduceSum(x, *group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {grads[0], torch::Tensor()};
  }
};

class ScatterToLastDimFunction : public torch::autograd::Function<ScatterToLastDimFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    SaveGroup(ctx, group);
    return BlockAlong(x, -1, *group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {AllGatherAlong(grads[0], -1, GroupOf(ctx)), torch::Tensor()};
  }
};

class GatherFromLastDimFunction : public torch::autograd::Function<GatherFromLastDimFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    SaveGroup(ctx, group);
    return AllGatherAlong(x, -1, *group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {BlockAlong(grads[0], -1, GroupOf(ctx)), torch::Tensor()};
  }
};

class ScatterToSequenceFunction : public torch::autograd::Function<ScatterToSequenceFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    SaveGroup(ctx, group);
    return BlockAlong(x, kSeqDim, *group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {AllGatherAlong(grads[0], kSeqDim, GroupOf(ctx)), torch::Tensor()};
  }
};

class GatherFromSequenceFunction : public torch::autograd::Function<GatherFromSequenceFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    SaveGroup(ctx, group);
    return AllGatherAlong(x, kSeqDim, *group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {ReduceScatterAlong(grads[0], kSeqDim, GroupOf(ctx)), torch::Tensor()};
  }
};

class ReduceScatterToSequenceFunction : public torch::autograd::Function<ReduceScatterToSequenceFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    SaveGroup(ctx, group);
    return ReduceScatterAlong(x, kSeqDim, *group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {AllGatherAlong(grads[0], kSeqDim, GroupOf(ctx)), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor PendingCollective::Wait() {
  if (work_ != nullptr) {
    const absl::Status status = work_->Wait();
    work_.reset();
    ThrowIfError(status, op_, *group_);
  }
  return result_;
}

int GroupSize(const Communicator* group) { return group == nullptr ? 1 : group->size(); }
int GroupRank(const Communicator* group) { return group == nullptr ? 0 : group->rank(); }

torch::Tensor CopyToTensorParallel(const torch::Tensor& x, Communicator* group) {
  return GroupSize(group) == 1 ? x : CopyToFunction::apply(x, group);
}

torch::Tensor ReduceFromTensorParallel(const torch::Tensor& x, Communicator* group) {
  return GroupSize(group) == 1 ? x : ReduceFromFunction::apply(x, group);
}

torch::Tensor ScatterToLastDim(const torch::Tensor& x, Communicator* group) {
  return GroupSize(group) == 1 ? x : ScatterToLastDimFunction::apply(x, group);
}

torch::Tensor GatherFromLastDim(const torch::Tensor& x, Communicator* group) {
  return GroupSize(group) == 1 ? x : GatherFromLastDimFunction::apply(x, group);
}

torch::Tensor ScatterToSequence(const torch::Tensor& x, Communicator* group) {
  return GroupSize(group) == 1 ? x : ScatterToSequenceFunction::apply(x, group);
}

torch::Tensor AllGatherSequence(const torch::Tensor& x, Communicator& group) {
  return AllGatherAlong(x, kSeqDim, group);
}

torch::Tensor ReduceScatterSequence(const torch::Tensor& x, Communicator& group) {
  return ReduceScatterAlong(x, kSeqDim, group);
}

PendingCollective AllReduceSumAsync(const torch::Tensor& x, Communicator* group) {
  return GroupSize(group) == 1 ? PendingCollective(x) : AllReduceSumStart(x, *group);
}

PendingCollective ReduceScatterSequenceAsync(const torch::Tensor& x, Communicator& group) {
  return ReduceScatterAlongStart(x, kSeqDim, group);
}

torch::Tensor GatherFromSequence(const torch::Tensor& x, Communicator* group) {
  return GroupSize(group) == 1 ? x : GatherFromSequenceFunction::apply(x, group);
}

torch::Tensor ReduceScatterToSequence(const torch::Tensor& x, Communicator* group) {
  return GroupSize(group) == 1 ? x : ReduceScatterToSequenceFunction::apply(x, group);
}

}  // namespace tessera::parallel
