// Device resolution, threads, precision and memory figures (device.h).
#include "trainer/device.h"

#include <ATen/DeviceAccelerator.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "model/flops.h"

namespace tessera {

std::string ResolvedDeviceKind(DeviceChoice train_device) {
  if (train_device != DeviceChoice::kAuto) return EnumName(train_device);
  return torch::cuda::is_available() ? "cuda" : "cpu";
}

absl::StatusOr<torch::Device> ResolveDevice(DeviceChoice train_device, int device_index) {
  const int index = std::max(0, device_index);
  if (train_device == DeviceChoice::kCpu) return torch::Device(torch::kCPU);
  const bool cuda = torch::cuda::is_available();
  if (train_device == DeviceChoice::kCuda) {
    if (!cuda) {
      return absl::FailedPreconditionError(
          "train.device = cuda, but no CUDA device is usable (this LibTorch build or machine "
          "has none); use train.device: auto or cpu");
    }
    return torch::Device(torch::kCUDA, index);
  }
  return cuda ? torch::Device(torch::kCUDA, index) : torch::Device(torch::kCPU);
}

void SetCpuThreads(int64_t threads, int ranks_here) {
  int n = static_cast<int>(threads);
  if (n <= 0) {
    const char* omp = std::getenv("OMP_NUM_THREADS");
    n = omp != nullptr ? std::atoi(omp) : 0;
  }
  if (n <= 0)
    n = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / std::max(1, ranks_here));
  at::set_num_threads(n);
}

torch::ScalarType ComputeDtype(Precision precision) {
  return precision == Precision::kBf16 ? torch::kBFloat16 : torch::kFloat;
}

bool ApplyTf32Setting(bool allow_tf32, torch::Device device) {
  if (!device.is_cuda()) return false;
  at::globalContext().setAllowTF32CuBLAS(allow_tf32);
  at::globalContext().setAllowTF32CuDNN(allow_tf32);
  return allow_tf32;
}

PeakRate PeakTflopsOf(const Config& config, torch::Device device) {
  const TrainConfig& train = config.train;
  if (train.peak_tflops > 0) return {train.peak_tflops, "train.peak_tflops"};
  return PeakTflops(device, ComputeDtype(train.precision),
                    PeakProbeShapes(config.model, train.micro_batch * train.seq_len, config.parallel.tp));
}

double MemoryInUseMb(torch::Device device) {
  if (device.is_cuda()) {
    auto stats = at::accelerator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return static_cast<double>(stats.allocated_bytes[0].current) / (1024.0 * 1024.0);
  }
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) /
         (1024.0 * 1024.0);
}

double PeakMemoryMb(torch::Device device) {
  if (device.is_cuda()) {
    auto stats = at::accelerator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0);
  }
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;  // kB
  }
  return 0;
}

}  // namespace tessera
