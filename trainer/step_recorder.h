// Records a piece of device work once and replays it: on CUDA a CUDA graph (at::cuda::CUDAGraph,
// captured on a side stream into a private memory pool of the caching allocator); on the CPU a
// stand-in that replays by running the recorded function again, so that the logic around a
// captured step (static buffers, loss and gradient accumulation, what runs after the replays)
// is tested on the CPU against the eager step.
#pragma once

#include <torch/types.h>

#include <functional>
#include <memory>

namespace tessera {

class StepRecorder {
 public:
  virtual ~StepRecorder() = default;
  // Runs `body` eagerly where the capture will run (CUDA: on the capture stream, ordered after
  // the work queued so far and before the work queued next).
  virtual void WarmUp(const std::function<void()>& body) = 0;
  // Records `body`. CUDA: the device work is captured, not run; tensors `body` leaves behind
  // (its outputs) live in the graph's pool, and each replay rewrites them. Call once.
  virtual void Capture(const std::function<void()>& body) = 0;
  // Runs the recorded work again, on the current stream.
  virtual void Replay() = 0;
};

// A CUDA graph recorder for `device` (a CUDA device); nullptr where this build's LibTorch has no
// CUDA.
std::unique_ptr<StepRecorder> MakeCudaGraphRecorder(const torch::Device& device);
// The CPU stand-in: WarmUp and Replay run the function, Capture stores it.
std::unique_ptr<StepRecorder> MakeRerunRecorder();

}  // namespace tessera
