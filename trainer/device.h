// The device a rank trains on and what the loop measures of it: train.device resolved on this
// machine and build, the CPU threads, the compute dtype of train.precision, the peak FLOP rate
// that MFU divides by, and memory in use.
#pragma once

#include <torch/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "config/config.h"
#include "model/flops.h"

namespace tessera {

// "cuda" or "cpu": what train.device (auto, cpu, cuda) means on this machine and build.
std::string ResolvedDeviceKind(DeviceChoice train_device);

// The device of train.device: CUDA device `device_index` (the grid's local device; < 0: 0) or
// the CPU. train.device = cuda without a usable CUDA device is an error.
absl::StatusOr<torch::Device> ResolveDevice(DeviceChoice train_device, int device_index);

// LibTorch's CPU threads: train.threads; or (0) OMP_NUM_THREADS where the environment sets it
// to a positive number (as torchrun and many job scripts do); else this node's cores shared by
// its `ranks_here` ranks.
void SetCpuThreads(int64_t threads, int ranks_here);

// The dtype matrix products compute in (train.precision).
torch::ScalarType ComputeDtype(Precision precision);

// On CUDA, fp32 matrix products (cuBLAS) and convolutions (cuDNN) as TF32 or not, per
// train.allow_tf32; on other devices nothing changes. Returns what was set, for the log.
bool ApplyTf32Setting(bool allow_tf32, torch::Device device);

// Peak TFLOP/s of one device for MFU: train.peak_tflops, or measured / looked up (model/flops.h).
PeakRate PeakTflopsOf(const Config& config, torch::Device device);

// Memory in use now, MiB: CUDA allocator's allocated bytes for CUDA devices, else process RSS.
double MemoryInUseMb(torch::Device device);
// The peak so far, MiB: the CUDA allocator's peak allocated bytes, or the process's peak
// resident set (VmHWM) on the CPU.
double PeakMemoryMb(torch::Device device);

}  // namespace tessera
