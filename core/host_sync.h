// Host synchronisations, counted. On an accelerator, reading a device value on the host
// (`.item()`, a copy to the CPU) or synchronising the device waits for every kernel queued
// before it, so the host stops running ahead and the device idles while the host queues the
// next kernels. The training step reads device values only through these wrappers, which count
// each read in one process-wide counter: a CPU test counts what a GPU run would wait for.
//
// Header-only and included only by code that links LibTorch (tessera_core itself stays free of
// LibTorch). On the CPU the wrappers read as plain `.item()` does; they still count.
#pragma once

#include <torch/types.h>

#include <atomic>
#include <cstdint>

#include <torch/cuda.h>

namespace tessera {

// Host synchronisations counted since the process started (or since the last reset).
inline std::atomic<int64_t> host_sync_count{0};

inline int64_t HostSyncCount() { return host_sync_count.load(std::memory_order_relaxed); }
inline void CountHostSync() { host_sync_count.fetch_add(1, std::memory_order_relaxed); }

// `tensor`'s single value on the host (a host synchronisation on an accelerator).
template <typename T>
T HostRead(const at::Tensor& tensor) {
  CountHostSync();
  return tensor.item<T>();
}

// The value of a tensor in host memory (a CPU tensor, e.g. on a CPU run): no device to wait
// for, so not counted.
template <typename T>
T CpuValue(const at::Tensor& tensor) {
  TORCH_CHECK(tensor.is_cpu(), "CpuValue reads CPU tensors, got one on ", tensor.device());
  return tensor.item<T>();
}

// `tensor` copied to the CPU (a host synchronisation on an accelerator).
inline at::Tensor HostCopy(const at::Tensor& tensor) {
  CountHostSync();
  return tensor.to(at::kCPU);
}

// Waits for all the work queued on `device` (counted on every device: on the CPU it is the
// point where a GPU run would wait).
inline void HostSync(const c10::Device& device) {
  CountHostSync();
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

}  // namespace tessera
