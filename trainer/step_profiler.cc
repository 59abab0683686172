// The step profiler (step_profiler.h).
#include "trainer/step_profiler.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/host_sync.h"
#include "core/logging.h"
#include "core/status_macros.h"

namespace tessera {

namespace {

// Kernels of one name: how often they ran and their summed GPU time.
struct KernelTotal {
  int64_t count = 0;
  int64_t ns = 0;
};

// The summary the log gets of a Kineto profile: each line names a kernel (its name cut to fit).
void LogCudaSummary(const torch::autograd::profiler::ProfilerResult& result, double wall_s) {
  std::map<std::string, KernelTotal> by_name;
  int64_t kernels = 0, busy_ns = 0;
  for (const torch::autograd::profiler::KinetoEvent& e : result.events()) {
    if (e.deviceType() != c10::DeviceType::CUDA) continue;
    KernelTotal& total = by_name[e.name()];
    ++total.count;
    total.ns += static_cast<int64_t>(e.durationNs());
    ++kernels;
    busy_ns += static_cast<int64_t>(e.durationNs());
  }
  std::vector<std::pair<std::string, KernelTotal>> sorted(by_name.begin(), by_name.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  TS_LOG(INFO) << absl::StrFormat(
      "profile: %d GPU activities (kernels, copies, fills) of %d kinds, GPU busy %.1f ms of a %.1f ms step "
      "(%.0f%%)",
      kernels, static_cast<int64_t>(sorted.size()), busy_ns / 1e6, wall_s * 1e3,
      wall_s > 0 ? 100.0 * busy_ns / 1e9 / wall_s : 0.0);
  const size_t shown = std::min<size_t>(sorted.size(), 20);
  for (size_t i = 0; i < shown; ++i) {
    const auto& [name, total] = sorted[i];
    TS_LOG(INFO) << absl::StrFormat("profile: %8.2f ms %5.1f%% %6d x  %s", total.ns / 1e6,
                                    busy_ns > 0 ? 100.0 * total.ns / busy_ns : 0.0, total.count,
                                    name.substr(0, 110));
  }
}

}  // namespace

StepProfiler::StepProfiler(const TrainConfig& train, int rank, int world_size, torch::Device device)
    : profile_step_(train.profile_step),
      trace_prefix_(absl::StrCat(train.run_dir, "/profile_step_")),
      trace_suffix_(absl::StrCat(world_size > 1 ? absl::StrFormat("_rank%05d", rank) : "", ".json")),
      device_(device),
      log_summary_(rank == 0) {}

absl::Status StepProfiler::Run(int64_t step, const std::function<absl::Status()>& step_fn) const {
  if (step + 1 != profile_step_) return step_fn();
  const std::string trace = absl::StrCat(trace_prefix_, step + 1, trace_suffix_);
  if (device_.is_cuda()) {
    TS_RETURN_IF_ERROR(RunCuda(trace, step_fn));
  } else {
    absl::Status status;
    {
      torch::autograd::profiler::RecordProfile profile(trace);
      status = step_fn();
    }
    TS_RETURN_IF_ERROR(status);
  }
  TS_LOG(INFO) << "profile of step " << step + 1 << " written to " << trace;
  return absl::OkStatus();
}

absl::Status StepProfiler::RunCuda(const std::string& trace,
                                   const std::function<absl::Status()>& step_fn) const {
  namespace impl = torch::profiler::impl;
  const impl::ProfilerConfig config(impl::ProfilerState::KINETO);
  const std::set<impl::ActivityType> activities{impl::ActivityType::CPU, impl::ActivityType::CUDA};
  try {
    torch::autograd::profiler::prepareProfiler(config, activities);
  } catch (const c10::Error& e) {
    return absl::FailedPreconditionError(absl::StrCat(
        "train.profile_step on CUDA needs LibTorch's Kineto profiler: ", e.what_without_backtrace()));
  }
  // Work queued before the step would count as the step's.
  HostSync(device_);
  const auto start = std::chrono::steady_clock::now();
  torch::autograd::profiler::enableProfiler(config, activities);
  absl::Status status = step_fn();
  HostSync(device_);
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::unique_ptr<torch::autograd::profiler::ProfilerResult> result =
      torch::autograd::profiler::disableProfiler();
  TS_RETURN_IF_ERROR(status);
  if (result == nullptr) return absl::InternalError("LibTorch's Kineto profiler returned no result");
  result->save(trace);
  if (log_summary_) LogCudaSummary(*result, wall_s);
  return absl::OkStatus();
}

}  // namespace tessera
