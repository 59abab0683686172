// The step's scalars on their way to the host (step_readback.h).
#include "trainer/step_readback.h"

#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "core/host_sync.h"

namespace tessera {

void StepReadback::Start(const at::Tensor& values) {
  values_ = values;
  copied_.reset();
  if (!values.is_cuda()) return;  // a CPU tensor is in host memory already
  // A non-blocking copy into pinned memory and an event behind it: Finish then waits for this
  // step's work, not for whatever was queued after Start.
  host_ = torch::empty(values.sizes(), values.options().device(at::kCPU).pinned_memory(true));
  host_.copy_(values, /*non_blocking=*/true);
  copied_.emplace(values.device().type());
  copied_->record(c10::impl::VirtualGuardImpl(values.device().type()).getStream(values.device()));
}

absl::StatusOr<std::vector<double>> StepReadback::Finish() {
  try {
    at::Tensor host;
    if (copied_) {
      CountHostSync();
      copied_->synchronize();
      host = host_;
    } else {
      host = HostCopy(values_).contiguous();
    }
    const double* data = host.data_ptr<double>();
    std::vector<double> out(data, data + host.numel());
    values_ = at::Tensor();
    copied_.reset();
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("reading the step's loss and gradient norm: ", e.what_without_backtrace()));
  }
}

}  // namespace tessera
