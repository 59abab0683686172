// The recorders of step_recorder.h: a CUDA graph where LibTorch has CUDA, and the CPU stand-in.
#include "trainer/step_recorder.h"

#if TESSERA_TORCH_HAS_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <utility>

namespace tessera {
namespace {

class RerunRecorder : public StepRecorder {
 public:
  void WarmUp(const std::function<void()>& body) override { body(); }
  void Capture(const std::function<void()>& body) override { body_ = body; }
  void Replay() override { body_(); }

 private:
  std::function<void()> body_;
};

#if TESSERA_TORCH_HAS_CUDA
// LibTorch captures only on a stream other than the default one, and the first use of a stream
// (cuBLAS's per-stream workspace, for one) must not happen inside the capture: the warm-up runs
// on the same side stream. Events order the side stream after the work queued on the current
// stream and the current stream after the side stream's: no host wait.
class CudaGraphRecorder : public StepRecorder {
 public:
  explicit CudaGraphRecorder(c10::DeviceIndex index)
      : side_(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, index)) {}

  void WarmUp(const std::function<void()>& body) override { OnSideStream(body); }
  void Capture(const std::function<void()>& body) override {
    // capture_begin's default pool argument gives the graph a private pool of the caching
    // allocator: what the captured kernels allocate stays reserved for the replays, and eager
    // allocations never reuse it. Global capture mode: an unsafe call (a host sync, a
    // cudaMalloc outside the pool) from any thread during the capture fails it loudly.
    OnSideStream([&] {
      graph_.capture_begin();
      body();
      graph_.capture_end();
    });
  }
  void Replay() override { graph_.replay(); }

 private:
  void OnSideStream(const std::function<void()>& body) {
    const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(side_.device_index());
    c10::cuda::CUDAEvent queued;
    queued.record(current);
    queued.block(side_);
    {
      const c10::cuda::CUDAStreamGuard guard(side_);
      body();
    }
    c10::cuda::CUDAEvent done;
    done.record(side_);
    done.block(current);
  }

  c10::cuda::CUDAStream side_;
  at::cuda::CUDAGraph graph_;
};
#endif

}  // namespace

std::unique_ptr<StepRecorder> MakeCudaGraphRecorder(const torch::Device& device) {
#if TESSERA_TORCH_HAS_CUDA
  if (device.is_cuda())
    return std::make_unique<CudaGraphRecorder>(device.has_index() ? device.index()
                                                                  : c10::cuda::current_device());
#else
  (void)device;
#endif
  return nullptr;
}

std::unique_ptr<StepRecorder> MakeRerunRecorder() { return std::make_unique<RerunRecorder>(); }

}  // namespace tessera
