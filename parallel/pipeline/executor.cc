// The pipeline executor (executor.h): one rank's action list on tensors. Each compute action is
// one LibTorch call on the PipelineStage's graph; each run of communication actions is one
// SendRecv. Tensors move between the actions through maps keyed by (chunk, micro-batch), and
// every entry is dropped by the action that consumes it, so what is alive is what the schedule
// says is alive.
#include "parallel/pipeline/executor.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <new>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/exit_codes.h"
#include "core/host_sync.h"
#include "core/status_macros.h"

namespace tessera::parallel::pipeline {
namespace {

// LibTorch reports errors by exceptions; the executor's callers get a Status naming the action.
// Running out of memory (device or host) is told by its type, and carries its exit code.
template <typename Fn>
absl::Status Guarded(const std::string& where, Fn&& fn) {
  try {
    return fn();
  } catch (const c10::OutOfMemoryError& e) {
    return WithExitCode(absl::ResourceExhaustedError(absl::StrCat(where, ": ", e.what_without_backtrace())),
                        kExitOutOfMemory);
  } catch (const std::bad_alloc& e) {
    return WithExitCode(absl::ResourceExhaustedError(absl::StrCat(where, ": ", e.what())), kExitOutOfMemory);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(where, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(where, ": ", e.what()));
  }
}

std::string ShapeString(at::IntArrayRef sizes) { return absl::StrCat("[", absl::StrJoin(sizes, ", "), "]"); }

}  // namespace

absl::StatusOr<std::unique_ptr<PipelineExecutor>> PipelineExecutor::Create(Schedule schedule,
                                                                           Communicator& pp_group,
                                                                           PipelineStage& stage,
                                                                           at::Device device,
                                                                           ExecutorOptions options) {
  if (schedule.pp != pp_group.size()) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline schedule '", schedule.name, "' is for pp ",
                                                   schedule.pp, " ranks, but the pipeline group '",
                                                   pp_group.name(), "' has ", pp_group.size()));
  }
  // Simulate runs CheckSchedule and also finds deadlocks, which a static check cannot: a
  // deadlocking schedule would otherwise hang every rank until the watchdog ends the job.
  auto prediction = Simulate(schedule, ActionCosts::PerChunk(schedule.v));
  if (!prediction.ok()) {
    return Annotate(prediction.status(), absl::StrCat("pipeline schedule '", schedule.name,
                                                      "' refused on pipeline rank ", pp_group.rank(), ": "));
  }
  if (schedule.pp > 1 && !IsSupportedDtype(stage.ActivationDtype())) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline activations of dtype ", c10::toString(stage.ActivationDtype()),
                     " cannot cross ranks (the communicator does not carry it)"));
  }
  return std::unique_ptr<PipelineExecutor>(
      new PipelineExecutor(std::move(schedule), pp_group, stage, device, options, std::move(*prediction)));
}

PipelineExecutor::PipelineExecutor(Schedule schedule, Communicator& pp_group, PipelineStage& stage,
                                   at::Device device, ExecutorOptions options, SimulationResult prediction)
    : schedule_(std::move(schedule)),
      comm_(pp_group),
      stage_(stage),
      device_(device),
      options_(options),
      prediction_(std::move(prediction)),
      rank_(pp_group.rank()),
      clock_(device) {
  const std::vector<Action>& list = schedule_.actions[rank_];
  last_weight_action_chunk_.assign(list.size(), -1);
  std::vector<char> seen(static_cast<size_t>(std::max<int64_t>(1, schedule_.v)), 0);
  for (size_t i = list.size(); i-- > 0;) {
    const Action& a = list[i];
    if ((a.kind == ActionKind::kBackward || a.kind == ActionKind::kBackwardWeight) && !seen[a.chunk]) {
      seen[a.chunk] = 1;
      last_weight_action_chunk_[i] = static_cast<int>(a.chunk);
    }
  }
}

bool PipelineExecutor::HoldsLoss() const { return rank_ == schedule_.pp - 1; }

std::string PipelineExecutor::Where(size_t index) const {
  const Action& a = schedule_.actions[rank_][index];
  return absl::StrCat("pipeline ", schedule_.RankLabel(rank_), " of schedule '", schedule_.name, "', action ",
                      index + 1, " '", ActionToken(a), "' (chunk ", a.chunk, ", micro-batch ", a.microbatch,
                      ")");
}

void PipelineExecutor::Synchronize() const {
  if (options_.synchronize_timing && device_.is_cuda()) HostSync(device_);
}

void PipelineExecutor::Reset() {
  saved_.clear();
  inputs_.clear();
  activations_.clear();
  output_grads_.clear();
  input_grads_.clear();
  loss_sum_ = at::Tensor();
}

absl::StatusOr<at::Tensor> PipelineExecutor::RunStepOnDevice() {
  Reset();
  stats_ = PipelineStats();
  absl::Status status = RunActions();
  at::Tensor loss =
      loss_sum_.defined() ? loss_sum_ : at::zeros({}, at::TensorOptions(at::kDouble).device(device_));
  // On success every map is empty already; after an error this frees the step's tensors.
  Reset();
  if (!status.ok()) return status;
  return loss;
}

absl::StatusOr<double> PipelineExecutor::RunStep() {
  TS_ASSIGN_OR_RETURN(const at::Tensor loss, RunStepOnDevice());
  double value = 0;
  // The read is where an asynchronous device error surfaces.
  TS_RETURN_IF_ERROR(Guarded("pipeline loss", [&] {
    value = HostRead<double>(loss);
    return absl::OkStatus();
  }));
  return value;
}

absl::Status PipelineExecutor::RunActions() {
  // Training records the graph for the backward; a forward-only schedule evaluates without one.
  at::AutoGradMode grad_mode(!schedule_.forward_only);
  const std::vector<Action>& list = schedule_.actions[rank_];
  clock_.Reset();
  spans_.clear();
  timing_done_ = false;
  start_mark_ = clock_.Mark();
  for (size_t i = 0; i < list.size();) {
    const int t0 = clock_.Mark();
    size_t end = i + 1;
    if (list[i].IsCompute()) {
      if (last_weight_action_chunk_[i] >= 0) stage_.BeforeLastWeightGradients(last_weight_action_chunk_[i]);
      TS_RETURN_IF_ERROR(Guarded(Where(i), [&] { return RunCompute(i); }));
      Synchronize();
    } else {
      while (end < list.size() && !list[end].IsCompute()) ++end;
      TS_RETURN_IF_ERROR(Guarded(Where(i), [&] { return RunExchange(i, end); }));
      Synchronize();
      ++stats_.exchanges;
    }
    spans_.push_back({i, end, t0, clock_.Mark(), list[i].IsCompute()});
    i = end;
  }
  // A schedule that passed Simulate consumes everything it produces; leftovers are a bug here.
  if (!saved_.empty() || !inputs_.empty() || !activations_.empty() || !output_grads_.empty() ||
      !input_grads_.empty()) {
    return absl::InternalError(absl::StrCat(
        "pipeline ", schedule_.RankLabel(rank_), " of schedule '", schedule_.name,
        "': tensors left after the step: ", saved_.size(), " saved activations, ", inputs_.size(),
        " inputs, ", activations_.size(), " unsent activations, ", output_grads_.size(),
        " output gradients, ", input_grads_.size(), " unsent input gradients"));
  }
  end_mark_ = clock_.Mark();
  return absl::OkStatus();
}

const PipelineStats& PipelineExecutor::stats() {
  if (!timing_done_) FinishTiming();
  return stats_;
}

void PipelineExecutor::FinishTiming() {
  timing_done_ = true;
  const std::vector<Action>& list = schedule_.actions[rank_];
  stats_.timeline.clear();
  stats_.timeline.reserve(list.size());
  stats_.compute_s = stats_.wait_s = 0;
  for (const ActionSpan& span : spans_) {
    const double from = clock_.Seconds(start_mark_, span.from), to = clock_.Seconds(start_mark_, span.to);
    (span.compute ? stats_.compute_s : stats_.wait_s) += to - from;
    for (size_t j = span.begin; j < span.end; ++j) stats_.timeline.push_back({list[j], from, to});
  }
  stats_.step_s = clock_.Seconds(start_mark_, end_mark_);
}

absl::Status PipelineExecutor::RunCompute(size_t index) {
  const Action& a = schedule_.actions[rank_][index];
  if (a.kind == ActionKind::kForward) return Forward(a, Where(index));
  return Backward(a, Where(index));
}

absl::Status PipelineExecutor::Forward(const Action& a, const std::string& where) {
  const Key key{a.chunk, a.microbatch};
  at::Tensor input;
  if (!IsFirstModelChunk(a.chunk)) {
    auto it = inputs_.find(key);
    if (it == inputs_.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat(where, ": no input activation (not received, nor produced by the previous chunk)"));
    }
    input = std::move(it->second);
    inputs_.erase(it);
    // A leaf of this chunk's graph: B/I leave the gradient to send back in its .grad.
    if (!schedule_.forward_only) input.requires_grad_(true);
  }
  at::Tensor output = stage_.Forward(static_cast<int>(a.chunk), static_cast<int>(a.microbatch), input);
  if (!output.defined())
    return absl::InternalError(absl::StrCat(where, ": the stage's Forward returned no tensor"));
  if (IsLastModelChunk(a.chunk)) {
    if (output.numel() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(where,
                                                     ": the last model chunk's Forward must return the loss "
                                                     "(one element), got shape ",
                                                     ShapeString(output.sizes())));
    }
    at::Tensor loss = output.detach().reshape({}).to(at::kDouble);
    loss_sum_ = loss_sum_.defined() ? loss_sum_ + loss : loss;
  } else {
    if (output.scalar_type() != stage_.ActivationDtype()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": Forward returned ", c10::toString(output.scalar_type()),
                       " but ActivationDtype() is ", c10::toString(stage_.ActivationDtype())));
    }
    // Detached: the next chunk's graph starts at its own leaf (on this rank when pp == 1).
    (schedule_.pp == 1 ? inputs_[{a.chunk + 1, a.microbatch}] : activations_[key]) = output.detach();
  }
  if (schedule_.forward_only) {  // no backward: nothing to keep; one activation alive at a time
    stats_.peak_live = std::max<int64_t>(stats_.peak_live, 1);
    return absl::OkStatus();
  }
  saved_[key] = Saved{std::move(input), std::move(output), at::Tensor(), false};
  stats_.peak_live = std::max<int64_t>(stats_.peak_live, static_cast<int64_t>(saved_.size()));
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> PipelineExecutor::TakeOutputGrad(const Action& a, const std::string& where) {
  if (IsLastModelChunk(a.chunk)) return at::Tensor();  // the loss: autograd seeds it with 1
  auto it = output_grads_.find({a.chunk, a.microbatch});
  if (it == output_grads_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat(where, ": no gradient for the output (not received, nor produced by the next chunk)"));
  }
  at::Tensor grad = std::move(it->second);
  output_grads_.erase(it);
  return grad;
}

void PipelineExecutor::DeliverInputGrad(const Action& a, const at::Tensor& input, at::Tensor grad) {
  // An input the output does not depend on has no gradient: its gradient is zero.
  if (!grad.defined()) grad = at::zeros_like(input);
  if (schedule_.pp == 1) {
    output_grads_[{a.chunk - 1, a.microbatch}] = std::move(grad);
  } else {
    input_grads_[{a.chunk, a.microbatch}] = std::move(grad);
  }
}

absl::Status PipelineExecutor::Backward(const Action& a, const std::string& where) {
  auto it = saved_.find({a.chunk, a.microbatch});
  if (it == saved_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat(where, ": no saved activation (its forward did not run, or its backward already did)"));
  }
  Saved& s = it->second;
  const bool first = IsFirstModelChunk(a.chunk);
  // The backward's seed: the output's gradient, or none for the loss (autograd then uses 1).
  auto seed = [](const at::Tensor& grad) {
    return grad.defined() ? std::vector<at::Tensor>{grad} : std::vector<at::Tensor>{};
  };
  switch (a.kind) {
    case ActionKind::kBackward: {
      TS_ASSIGN_OR_RETURN(at::Tensor grad, TakeOutputGrad(a, where));
      torch::autograd::backward({s.output}, seed(grad));
      if (!first) DeliverInputGrad(a, s.input, s.input.grad());
      saved_.erase(it);
      return absl::OkStatus();
    }
    case ActionKind::kBackwardInput: {
      TS_ASSIGN_OR_RETURN(at::Tensor grad, TakeOutputGrad(a, where));
      if (!first) {
        // Only the path to the input: the engine skips the parameters' gradients. The graph
        // stays for W.
        std::vector<at::Tensor> g =
            torch::autograd::grad({s.output}, {s.input}, seed(grad), /*retain_graph=*/true,
                                  /*create_graph=*/false, /*allow_unused=*/true);
        DeliverInputGrad(a, s.input, g[0]);
      }
      s.output_grad = std::move(grad);
      s.input_done = true;
      return absl::OkStatus();
    }
    case ActionKind::kBackwardWeight: {
      if (!s.input_done) return absl::FailedPreconditionError(absl::StrCat(where, ": W before its I"));
      std::vector<at::Tensor> params;
      for (const at::Tensor& p : stage_.ChunkParameters(static_cast<int>(a.chunk))) {
        if (p.defined() && p.requires_grad()) params.push_back(p);
      }
      // `inputs` restricts accumulation to the parameters; reaching them re-traverses the
      // chunk's graph (executor.h). The graph is freed (retain_graph false).
      if (!params.empty()) {
        torch::autograd::backward({s.output}, seed(s.output_grad), /*retain_graph=*/false,
                                  /*create_graph=*/false, params);
      }
      saved_.erase(it);
      return absl::OkStatus();
    }
    default:
      return absl::InternalError(absl::StrCat(where, ": not a compute action"));
  }
}

absl::Status PipelineExecutor::RunExchange(size_t begin, size_t end) {
  const std::vector<Action>& list = schedule_.actions[rank_];
  std::vector<P2POp> ops;
  // Receive buffers and where they go once the exchange completed.
  std::vector<std::pair<Key, at::Tensor>> activations_in, grads_in;
  std::vector<std::string> tokens, microbatches;
  for (size_t j = begin; j < end; ++j) {
    tokens.push_back(ActionToken(list[j]));
    microbatches.push_back(absl::StrCat(list[j].microbatch));
  }
  const std::string where =
      absl::StrCat("pipeline ", schedule_.RankLabel(rank_), " of schedule '", schedule_.name,
                   "', exchange of actions ", begin + 1, "-", end, " '", absl::StrJoin(tokens, " "),
                   "' (micro-batches ", absl::StrJoin(microbatches, ", "), ")");
  const auto options = at::TensorOptions().dtype(stage_.ActivationDtype()).device(device_);
  for (size_t j = begin; j < end; ++j) {
    const Action& a = list[j];
    const Key key{a.chunk, a.microbatch};
    const int peer = static_cast<int>(PeerOf(a, rank_, schedule_.pp, schedule_.v).rank);
    if (peer < 0) return absl::InternalError(absl::StrCat(Where(j), ": no peer rank"));
    switch (a.kind) {
      case ActionKind::kSendActivation:
      case ActionKind::kSendGrad: {
        std::map<Key, at::Tensor>& from = a.kind == ActionKind::kSendActivation ? activations_ : input_grads_;
        auto it = from.find(key);
        if (it == from.end()) {
          return absl::FailedPreconditionError(
              absl::StrCat(Where(j), ": nothing to send (its ",
                           a.kind == ActionKind::kSendActivation ? "F" : "B/I", " has not run)"));
        }
        at::Tensor t = it->second.contiguous();
        from.erase(it);
        stats_.bytes_sent += static_cast<int64_t>(t.nbytes());
        ops.push_back({P2POp::Kind::kSend, std::move(t), peer});
        break;
      }
      case ActionKind::kRecvActivation: {
        at::Tensor buffer = at::empty(stage_.ActivationShape(static_cast<int>(a.chunk)), options);
        activations_in.push_back({key, buffer});
        stats_.bytes_received += static_cast<int64_t>(buffer.nbytes());
        ops.push_back({P2POp::Kind::kRecv, std::move(buffer), peer});
        break;
      }
      case ActionKind::kRecvGrad: {
        // The gradient of this chunk's output has the output's shape; F came first (Simulate
        // rejects the deadlock that receiving it earlier would be).
        auto it = saved_.find(key);
        if (it == saved_.end()) {
          return absl::FailedPreconditionError(absl::StrCat(Where(j),
                                                            ": receives the gradient of an output that "
                                                            "was never produced (no saved forward)"));
        }
        at::Tensor buffer = at::empty(it->second.output.sizes(), options);
        grads_in.push_back({key, buffer});
        stats_.bytes_received += static_cast<int64_t>(buffer.nbytes());
        ops.push_back({P2POp::Kind::kRecv, std::move(buffer), peer});
        break;
      }
      default:
        return absl::InternalError(absl::StrCat(Where(j), ": not a communication action"));
    }
  }
  if (absl::Status st = comm_.SendRecv(std::move(ops)); !st.ok()) {
    return Annotate(st, absl::StrCat(where, " failed: "));
  }
  for (auto& [key, buffer] : activations_in) inputs_[key] = std::move(buffer);
  for (auto& [key, buffer] : grads_in) output_grads_[key] = std::move(buffer);
  return absl::OkStatus();
}

}  // namespace tessera::parallel::pipeline
