// A training step's scalars (loss, gradient norm, skip decision, stop signal) on their way to
// the host. Start queues their copy behind the step's work without waiting; Finish waits for
// that copy alone. On a GPU the loop calls Finish during the next step, once that step's forward
// and backward are queued: the wait then ends as soon as the previous step's work is done, and
// the device never runs dry of queued work.
#pragma once

#include <c10/core/Event.h>
#include <torch/types.h>

#include <optional>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

class StepReadback {
 public:
  // Queues the copy of `values` (a 1-dim fp64 tensor on the training device) to the host.
  void Start(const at::Tensor& values);
  // The values Start queued: one host synchronisation (core/host_sync.h). An asynchronous
  // device error surfaces here, as a status.
  absl::StatusOr<std::vector<double>> Finish();

 private:
  at::Tensor values_;  // on the device until Finish
  at::Tensor host_;    // pinned host copy (CUDA)
  std::optional<c10::Event> copied_;
};

}  // namespace tessera
