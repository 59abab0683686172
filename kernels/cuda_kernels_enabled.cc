// The switch for Tessera's CUDA kernels (cuda_kernels_enabled.h).
#include "kernels/cuda_kernels_enabled.h"

#include <cstdlib>
#include <string_view>

namespace tessera::kernels {

bool CudaKernelsEnabled() {
  static const bool enabled = [] {
    const char* value = std::getenv("TESSERA_CUDA_KERNELS");
    return value == nullptr || std::string_view(value) != "0";
  }();
  return enabled;
}

std::string DescribeCudaKernels() {
#if TESSERA_KERNELS_CUDA
  return CudaKernelsEnabled() ? "on (RMSNorm, add + RMSNorm, rotary, SwiGLU)"
                              : "off (TESSERA_CUDA_KERNELS=0): ATen's compositions";
#else
  return "not in this build (LibTorch without CUDA, or no CUDA compiler): ATen's compositions";
#endif
}

}  // namespace tessera::kernels
