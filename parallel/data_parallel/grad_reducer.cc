// Bucketed data-parallel gradient reduction and the ZeRO shard bookkeeping (grad_reducer.h).
//
// Buckets are launched strictly in bucket order: a bucket whose gradients are complete waits
// until every earlier bucket was launched. The hooks fire in the autograd engine's order, which
// could in principle differ between ranks; launching in a fixed order is what keeps every
// rank's sequence of collectives identical (the communicator contract).
#include "parallel/data_parallel/grad_reducer.h"

#include <c10/core/StorageImpl.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/host_sync.h"
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
  // Zero 3: the bucket's own padded storage (the parameters are views of it), whether it holds
  // the gathered values, and the all-gather filling it.
  enum class State { kReleased, kGathering, kGathered };
  at::Tensor full;
  State state = State::kReleased;
  std::unique_ptr<Work> gather;
  // Zero 1, 2: this rank's updated shard being all-gathered (MPI may not read from the output).
  at::Tensor gather_input;

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
  int64_t bytes = 0;                  // zero 2: keep_alive + result
  bool retired = false;               // finished early by RetireCompleted
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
  if (options.zero < 0 || options.zero > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.zero = ", options.zero, ": expected 0, 1, 2 or 3"));
  }
  if (options.prefetch < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.zero3_prefetch = ", options.prefetch, ": expected 0 or more units"));
  }
  if (!(options.bucket_mb > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.bucket_mb = ", options.bucket_mb, ": expected a bucket size > 0 MiB"));
  }
  if (params.empty()) return absl::InvalidArgumentError("data-parallel reducer: no parameters");
  for (const DataParallelParameter& p : params) {
    if (options.zero == 3 && p.unit < 0) {
      return absl::InvalidArgumentError(absl::StrCat("parameter ", p.name, ": unit ", p.unit, " < 0"));
    }
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
  if (options.zero == 3) {
    // The gathers get a communicator of their own: they are issued from the forward and from
    // backward nodes, the reductions from gradient hooks, and each stream of collectives is in
    // the same order on every rank only by itself. Collective over dp.
    static int count = 0;
    TS_ASSIGN_OR_RETURN(r->gather_comm_,
                        dp.Split(0, dp.rank(), absl::StrCat(dp.name(), ".zero3_gather", count++)));
  }
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
  for (const DataParallelParameter& p : params_)
    sizes.push_back({p.tensor.numel(), p.decay, p.late, p.unit, p.fuse_with_next});
  FlatLayout layout = LayOutFlatBuffers(sizes, dp_.size(), options_.bucket_mb, options_.zero == 3);
  layout_ = layout;
  param_bucket_ = std::move(layout.param_bucket);
  param_offset_ = std::move(layout.param_offset);
  for (BucketSpan& span : layout.buckets) {
    auto bucket = std::make_unique<Bucket>();
    static_cast<BucketSpan&>(*bucket) = std::move(span);
    buckets_.push_back(std::move(bucket));
  }
  if (options_.zero == 3) {
    for (size_t b = 0; b < buckets_.size(); ++b) {
      if (buckets_[b]->late) continue;
      const int unit = buckets_[b]->unit;
      if (static_cast<int>(unit_buckets_.size()) <= unit) unit_buckets_.resize(unit + 1);
      unit_buckets_[unit].push_back(static_cast<int>(b));
    }
    unit_params_.assign(unit_buckets_.size(), 0);
    for (const DataParallelParameter& p : params_) {
      if (!p.late) ++unit_params_[p.unit];
    }
    unit_fired_.assign(unit_buckets_.size(), 0);
  }
  flat_total_ = layout.total;
  if (options_.zero == 1 || options_.zero == 2) PlanWeightGathers();
  return {layout.total, layout.shard_total};
}

void GradReducer::PlanWeightGathers() {
  std::vector<int> first_unit(buckets_.size(), std::numeric_limits<int>::max());
  for (size_t i = 0; i < params_.size(); ++i) {
    const int unit = std::max(params_[i].unit, 0);
    const int b = param_bucket_[i];
    first_unit[b] = std::min(first_unit[b], unit);
    if (static_cast<int>(unit_waits_.size()) <= unit) unit_waits_.resize(unit + 1);
    std::vector<int>& waits = unit_waits_[unit];
    if (std::find(waits.begin(), waits.end(), b) == waits.end()) waits.push_back(b);
  }
  // The buckets are laid out in the reverse order of use; their gathers go out in the order of
  // use, so that on a backend that runs them one after another (NCCL's stream) the first layers'
  // weights arrive first. Every rank computes the same order from the same layout.
  gather_order_.resize(buckets_.size());
  for (size_t b = 0; b < buckets_.size(); ++b) gather_order_[b] = static_cast<int>(b);
  std::stable_sort(gather_order_.begin(), gather_order_.end(),
                   [&](int a, int b) { return first_unit[a] < first_unit[b]; });
}

at::Tensor GradReducer::FlattenParameters(int64_t total, int64_t shard_total,
                                          const at::TensorOptions& float_options) {
  torch::NoGradGuard no_grad;
  at::Tensor flat_fp32 = torch::zeros({total}, float_options);
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& t = params_[i].tensor;
    flat_fp32.narrow(0, param_offset_[i], t.numel()).view(t.sizes()).copy_(t);
  }
  param_options_ = float_options.dtype(options_.param_dtype);
  if (options_.zero <= 2) {
    flat_params_ = options_.param_dtype == at::kFloat ? flat_fp32 : flat_fp32.to(options_.param_dtype);
  } else {
    // This rank's shards; each bucket gets storage of its own, gathered only when used (the late
    // bucket: always).
    shard_params_ = torch::empty({shard_total}, param_options_);
    const int64_t dp_rank = dp_.rank();
    for (auto& b : buckets_) {
      const int64_t shard = b->padded / dp_.size();
      shard_params_.narrow(0, b->shard_begin, shard)
          .copy_(b->Region(flat_fp32).narrow(0, dp_rank * shard, shard));
      b->full = b->Region(flat_fp32).to(options_.param_dtype, /*non_blocking=*/false, /*copy=*/true);
      b->state = Bucket::State::kGathered;
      if (!b->late) gathered_bytes_ += b->full.nbytes();
    }
  }
  if (options_.zero <= 1) flat_grads_ = torch::zeros({total}, float_options);
  if (options_.zero >= 1) shard_grads_ = torch::zeros({shard_total}, float_options);
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& t = params_[i].tensor;
    const at::Tensor& storage = options_.zero <= 2 ? flat_params_ : buckets_[param_bucket_[i]]->full;
    const int64_t offset =
        options_.zero <= 2 ? param_offset_[i] : param_offset_[i] - buckets_[param_bucket_[i]]->begin;
    t.set_data(storage.narrow(0, offset, t.numel()).view(t.sizes()));
    if (options_.zero <= 1) {
      t.mutable_grad() = flat_grads_.narrow(0, param_offset_[i], t.numel()).view(t.sizes());
    } else {
      t.mutable_grad().reset();
    }
  }
  // Zero 3: the parameters are views of their buckets now; free all but the late bucket.
  for (auto& b : buckets_) ReleaseBucket(*b);
  peak_gathered_bytes_ = 0;
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
      at::Tensor params = options_.zero == 3 ? shard_params_.narrow(0, b->shard_begin, shard)
                                             : b->Region(flat_params_).narrow(0, mine, shard);
      owned_.push_back({params, shard_grads_.narrow(0, b->shard_begin, shard), master,
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
  if (options_.zero >= 2) {
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
  // Zero 3: once every parameter of a unit has its gradient from this backward pass, no node of
  // the pass reads the unit's weights any more (each accumulator runs after all its users).
  if (options_.zero == 3 && !params_[index].late) {
    const int unit = params_[index].unit;
    if (++unit_fired_[unit] == unit_params_[unit]) {
      unit_fired_[unit] = 0;
      Release(unit);
    }
  }
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
  RetireCompleted();
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
    pending->bytes = (gathered.numel() + shard) * static_cast<int64_t>(gathered.element_size());
    pending_bytes_ += pending->bytes;
    peak_pending_bytes_ = std::max(peak_pending_bytes_, pending_bytes_);
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
  // The forward waited for each unit's weights; a bucket no forward used this step (a unit idle
  // on this rank) lands here, before the optimizer may write into the same weights.
  TS_RETURN_IF_ERROR(WaitParams());
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
    absl::Status s = Complete(*p);
    if (!s.ok() && status.ok()) status = s;
  }
  in_flight_.clear();
  return status;
}

absl::Status GradReducer::Complete(Pending& p) {
  if (p.retired) return absl::OkStatus();
  p.retired = true;
  absl::Status s = p.work->Wait();
  if (s.ok() && p.fault_into.defined()) p.fault_into.copy_(p.fault_from);
  if (s.ok() && p.accumulate_into.defined()) p.accumulate_into.add_(p.result);
  // The buffers go; the Work stays until FinishBackward (its status was reported here).
  p.keep_alive = at::Tensor();
  p.result = at::Tensor();
  p.fault_from = at::Tensor();
  pending_bytes_ -= p.bytes;
  return s;
}

void GradReducer::RetireCompleted() {
  if (options_.zero != 2) return;
  torch::NoGradGuard no_grad;
  for (auto& p : in_flight_) {
    if (p->retired || !p->work->IsCompleted()) continue;
    if (absl::Status s = Complete(*p); !s.ok() && launch_error_.ok()) launch_error_ = s;
  }
}

absl::StatusOr<at::Tensor> GradReducer::GlobalGradNormOnDevice(Communicator& norm_group) {
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
  at::Tensor total = parts.empty() ? torch::zeros({1}, param_options_.dtype(at::kDouble))
                                   : torch::stack(parts).sum().reshape({1});
  TS_RETURN_IF_ERROR(norm_group.AllReduce(total, ReduceOp::kSum));
  // NaN must survive (the spike guard skips on it): where, not clamp_min. fp64 sqrt is
  // correctly rounded on every device, so this equals std::sqrt of the sum read back.
  return at::where(total < 0, at::zeros_like(total), total).sqrt();
}

absl::StatusOr<double> GradReducer::GlobalGradNorm(Communicator& norm_group) {
  TS_ASSIGN_OR_RETURN(const at::Tensor norm, GlobalGradNormOnDevice(norm_group));
  return HostRead<double>(norm);
}

absl::Status GradReducer::StartGatherParams() {
  if (options_.zero == 0) return absl::OkStatus();
  torch::NoGradGuard no_grad;
  if (options_.zero == 3) {
    // Gathered units hold the old weights: drop them (they are gathered again on use); the late
    // bucket, always gathered, takes the updated shards now.
    ReleaseAll();
    for (auto& b : buckets_) {
      if (!b->late) continue;
      b->state = Bucket::State::kReleased;
      TS_RETURN_IF_ERROR(StartGather(*b));
      TS_RETURN_IF_ERROR(FinishGather(*b));
    }
    return absl::OkStatus();
  }
  // A gather still on its way writes the weights the optimizer has just updated.
  TS_CHECK(!ParamsPending()) << "the previous all-gather of updated weights was never waited for";
  last_gather_bytes_ = 0;
  for (int index : gather_order_) {
    Bucket& b = *buckets_[index];
    const int64_t shard = b.padded / dp_.size();
    const at::Tensor region = b.Region(flat_params_);
    // The input must not alias the output (MPI forbids it outside MPI_IN_PLACE). The shard is in
    // the weights' dtype: under bf16 the optimizer wrote the rounding of its fp32 master there,
    // and that is what every rank receives.
    b.gather_input = region.narrow(0, dp_.rank() * shard, shard).clone();
    TS_ASSIGN_OR_RETURN(b.gather, dp_.AllGatherAsync(region, b.gather_input));
    b.state = Bucket::State::kGathering;
    last_gather_bytes_ += region.nbytes();
  }
  return absl::OkStatus();
}

absl::Status GradReducer::WaitParams() {
  if (options_.zero != 1 && options_.zero != 2) return absl::OkStatus();
  absl::Status status;
  for (int index : gather_order_) {
    if (absl::Status s = FinishGather(*buckets_[index]); !s.ok() && status.ok()) status = s;
  }
  return status;
}

absl::Status GradReducer::GatherParams() {
  TS_RETURN_IF_ERROR(StartGatherParams());
  return WaitParams();
}

bool GradReducer::ParamsPending() const {
  if (options_.zero != 1 && options_.zero != 2) return false;
  for (const auto& b : buckets_) {
    if (b->state == Bucket::State::kGathering) return true;
  }
  return false;
}

absl::StatusOr<at::Tensor> GradReducer::GatherFlat(const std::vector<at::Tensor>& owned_values) {
  if (owned_values.size() != owned_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("GatherFlat: ", owned_values.size(), " tensors for ", owned_.size(), " owned ranges"));
  }
  torch::NoGradGuard no_grad;
  at::Tensor full =
      torch::zeros({flat_total_}, owned_values.empty() ? param_options_ : owned_values.front().options());
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

int64_t GradReducer::ParamBytes() const {
  if (options_.zero <= 2) return flat_params_.numel() * flat_params_.element_size();
  int64_t bytes = shard_params_.numel() * shard_params_.element_size();
  for (const auto& b : buckets_) bytes += b->late ? b->padded * shard_params_.element_size() : 0;
  return bytes;
}

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

namespace tessera::parallel {

namespace {

// Storage resizes that leave every view (and every tensor autograd saved) in place: the data
// pointer is swapped, the version counter untouched.
void ResizeStorage(const at::Tensor& base, size_t nbytes) {
  c10::StorageImpl* storage = base.storage().unsafeGetStorageImpl();
  if (nbytes == 0) {
    storage->set_data_ptr_noswap(at::DataPtr(nullptr, storage->device()));
  } else {
    storage->set_data_ptr_noswap(storage->allocator()->allocate(nbytes));
  }
  storage->set_nbytes(nbytes);
}

}  // namespace

const std::vector<int>& GradReducer::UnitBuckets(int unit) const {
  static const std::vector<int> kNone;
  return unit >= 0 && unit < static_cast<int>(unit_buckets_.size()) ? unit_buckets_[unit] : kNone;
}

absl::Status GradReducer::StartGather(Bucket& b) {
  if (b.state != Bucket::State::kReleased) return absl::OkStatus();
  ResizeStorage(b.full, b.padded * b.full.element_size());
  if (!b.late) {
    gathered_bytes_ += b.full.nbytes();
    peak_gathered_bytes_ = std::max(peak_gathered_bytes_, gathered_bytes_);
  }
  const int64_t shard = b.padded / dp_.size();
  TS_ASSIGN_OR_RETURN(b.gather,
                      gather_comm_->AllGatherAsync(b.full, shard_params_.narrow(0, b.shard_begin, shard)));
  b.state = Bucket::State::kGathering;
  return absl::OkStatus();
}

absl::Status GradReducer::FinishGather(Bucket& b) {
  if (b.state != Bucket::State::kGathering) return absl::OkStatus();
  absl::Status status = b.gather->Wait();
  b.gather.reset();
  b.gather_input = at::Tensor();
  b.state = Bucket::State::kGathered;
  return status;
}

void GradReducer::ReleaseBucket(Bucket& b) {
  if (b.late || b.state == Bucket::State::kReleased) return;
  // A gather still writing into the storage must land before it is freed.
  if (b.state == Bucket::State::kGathering) (void)FinishGather(b);
  gathered_bytes_ -= b.full.nbytes();
  ResizeStorage(b.full, 0);
  b.state = Bucket::State::kReleased;
}

void GradReducer::Gather(int unit) {
  if (options_.zero == 1 || options_.zero == 2) {
    if (unit < 0 || unit >= static_cast<int>(unit_waits_.size())) return;
    for (int b : unit_waits_[unit]) {
      const absl::Status s = FinishGather(*buckets_[b]);
      TORCH_CHECK(s.ok(), "waiting for the updated weights of unit ", unit, ": ", s.ToString());
    }
    return;
  }
  if (options_.zero != 3) return;
  torch::NoGradGuard no_grad;
  for (int b : UnitBuckets(unit)) {
    const absl::Status s = StartGather(*buckets_[b]);
    TORCH_CHECK(s.ok(), "gathering the parameters of unit ", unit, ": ", s.ToString());
  }
  for (int b : UnitBuckets(unit)) {
    const absl::Status s = FinishGather(*buckets_[b]);
    TORCH_CHECK(s.ok(), "gathering the parameters of unit ", unit, ": ", s.ToString());
  }
}

void GradReducer::Prefetch(int unit) {
  if (options_.zero != 3) return;
  torch::NoGradGuard no_grad;
  for (int b : UnitBuckets(unit)) {
    const absl::Status s = StartGather(*buckets_[b]);
    TORCH_CHECK(s.ok(), "prefetching the parameters of unit ", unit, ": ", s.ToString());
  }
}

void GradReducer::Release(int unit) {
  if (options_.zero != 3 || held_) return;
  for (int b : UnitBuckets(unit)) ReleaseBucket(*buckets_[b]);
}

void GradReducer::ReleaseAll() {
  if (options_.zero != 3 || held_) return;
  for (auto& b : buckets_) ReleaseBucket(*b);
  std::fill(unit_fired_.begin(), unit_fired_.end(), 0);
}

int64_t GradReducer::GatheredUnitBound(bool tied_head) const {
  if (options_.zero != 3) return 0;
  return parallel::GatheredUnitBound(layout_, options_.prefetch, tied_head, has_master());
}

void GradReducer::HoldAll() {
  if (options_.zero == 1 || options_.zero == 2) {
    const absl::Status s = WaitParams();
    TORCH_CHECK(s.ok(), "waiting for the updated weights: ", s.ToString());
    return;
  }
  if (options_.zero != 3) return;
  const int64_t peak = peak_gathered_bytes_;
  for (int unit = 0; unit < static_cast<int>(unit_buckets_.size()); ++unit) Prefetch(unit);
  for (int unit = 0; unit < static_cast<int>(unit_buckets_.size()); ++unit) Gather(unit);
  peak_gathered_bytes_ = peak;
  held_ = true;
}

void GradReducer::EndHold() {
  if (options_.zero != 3) return;
  held_ = false;
  ReleaseAll();
}

bool GradReducer::IsGathered(int unit) const {
  if (options_.zero == 1 || options_.zero == 2) {
    if (unit < 0 || unit >= static_cast<int>(unit_waits_.size())) return true;
    for (int b : unit_waits_[unit]) {
      if (buckets_[b]->state == Bucket::State::kGathering) return false;
    }
    return true;
  }
  if (options_.zero != 3) return true;
  for (int b : UnitBuckets(unit)) {
    if (buckets_[b]->state != Bucket::State::kGathered) return false;
  }
  return true;
}

bool GradReducer::AllGathered() const {
  if (options_.zero == 3) {
    for (const auto& b : buckets_) {
      if (b->state != Bucket::State::kGathered) return false;
    }
    return true;
  }
  return !ParamsPending();
}

}  // namespace tessera::parallel
