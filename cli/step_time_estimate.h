// A step-time estimate for a layout on a GPU cluster, from FLOPs and bytes, for `tessera
// validate` (the config's layout) and `tessera plan` (every layout that fits, ranked by it). It is
// a model, not a measurement: what it takes as given is printed beside every estimate.
//
// Compute: each action of the pipeline (a chunk's forward or backward for one micro-batch) runs
// its matrix products at `gemm_efficiency` x the dense peak. FLOPs per token and tensor-parallel
// rank, after model/flops.h (PaLM's count, as the trainer's MFU): a layer's forward is
// 2 x its matmul parameters + 4 s h (QK^T and AV over the whole, uncausal, sequence), the head's
// 2 h vocab/tp; backward is twice the forward. Recomputation adds to the backward what it runs
// again: the recomputed layers' forward (full), the attention core's 4 s h (selective). MFU counts
// model FLOPs only, so recomputation costs speed but is not credited.
//
// Communication, with ring collectives over n ranks at a bus bandwidth per GPU (the NVLink figure
// inside a node, the network's across nodes; a group is inside a node when all its ranks are):
// all-reduce 2 (n-1)/n B / bw, reduce-scatter and all-gather (n-1)/n B / bw.
//   tensor parallel, per layer and micro-batch, on the critical path (Tessera does not overlap
//     them with computation): forward 2 all-reduces of the activations (tokens x dim in the
//     compute dtype; with sequence parallelism 2 all-gathers + 2 reduce-scatters, the same
//     volume), backward the same plus, with sequence parallelism, the 2 re-gathers; a fully
//     recomputed layer runs its forward's again. The embedding's all-reduce on the first chunk.
//   pipeline, per transfer: the fp32 boundary activations (or their gradient) of one micro-batch,
//     / tp under sequence parallelism; the schedule's simulator times the step with them
//     (parallel/pipeline/simulator.h), bubble included, the slowest chunk's costs for every chunk.
//   data parallel, once per step: the fp32 gradients all-reduced (zero 0) or reduce-scattered
//     (zero 1-3), hidden behind the last micro-batch's backward as far as that lasts; at zero 1
//     and 2 the updated weights all-gathered after the step (exposed); at zero 3 each chunk's
//     weights gathered before its forward and its backward, overlapped with the computation of
//     the chunk before (an action takes the longer of the two).
//   optimizer: AdamW streams 32 B per owned parameter (fp32 gradient, master and 2 moments read,
//     master and moments written; the bf16 weight too) at `memory_gb_s`.
// Not modelled: kernel launch and host overhead, the attention kernel's lower efficiency than a
// GEMM's, collective latency (small messages), stragglers, stage imbalance beyond the slowest
// chunk, and the loss's vocabulary-parallel reductions (a few floats per token).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/layout_check.h"
#include "cli/memory_estimate.h"
#include "config/config.h"

namespace tessera::cli {

// The machine the estimate is for. Defaults: an H100/H200 SXM node of 8 GPUs with NVLink 4
// (450 GB/s per direction; ~360 GB/s is what NCCL's ring collectives reach as bus bandwidth) and
// one 400 Gb/s NIC per GPU (~40 GB/s reached), HBM3 at 3350 GB/s.
struct Hardware {
  double peak_tflops = 0;  // dense, at the run's compute precision
  std::string peak_basis;
  double gemm_efficiency = 0.7;  // achieved fraction of the peak in the matrix products
  double intra_node_gb_s = 360;
  double inter_node_gb_s = 40;
  int64_t gpus_per_node = 8;
  double memory_gb_s = 3350;
};

// The peak for `c`: train.peak_tflops when set, else the H100/H200 SXM data sheet (989 TFLOP/s
// bf16, 494.5 TF32), which model/flops.h also assumes on a GPU.
Hardware DefaultHardware(const Config& c);

struct StepTimeEstimate {
  double forward_s = 0, backward_s = 0;  // one micro-batch on the slowest chunk, communication in
  double pipeline_s = 0;                 // the micro-batches through the schedule, bubble included
  double bubble = 0;                     // idle fraction of pipeline_s (with the real costs)
  double tp_comm_s = 0;                  // per step per rank, part of pipeline_s
  double dp_exposed_s = 0;               // data-parallel communication not hidden
  double optimizer_s = 0;
  double total_s = 0;
  double mfu = 0;           // model FLOPs / (world x total_s x peak)
  double tokens_per_s = 0;  // the whole job
  bool tp_inside_node = true, pp_inside_node = true, dp_inside_node = true;
};

absl::StatusOr<StepTimeEstimate> EstimateStepTime(const Config& c, const Layout& layout,
                                                  const PipelinePlan& plan,
                                                  const std::vector<StageRow>& stages, const Hardware& hw);

}  // namespace tessera::cli
