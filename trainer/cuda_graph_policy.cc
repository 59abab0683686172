// The CUDA-graph decision (cuda_graph_policy.h). Each rule names what the captured micro-step
// cannot hold: a graph replays the device work recorded once, so everything the step does on the
// host (communication scheduled by the host, allocations whose addresses change, per-batch plans
// built on the host) would not happen again on replay.
#include "trainer/cuda_graph_policy.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera {

std::string CudaGraphDecision::LogLine() const {
  if (on) {
    return absl::StrCat("cuda graphs: on (micro-step captured after ", kCudaGraphWarmupSteps,
                        " warm-up steps)");
  }
  return absl::StrCat("cuda graphs: off (", absl::StrJoin(reasons, "; "), ")");
}

CudaGraphDecision DecideCudaGraphs(const Config& config, const CudaGraphLayout& layout) {
  CudaGraphDecision d;
  const CudaGraphsMode mode = config.train.cuda_graphs;
  if (mode == CudaGraphsMode::kFalse) {
    d.reasons.push_back("train.cuda_graphs = false");
    return d;
  }
  std::vector<std::string>& why = d.reasons;
  if (!layout.cuda) why.push_back("the device is the CPU: graphs are a CUDA feature");
  if (layout.pp > 1) {
    why.push_back(absl::StrCat("pipeline parallel (pp = ", layout.pp,
                               "): the executor's send/recv and schedule run on the host"));
  }
  if (layout.tp > 1) {
    why.push_back(absl::StrCat("tensor parallel (tp = ", layout.tp,
                               "): its collectives run inside forward and backward"));
  }
  if (layout.cp > 1) {
    why.push_back(absl::StrCat("context parallel (cp = ", layout.cp,
                               "): its key/value all-gathers run inside forward and backward"));
  }
  // Zero 2 resets every .grad each step and lets autograd allocate it anew, so the gradients a
  // replay writes would not be the tensors the reducer reads; zero 3 gathers and frees the units'
  // storage around each use. Zero 0 and 1 keep .grad as views of one persistent buffer.
  const int64_t zero = config.parallel.zero;
  if (zero == 2) why.push_back("parallel.zero = 2: each step's gradients are allocated anew");
  if (zero == 3) why.push_back("parallel.zero = 3: parameter gathers and releases allocate during the step");
  if (config.data.document_mask) {
    why.push_back("data.document_mask: each micro-batch's document plan is built on the host");
  }
  if (config.data.reset_position_ids) {
    why.push_back("data.reset_position_ids: each micro-batch's positions are built on the host");
  }
  if (config.train.profile_step > 0) {
    why.push_back("train.profile_step: the profiled step must run its kernels eagerly");
  }
  d.on = why.empty();
  d.log = d.on || mode == CudaGraphsMode::kTrue;
  return d;
}

}  // namespace tessera
