// Runs ONE pipeline rank's action list (schedule.h) on tensors for one optimizer step: forwards
// and backwards of micro-batches on this rank's model chunks, and the activations and gradients
// they exchange with the neighbouring ranks over the pipeline group's Communicator. It has no
// schedule logic of its own: what runs when is entirely the schedule's; what a chunk computes is
// the PipelineStage's (the trainer implements it over its model chunks). docs/pipeline.md,
// "The executor", says how each action maps onto LibTorch calls.
//
// Actions on tensors:
//   F   input = the received activation (requires_grad set here), or undefined on the first model
//       chunk; output = stage.Forward(chunk, mb, input), kept with its graph until the backward.
//       On the last model chunk the output is the (already 1/m-scaled) loss.
//   B   torch::autograd::backward(output, received gradient) (of the loss: no gradient), then
//       the input's .grad is what SG sends. Parameter gradients accumulate into .grad.
//   I   torch::autograd::grad(output -> input, retain_graph): the input gradient only.
//   W   torch::autograd::backward(output, inputs = the chunk's parameters), freeing the graph.
//       LibTorch has no per-op split of a backward, so W re-traverses the chunk's graph and
//       recomputes the activation gradients inside the chunk: I + W costs more than B, and ZB-H1
//       runs correctly with its shape but without the compute saving of a per-op split. On the
//       first model chunk there is no input gradient: I does nothing and W does the backward.
//   SA/SG/RA/RG  a maximal run of them is one exchange, posted as one Communicator::SendRecv
//       (per direction the k-th send pairs with the k-th receive, in list order). Sends carry
//       detached contiguous tensors; receives land in fresh buffers of the known shape: the
//       stage's ActivationShape for RA, the kept output's shape for RG (F always precedes RG in
//       a schedule that does not deadlock, which Create checks).
// With pp == 1 and v > 1, chunk c's output is chunk c+1's input in memory (no transfers).
//
// A micro-batch's saved tensors are dropped as soon as its B (or W) ran, so the live count
// follows the schedule; the peak is measured and equals the simulator's prediction.
//
// Forward-only (evaluation): a schedule of ForwardOnlySchedule (schedule.h) runs with autograd
// off: F computes without a graph, received inputs are plain tensors, nothing is kept after an
// F, and RunStep returns the sum of the last model chunk's outputs (the micro-batches' losses,
// scaled as the stage scales them) as in training.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/comm/communicator.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/pipeline/simulator.h"
#include "parallel/pipeline/stream_clock.h"

namespace tessera::parallel::pipeline {

// What one pipeline rank computes, chunk by chunk; the trainer implements it over its model
// chunks (local chunk c is model chunk c * pp + rank, partition.h). Methods may throw LibTorch
// exceptions: the executor turns them into a Status naming the action (out of memory, LibTorch's
// c10::OutOfMemoryError or std::bad_alloc, carries kExitOutOfMemory: core/exit_codes.h).
class PipelineStage {
 public:
  virtual ~PipelineStage() = default;
  // Forward of micro-batch `mb` on local chunk `chunk`. `input` is the received activation
  // (a leaf with requires_grad set by the executor), or undefined on the first model chunk (the
  // stage reads its tokens itself). Returns the activation to send to the next model chunk, or
  // on the last model chunk the loss: a one-element tensor already scaled by the caller's
  // 1/num_microbatches, which the executor backpropagates and sums for RunStep's result.
  virtual at::Tensor Forward(int chunk, int mb, const at::Tensor& input) = 0;
  // Shape of the activation entering local `chunk` (what the previous model chunk's Forward
  // returns), known from the config: there is no shape handshake, so a wrong shape breaks the
  // transfer (MPI reports a truncation; NCCL cannot tell). Not asked for the first model chunk.
  virtual std::vector<int64_t> ActivationShape(int chunk) const = 0;
  // The dtype of every activation and activation gradient crossing ranks.
  virtual at::ScalarType ActivationDtype() const = 0;
  // The trainable parameters of local `chunk`: W computes their gradients and nothing else's, so
  // a parameter missing here gets no gradient under split (I/W) schedules.
  virtual std::vector<at::Tensor> ChunkParameters(int chunk) const = 0;
  // Called right before the last action of the step that accumulates local `chunk`'s parameter
  // gradients (its last B, or its last W under a split backward): a data-parallel reducer may
  // reduce the chunk's gradients as they complete from then on.
  virtual void BeforeLastWeightGradients(int chunk) {}
};

// Measured over one RunStep on this rank (host clocks; see ExecutorOptions for CUDA).
struct PipelineStats {
  double step_s = 0;      // the whole RunStep
  double compute_s = 0;   // F, B, I, W actions
  double wait_s = 0;      // exchanges: posting, waiting for the peers, transferring
  int64_t peak_live = 0;  // most (chunk, micro-batch) activations saved at once
  int64_t exchanges = 0;  // SendRecv calls
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
  // Every action of the list in order, seconds from the step's start; the actions of one
  // exchange share its span. Same type as the simulator's timeline, for side-by-side output.
  std::vector<TimedAction> timeline;

  // This rank's idle share, the measured counterpart of the simulator's per-rank idle /
  // makespan: 1 - compute_s / step_s. Over the pipeline the simulator's bubble fraction is
  // 1 - sum over ranks of compute_s / (pp * max over ranks of step_s).
  double IdleFraction() const { return step_s > 0 ? 1.0 - compute_s / step_s : 0.0; }
};

struct ExecutorOptions {
  // On a CUDA device, synchronize it after every action, so that each action's host-side work
  // (and any failure) happens before the next starts. The statistics do not need it: they are
  // timed by events on the device's stream (stream_clock.h). Off for the fastest step.
  bool synchronize_timing = true;
};

class PipelineExecutor {
 public:
  // Refuses a schedule before anything runs: Simulate (simulator.h) must accept it (the static
  // checks of CheckSchedule, and no deadlock), and its pp must be the group's size; the rank is
  // pp_group.rank(). Errors name the rank and the action. `stage` must outlive the executor.
  static absl::StatusOr<std::unique_ptr<PipelineExecutor>> Create(Schedule schedule, Communicator& pp_group,
                                                                  PipelineStage& stage, at::Device device,
                                                                  ExecutorOptions options = {});

  // Runs every action of this rank for one optimizer step. Returns the sum of the losses of the
  // micro-batches whose last model chunk is here (0 on other ranks). Gradients accumulate into
  // the parameters' .grad (the caller zeroes them; data-parallel hooks may fire during B and
  // W). Every rank of the pipeline group must call it, once per step. An error (a failed
  // exchange, an exception in the stage) names the rank, the action token and the micro-batch;
  // the step's saved tensors are dropped, and the peers may then be left waiting for this rank
  // until the communicator's watchdog ends the job.
  absl::StatusOr<double> RunStep();
  // RunStep with the loss left on the device: a 0-dim fp64 tensor (zero on ranks without the
  // last model chunk), so that the step queues its work without waiting for it.
  absl::StatusOr<at::Tensor> RunStepOnDevice();

  // Of the last RunStep. Its times are device times on a GPU: the first call after a step waits
  // for the step's last recorded event (stream_clock.h), so callers read it on log steps only.
  const PipelineStats& stats();
  // The simulator's timing of the schedule at its default per-chunk costs
  // (ActionCosts::PerChunk(v)): the predicted bubble and peak live activations.
  const SimulationResult& prediction() const { return prediction_; }
  const Schedule& schedule() const { return schedule_; }
  int64_t rank() const { return rank_; }
  // Whether this rank holds the last model chunk (RunStep's loss is non-zero only there).
  bool HoldsLoss() const;

 private:
  using Key = std::pair<int64_t, int64_t>;  // (local chunk, micro-batch)
  // Per action index of this rank's list: the local chunk whose last weight-gradient action
  // it is, or -1.
  std::vector<int> last_weight_action_chunk_;
  // What F kept for the backward of one micro-batch on one chunk.
  struct Saved {
    at::Tensor input;         // undefined on the first model chunk
    at::Tensor output;        // with its graph
    at::Tensor output_grad;   // kept from I for W; undefined for the loss
    bool input_done = false;  // I ran
  };

  PipelineExecutor(Schedule schedule, Communicator& pp_group, PipelineStage& stage, at::Device device,
                   ExecutorOptions options, SimulationResult prediction);

  absl::Status RunActions();
  absl::Status RunCompute(size_t index);
  absl::Status RunExchange(size_t begin, size_t end);
  absl::Status Forward(const Action& a, const std::string& where);
  absl::Status Backward(const Action& a, const std::string& where);
  // The input gradient of a finished B/I: to SG, or in memory to the previous chunk (pp == 1).
  void DeliverInputGrad(const Action& a, const at::Tensor& input, at::Tensor grad);
  absl::StatusOr<at::Tensor> TakeOutputGrad(const Action& a, const std::string& where);
  bool IsFirstModelChunk(int64_t chunk) const { return chunk * schedule_.pp + rank_ == 0; }
  bool IsLastModelChunk(int64_t chunk) const {
    return chunk * schedule_.pp + rank_ == schedule_.pp * schedule_.v - 1;
  }
  // "pipeline rank 1 (schedule 1f1b) action 5 '0B3' (chunk 0, micro-batch 3)".
  std::string Where(size_t index) const;
  void Synchronize() const;
  void Reset();
  // Fills stats_'s times and timeline from the clock's marks of the last step.
  void FinishTiming();

  Schedule schedule_;
  Communicator& comm_;
  PipelineStage& stage_;
  at::Device device_;
  ExecutorOptions options_;
  SimulationResult prediction_;
  int64_t rank_ = 0;

  // Per-step state, keyed by (local chunk, micro-batch).
  std::map<Key, Saved> saved_;              // F -> B / W
  std::map<Key, at::Tensor> inputs_;        // RA (or chunk c-1's F when pp == 1) -> F
  std::map<Key, at::Tensor> activations_;   // F -> SA
  std::map<Key, at::Tensor> output_grads_;  // RG (or chunk c+1's B/I when pp == 1) -> B / I
  std::map<Key, at::Tensor> input_grads_;   // B / I -> SG
  at::Tensor loss_sum_;
  PipelineStats stats_;
  // The step's marks: its start and end, and each action group's (one action, or the exchanges
  // between two computes) first and last action index with its begin and end marks.
  struct ActionSpan {
    size_t begin, end;
    int from, to;
    bool compute;
  };
  StreamClock clock_;
  int start_mark_ = 0, end_mark_ = 0;
  std::vector<ActionSpan> spans_;
  bool timing_done_ = true;
};

}  // namespace tessera::parallel::pipeline
