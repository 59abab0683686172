// Element types of the storage that Tessera's CUDA kernels read and write, named without any
// CUDA or LibTorch header so that the host-side wrappers (kernels/*.cc) can pass them.
#pragma once

namespace tessera::kernels::cuda {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1 };

}  // namespace tessera::kernels::cuda
