// The training step's micro-batches through a captured micro-step (train.cuda_graphs): the
// forward and backward of one micro-batch of the single model chunk, read from static input
// and target buffers. The first step runs micro-batch 0 eagerly where the capture will run, then
// captures; every later micro-batch copies its tokens into the static buffers and replays. The
// gradients accumulate into the parameters' .grad, which the data-parallel reducer keeps as
// views of its persistent flat buffer (zero 0 and 1), so a replay writes where the reducer reads.
//
// The reducer's hooks are host callbacks: they ran once while capturing and never run on a
// replay. So this step never marks a backward final (MarkFinalBackward): the hooks count nothing
// and launch nothing, and GradReducer::FinishBackward, after the last replay, reduces every
// bucket. Capturing the collectives instead would need NCCL inside the graph and the reducer's
// host bookkeeping (its Work objects, the watchdog's deadlines) outside it; reducing after the
// replay gives up the overlap of the reduction with backward and keeps data parallelism on the
// reducer's tested path. The optimizer, the gradient norm and the guard stay outside as well:
// they already run without host syncs, and the divergence guard's skip and the learning rate
// change per step.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "data/loader.h"
#include "model/model.h"
#include "trainer/step_recorder.h"

namespace tessera {

class MicroStepGraph {
 public:
  // `model`: the whole model (one chunk with the embedding and the head), on `device`; each
  // step has `microbatches` micro-batches of `micro_batch` rows.
  MicroStepGraph(Transformer model, int64_t micro_batch, int64_t microbatches, torch::Device device,
                 std::unique_ptr<StepRecorder> recorder);

  // Forward and backward of every micro-batch of `batch`, accumulating the gradients; returns
  // the sum of the micro-batches' losses each divided by the micro-batch count (a {} fp64
  // tensor on the device), as the pipeline executor's step does. The first call captures.
  absl::StatusOr<torch::Tensor> RunStep(const data::LocalBatch& batch);

  bool captured() const { return captured_; }
  int64_t replays() const { return replays_; }

 private:
  // The micro-step on the static buffers: the loss / micro-batches, its backward; returns the
  // loss, detached, as an fp64 scalar.
  torch::Tensor MicroStep();
  void LoadMicroBatch(const data::LocalBatch& batch, int64_t index);

  Transformer model_;
  int64_t micro_batch_, microbatches_;
  torch::Device device_;
  std::unique_ptr<StepRecorder> recorder_;
  torch::Tensor static_inputs_, static_targets_;
  torch::Tensor static_loss_;  // the captured micro-step's output, rewritten by each replay
  bool captured_ = false;
  int64_t replays_ = 0;
};

}  // namespace tessera
