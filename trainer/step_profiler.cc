// The step profiler (step_profiler.h).
#include "trainer/step_profiler.h"

#include <torch/csrc/autograd/profiler_legacy.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/logging.h"
#include "core/status_macros.h"

namespace tessera {

StepProfiler::StepProfiler(const TrainConfig& train, int rank, int world_size)
    : profile_step_(train.profile_step),
      trace_prefix_(absl::StrCat(train.run_dir, "/profile_step_")),
      trace_suffix_(absl::StrCat(world_size > 1 ? absl::StrFormat("_rank%05d", rank) : "", ".json")) {}

absl::Status StepProfiler::Run(int64_t step, const std::function<absl::Status()>& step_fn) const {
  if (step + 1 != profile_step_) return step_fn();
  const std::string trace = absl::StrCat(trace_prefix_, step + 1, trace_suffix_);
  absl::Status status;
  {
    torch::autograd::profiler::RecordProfile profile(trace);
    status = step_fn();
  }
  TS_RETURN_IF_ERROR(status);
  TS_LOG(INFO) << "profile of step " << step + 1 << " written to " << trace;
  return absl::OkStatus();
}

}  // namespace tessera
