// CudaDeviceName (device_name.h): the CUDA runtime's device properties, in builds that link it.
#include "kernels/device_name.h"

#if TESSERA_KERNELS_CUDA
#include <cuda_runtime.h>
#endif

namespace tessera::kernels {

std::string CudaDeviceName([[maybe_unused]] int index) {
#if TESSERA_KERNELS_CUDA
  cudaDeviceProp properties{};
  if (cudaGetDeviceProperties(&properties, index < 0 ? 0 : index) == cudaSuccess) return properties.name;
#endif
  return "";
}

}  // namespace tessera::kernels
