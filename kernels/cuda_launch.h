// What the LibTorch wrappers of Tessera's CUDA kernels (rms_norm.cc, add_rms_norm.cc, rotary.cc,
// swiglu.cc) share: the storage types the kernels take and their names for them, the stream a
// launch goes to, and the check of a launch's status. It needs LibTorch's CUDA headers, so it is
// included only under TESSERA_KERNELS_CUDA; kernels/cuda/ itself stays free of LibTorch.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#include "kernels/cuda/dtype.h"

namespace tessera::kernels {

// fp32 and bf16: the storage types every one of the kernels reads and writes.
inline bool IsKernelDtype(c10::ScalarType t) {
  return t == c10::ScalarType::Float || t == c10::ScalarType::BFloat16;
}

// The kernels' name for a type that IsKernelDtype accepts.
inline cuda::DType ToKernelDtype(c10::ScalarType t) {
  return t == c10::ScalarType::BFloat16 ? cuda::DType::kBFloat16 : cuda::DType::kFloat32;
}

// LibTorch's current stream on t's device: the kernels run in order with ATen's work there.
inline cudaStream_t KernelStream(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index());
}

// A launch that failed is a c10::Error, as a failing ATen operation would be, naming the kernel
// and the direction: "Tessera <kernel> CUDA kernel (<what>): <CUDA's message>".
inline void CheckKernelLaunch(cudaError_t status, const char* kernel, const char* what) {
  TORCH_CHECK(status == cudaSuccess, "Tessera ", kernel, " CUDA kernel (", what,
              "): ", cudaGetErrorString(status));
}

}  // namespace tessera::kernels
