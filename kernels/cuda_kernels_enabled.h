// Whether the wrappers take Tessera's own CUDA kernels (RMSNorm, residual add + RMSNorm, rotary,
// SwiGLU) where they apply, or the ATen compositions. On unless the environment sets
// TESSERA_CUDA_KERNELS=0: the switch exists to measure the kernels against what they replace, and to rule
// them out when a CUDA run misbehaves. Read once per process.
#pragma once

#include <string>

namespace tessera::kernels {

bool CudaKernelsEnabled();

// For the start-up log: "on (RMSNorm, add + RMSNorm, rotary, SwiGLU)", "off (TESSERA_CUDA_KERNELS=0)", or
// "not in this build" where LibTorch has no CUDA or no CUDA compiler was found.
std::string DescribeCudaKernels();

}  // namespace tessera::kernels
