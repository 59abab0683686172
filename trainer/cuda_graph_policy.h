// Whether the training micro-step runs as a CUDA graph (train.cuda_graphs), decided from the
// resolved config, the device and the layout alone, with every reason it cannot. A pure
// function: the start-up log prints its verdict and the tests check each reason on the CPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"

namespace tessera {

// The eager steps a run takes before it captures the micro-step: the first steps do the lazy
// work a capture must not see (cuBLAS handles and workspaces, attention kernel choices, the
// autograd engine's device threads, the allocator's first blocks).
inline constexpr int64_t kCudaGraphWarmupSteps = 3;

// What the decision reads besides the config.
struct CudaGraphLayout {
  bool cuda = false;  // the run's device is a CUDA device
  int64_t tp = 1, pp = 1, dp = 1, cp = 1;
};

struct CudaGraphDecision {
  bool on = false;
  // Why it is off (empty when on), each naming the key or the layout that rules it out.
  std::vector<std::string> reasons;
  // Whether the start-up log prints the verdict: always when on; when off only under
  // train.cuda_graphs: true (auto stays quiet where graphs cannot run, false was asked for).
  bool log = false;
  // "cuda graphs: on (micro-step captured after 3 warm-up steps)" or
  // "cuda graphs: off (pipeline parallel (pp = 2) ...; tensor parallel ...)".
  std::string LogLine() const;
};

CudaGraphDecision DecideCudaGraphs(const Config& config, const CudaGraphLayout& layout);

}  // namespace tessera
