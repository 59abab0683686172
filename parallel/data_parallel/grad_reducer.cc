// Bucketed data-parallel gradient reduction and the ZeRO shard bookkeeping (grad_reducer.h).
//
// Buckets are launched strictly in bucket order: a bucket whose gradients are complete waits
// until every earlier bucket was launched. The hooks fire in the autograd engine's order, which
// could in principle differ between ranks; launching in a fixed order is what keeps every
// rank's sequence of collectives identical (the communicator contract).
#include "parallel/data_parallel/grad_reducer.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "kernels/sum_squares.h"

namespace tessera::parallel {

// A bucket's place in the buffers (bucket_layout.h; shard_begin is its offset in shard_grads_),
// and its state per step.
struct GradReducer::Bucket : BucketSpan {
  int pending = 0;
  bool ready = false;
  bool launched = false;
  // A runs of this rank's DP shard with one norm weight: [begin, begin + length) in the bucket.
  struct NormRun {
    int64_t begin, length;
    double weight;
  };
  std::vector<NormRun> norm_runs;

  at::Tensor Region(const at::Tensor& flat) const { return flat.narrow(0, begin, padded); }
};

namespace {

// TESSERA_FAULT_REDUCER_DROP_TAIL (grad_reducer.h): how many elements the planted fault leaves
// unreduced; 0 when unset.
int64_t FaultDropTailFromEnvironment() {
  const char* fault = std::getenv("TESSERA_FAULT_REDUCER_DROP_TAIL");
  int64_t elements = 0;
  if (fault == nullptr || !absl::SimpleAtoi(fault, &elements) || elements <= 0) return 0;
  TS_LOG(WARNING) << "TESSERA_FAULT_REDUCER_DROP_TAIL=" << elements << ": the last " << elements
                  << " element(s) of the first gradient bucket are NOT reduced (a planted bug for tests)";
  return elements;
}

}  // namespace

// A reduction in flight, with what must happen when it completes (zero 2: add into the shard).
struct GradReducer::Pending {
  std::unique_ptr<Work> work;
  at::Tensor accumulate_into;         // zero 2: the bucket's shard of shard_grads_
  at::Tensor result;                  // zero 2: the reduce-scatter's output
  at::Tensor keep_alive;              // zero 2: the bucket's gathered gradients, until sent
  at::Tensor fault_from, fault_into;  // the planted fault: copied over the result when it lands
};

GradReducer::GradReducer(Communicator& dp, DataParallelOptions options) : dp_(dp), options_(options) {}
GradReducer::~GradReducer() = default;

namespace {

absl::Status CheckReducerInputs(const std::vector<DataParallelParameter>& params,
                                const DataParallelOptions& options) {
  if (options.param_dtype != at::kFloat && options.param_dtype != at::kBFloat16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data-parallel reducer: parameters can be fp32 or bf16, not ", c10::toString(options.param_dtype)));
  }
  if (options.zero < 0 || options.zero > 2) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.zero = ", options.zero, ": expected 0, 1 or 2"));
  }
  if (!(options.bucket_mb > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.bucket_mb = ", options.bucket_mb, ": expected a bucket size > 0 MiB"));
  }
  if (params.empty()) return absl::InvalidArgumentError("data-parallel reducer: no parameters");
  for (const DataParallelParameter& p : params) {
    if (p.tensor.scalar_type() != at::kFloat || !p.tensor.is_leaf() || !p.tensor.requires_grad()) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter ", p.name, " must be an fp32 leaf tensor that requires grad"));
    }
    if (p.tensor.device() != params.front().tensor.device()) {
      return absl::InvalidArgumentError(absl::StrCat("parameter ", p.name, " is on ", p.tensor.device().str(),
                                                     ", the others on ",
                                                     params.front().tensor.device().str()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<GradReducer>> GradReducer::Create(std::vector<DataParallelParameter> params,
                                                                 Communicator& dp,
                                                                 DataParallelOptions options) {
  TS_RETURN_IF_ERROR(CheckReducerInputs(params, options));
  const at::TensorOptions float_options = params.front().tensor.options().dtype(at::kFloat);
  std::unique_ptr<GradReducer> r(new GradReducer(dp, options));
  r->params_ = std::move(params);
  r->fault_drop_tail_ = FaultDropTailFromEnvironment();
  const auto [total, shard_total] = r->LayOutBuckets();
  r->AssignOwnedRanges(r->FlattenParameters(total, shard_total, float_options));
  r->InstallHooks();
  int groups_count = 1;
  for (const DataParallelParameter& p : r->params_) groups_count = std::max(groups_count, p.group + 1);
  r->group_final_.assign(groups_count, 0);
  r->counted_.assign(r->params_.size(), 0);
  r->ZeroGrad();
  return r;
}

std::pair<int64_t, int64_t> GradReducer::LayOutBuckets() {
  std::vector<FlatParameter> sizes;
  for (const DataParallelParameter& p : params_) sizes.push_back({p.tensor.numel(), p.decay, p.late});
  FlatLayout layout = LayOutFlatBuffers(sizes, dp_.size(), options_.bucket_mb);
  param_bucket_ = std::move(layout.param_bucket);
  param_offset_ = std::move(layout.param_offset);
  for (BucketSpan& span : layout.buckets) {
    auto bucket = std::make_unique<Bucket>();
    static_cast<BucketSpan&>(*bucket) = std::move(span);
    buckets_.push_back(std::move(bucket));
  }
  return {layout.total, layout.shard_total};
}

at::Tensor GradReducer::FlattenParameters(int64_t total, int64_t shard_total,
                                          const at::TensorOptions& float_options) {
  torch::NoGradGuard no_grad;
  at::Tensor flat_fp32 = torch::zeros({total}, float_options);
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& t = params_[i].tensor;
    flat_fp32.narrow(0, param_offset_[i], t.numel()).view(t.sizes()).copy_(t);
  }
  flat_params_ = options_.param_dtype == at::kFloat ? flat_fp32 : flat_fp32.to(options_.param_dtype);
  if (options_.zero <= 1) flat_grads_ = torch::zeros({total}, float_options);
  if (options_.zero >= 1) shard_grads_ = torch::zeros({shard_total}, float_options);
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& t = params_[i].tensor;
    t.set_data(flat_params_.narrow(0, param_offset_[i], t.numel()).view(t.sizes()));
    if (options_.zero <= 1) {
      t.mutable_grad() = flat_grads_.narrow(0, param_offset_[i], t.numel()).view(t.sizes());
    } else {
      t.mutable_grad().reset();
    }
  }
  return flat_fp32;
}

// What this rank's optimizer updates, and the runs of its DP shard for the gradient norm.
void GradReducer::AssignOwnedRanges(const at::Tensor& flat_fp32) {
  const int dp_size = dp_.size();
  const int dp_rank = dp_.rank();
  // The master: the whole fp32 buffer at zero 0, else this rank's shards back to back.
  if (has_master()) {
    flat_master_ = options_.zero == 0 ? flat_fp32 : torch::empty({shard_grads_.numel()}, flat_fp32.options());
  }
  for (const auto& b : buckets_) {
    const int64_t shard = b->padded / dp_size;
    const int64_t mine = dp_rank * shard;
    if (options_.zero == 0) {
      owned_.push_back({b->Region(flat_params_), b->Region(flat_grads_),
                        has_master() ? b->Region(flat_master_) : at::Tensor(), b->decayed, b->begin});
    } else {
      at::Tensor master;
      if (has_master()) {
        master = flat_master_.narrow(0, b->shard_begin, shard);
        master.copy_(b->Region(flat_fp32).narrow(0, mine, shard));
      }
      owned_.push_back({b->Region(flat_params_).narrow(0, mine, shard),
                        shard_grads_.narrow(0, b->shard_begin, shard), master,
                        std::clamp<int64_t>(b->decayed - mine, 0, shard), b->begin + mine});
    }
    int64_t at = 0;
    for (int i : b->params) {
      const int64_t n = params_[i].tensor.numel();
      const int64_t lo = std::max(at, mine), hi = std::min(at + n, mine + shard);
      at += n;
      if (lo >= hi || params_[i].norm_weight == 0) continue;
      if (!b->norm_runs.empty() && b->norm_runs.back().weight == params_[i].norm_weight &&
          b->norm_runs.back().begin + b->norm_runs.back().length == lo) {
        b->norm_runs.back().length += hi - lo;
      } else {
        b->norm_runs.push_back({lo, hi - lo, params_[i].norm_weight});
      }
    }
  }
}

// Hooks after the accumulation of each gradient (the accumulator node's post hook sees .grad
// updated). The reducer keeps the accumulators alive; the parameters only hold weak references.
void GradReducer::InstallHooks() {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].late) continue;
    c10::intrusive_ptr<torch::autograd::Node> accumulator =
        torch::autograd::impl::grad_accumulator(params_[i].tensor);
    GradReducer* self = this;
    const int index = static_cast<int>(i);
    accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [self, index](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          self->OnGradReady(index);
          return outputs;
        }));
    accumulators_.push_back(std::move(accumulator));
  }
}

void GradReducer::ZeroGrad() {
  torch::NoGradGuard no_grad;
  if (flat_grads_.defined()) flat_grads_.zero_();
  if (shard_grads_.defined()) shard_grads_.zero_();
  if (options_.zero == 2) {
    for (DataParallelParameter& p : params_) p.tensor.mutable_grad().reset();
  }
  for (auto& b : buckets_) {
    b->pending = static_cast<int>(b->params.size());
    b->ready = false;
    b->launched = false;
  }
  std::fill(counted_.begin(), counted_.end(), 0);
  std::fill(group_final_.begin(), group_final_.end(), 0);
  events_.clear();
  backward_started_ = false;
}

void GradReducer::MarkFinalBackward(int group) {
  if (group >= 0 && group < static_cast<int>(group_final_.size())) group_final_[group] = 1;
  if (!backward_started_) {
    backward_started_ = true;
    backward_start_ = std::chrono::steady_clock::now();
  }
}

void GradReducer::OnGradReady(int index) {
  if (!group_final_[params_[index].group] || counted_[index]) return;
  counted_[index] = 1;
  Bucket& bucket = *buckets_[param_bucket_[index]];
  if (--bucket.pending > 0) return;
  bucket.ready = true;
  // Launch every ready bucket at the front of the order.
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& next = *buckets_[b];
    if (next.launched) continue;
    if (!next.ready) break;
    if (absl::Status s = Launch(static_cast<int>(b)); !s.ok() && launch_error_.ok()) launch_error_ = s;
  }
}

absl::Status GradReducer::Launch(int index) {
  Bucket& b = *buckets_[index];
  b.launched = true;
  torch::NoGradGuard no_grad;
  const double issued_ms =
      backward_started_
          ? std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - backward_start_)
                .count()
          : 0.0;
  events_.push_back({index, b.padded * static_cast<int64_t>(sizeof(float)), issued_ms});
  auto pending = std::make_unique<Pending>();
  const int64_t shard = b.padded / dp_.size();
  const int64_t mine = dp_.rank() * shard;
  if (options_.zero == 0) {
    if (index == 0 && fault_drop_tail_ > 0)
      PlantFault(b, b.Region(flat_grads_), b.Region(flat_grads_), 0, *pending);
    TS_ASSIGN_OR_RETURN(pending->work, dp_.AllReduceAsync(b.Region(flat_grads_), ReduceOp::kAvg));
  } else if (options_.zero == 1) {
    at::Tensor into = shard_grads_.narrow(0, b.shard_begin, shard);
    if (index == 0 && fault_drop_tail_ > 0) PlantFault(b, b.Region(flat_grads_), into, mine, *pending);
    TS_ASSIGN_OR_RETURN(pending->work, dp_.ReduceScatterAsync(into, b.Region(flat_grads_), ReduceOp::kAvg));
  } else {
    // Gather this bucket's gradients into one buffer and free the parameters' own.
    at::Tensor gathered = torch::zeros({b.padded}, shard_grads_.options());
    int64_t at = 0;
    for (int i : b.params) {
      at::Tensor& t = params_[i].tensor;
      if (t.grad().defined()) gathered.narrow(0, at, t.numel()).copy_(t.grad().reshape({-1}));
      t.mutable_grad().reset();
      at += t.numel();
    }
    pending->result = torch::empty({shard}, shard_grads_.options());
    pending->accumulate_into = shard_grads_.narrow(0, b.shard_begin, shard);
    pending->keep_alive = gathered;
    if (index == 0 && fault_drop_tail_ > 0) PlantFault(b, gathered, pending->result, mine, *pending);
    TS_ASSIGN_OR_RETURN(pending->work, dp_.ReduceScatterAsync(pending->result, gathered, ReduceOp::kAvg));
  }
  in_flight_.push_back(std::move(pending));
  return absl::OkStatus();
}

void GradReducer::PlantFault(const Bucket& bucket, const at::Tensor& unreduced, const at::Tensor& reduced,
                             int64_t reduced_first, Pending& pending) const {
  const int64_t lo = std::max(bucket.numel - fault_drop_tail_, reduced_first);
  const int64_t hi = std::min(bucket.numel, reduced_first + reduced.numel());
  if (lo >= hi) return;  // the tail lies in another rank's shard
  pending.fault_from = unreduced.narrow(0, lo, hi - lo).clone();
  pending.fault_into = reduced.narrow(0, lo - reduced_first, hi - lo);
}

absl::Status GradReducer::FinishBackward(const std::function<absl::Status()>& late_fixup) {
  backward_ms_ =
      backward_started_
          ? std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - backward_start_)
                .count()
          : 0.0;
  if (late_fixup) TS_RETURN_IF_ERROR(late_fixup());
  // Whatever the hooks did not launch (the late bucket; a bucket with an unused parameter).
  for (size_t b = 0; b < buckets_.size(); ++b) {
    if (!buckets_[b]->launched) {
      if (absl::Status s = Launch(static_cast<int>(b)); !s.ok() && launch_error_.ok()) launch_error_ = s;
    }
  }
  absl::Status status = launch_error_;
  launch_error_ = absl::OkStatus();
  torch::NoGradGuard no_grad;
  for (auto& p : in_flight_) {
    absl::Status s = p->work->Wait();
    if (!s.ok() && status.ok()) status = s;
    if (s.ok() && p->fault_into.defined()) p->fault_into.copy_(p->fault_from);
    if (s.ok() && p->accumulate_into.defined()) p->accumulate_into.add_(p->result);
  }
  in_flight_.clear();
  return status;
}

absl::StatusOr<double> GradReducer::GlobalGradNorm(Communicator& norm_group) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> parts;
  const int dp_rank = dp_.rank();
  for (const auto& b : buckets_) {
    const int64_t mine = dp_rank * (b->padded / dp_.size());
    for (const Bucket::NormRun& run : b->norm_runs) {
      at::Tensor g = options_.zero == 0
                         ? flat_grads_.narrow(0, b->begin + run.begin, run.length)
                         : shard_grads_.narrow(0, b->shard_begin + run.begin - mine, run.length);
      at::Tensor sq = kernels::SumOfSquares(g);
      parts.push_back(run.weight == 1.0 ? sq : sq * run.weight);
    }
  }
  at::Tensor total = parts.empty() ? torch::zeros({1}, flat_params_.options().dtype(at::kDouble))
                                   : torch::stack(parts).sum().reshape({1});
  TS_RETURN_IF_ERROR(norm_group.AllReduce(total, ReduceOp::kSum));
  // NaN must survive (the spike guard skips on it): no clamping through std::max.
  const double sum = total.item<double>();
  return sum < 0 ? 0.0 : std::sqrt(sum);
}

absl::Status GradReducer::GatherParams() {
  if (options_.zero == 0) return absl::OkStatus();
  torch::NoGradGuard no_grad;
  std::vector<std::unique_ptr<Work>> works;
  std::vector<at::Tensor> inputs;
  for (const auto& b : buckets_) {
    const int64_t shard = b->padded / dp_.size();
    at::Tensor region = b->Region(flat_params_);
    // The input must not alias the output (MPI forbids it outside MPI_IN_PLACE).
    inputs.push_back(region.narrow(0, dp_.rank() * shard, shard).clone());
    TS_ASSIGN_OR_RETURN(auto work, dp_.AllGatherAsync(region, inputs.back()));
    works.push_back(std::move(work));
  }
  for (auto& w : works) TS_RETURN_IF_ERROR(w->Wait());
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> GradReducer::GatherFlat(const std::vector<at::Tensor>& owned_values) {
  if (owned_values.size() != owned_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("GatherFlat: ", owned_values.size(), " tensors for ", owned_.size(), " owned ranges"));
  }
  torch::NoGradGuard no_grad;
  at::Tensor full = torch::zeros(
      {flat_params_.numel()}, owned_values.empty() ? flat_params_.options() : owned_values.front().options());
  std::vector<std::unique_ptr<Work>> works;
  std::vector<at::Tensor> inputs;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const Bucket& bucket = *buckets_[b];
    if (options_.zero == 0) {
      full.narrow(0, bucket.begin, bucket.padded).copy_(owned_values[b].reshape({-1}));
      continue;
    }
    inputs.push_back(owned_values[b].reshape({-1}).contiguous());
    TS_ASSIGN_OR_RETURN(auto work,
                        dp_.AllGatherAsync(full.narrow(0, bucket.begin, bucket.padded), inputs.back()));
    works.push_back(std::move(work));
  }
  for (auto& w : works) TS_RETURN_IF_ERROR(w->Wait());
  return full;
}

int64_t GradReducer::ParamBytes() const { return flat_params_.numel() * flat_params_.element_size(); }

int64_t GradReducer::MasterBytes() const {
  return flat_master_.defined() ? flat_master_.numel() * flat_master_.element_size() : 0;
}

int64_t GradReducer::PersistentGradBytes() const {
  int64_t bytes = 0;
  if (flat_grads_.defined()) bytes += flat_grads_.numel() * static_cast<int64_t>(sizeof(float));
  if (shard_grads_.defined()) bytes += shard_grads_.numel() * static_cast<int64_t>(sizeof(float));
  return bytes;
}

}  // namespace tessera::parallel
