// The name of a CUDA device as the driver reports it ("NVIDIA H100 80GB HBM3"), for the data-sheet
// peak MFU is counted against (model/flops.h). Empty where this build runs no CUDA kernels.
#pragma once

#include <string>

namespace tessera::kernels {

std::string CudaDeviceName(int index);

}  // namespace tessera::kernels
