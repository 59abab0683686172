// The matrix product of the model: y = x W^T with x in the compute dtype and W the model's
// weight (fp32, or bf16 under bf16 precision). On CPUs without native bf16 matrix units (no AVX512-BF16 or
// AMX), LibTorch's bf16 GEMM falls back to a path 5-40x slower than fp32; there Tessera rounds the operands
// to bf16 and multiplies them with the fp32 GEMM, which is the arithmetic of a bf16 tensor core (bf16 inputs,
// fp32 accumulation) at fp32 speed. Where the CPU has bf16 units, LibTorch's own bf16 GEMM runs (the same
// inputs and accumulation). On both paths, and on CUDA, the weight gradient comes back in fp32, never rounded
// to bf16, so gradient accumulation over micro-steps sums unrounded fp32 terms.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

namespace tessera::kernels {

// How a bf16 product runs on the CPU.
enum class Bf16MatmulPath {
  kNative,    // LibTorch's bf16 GEMM (oneDNN on AVX512-BF16 / AMX)
  kEmulated,  // operands rounded to bf16, multiplied by the fp32 GEMM
};

// x: [..., in] (fp32 or bf16); weights: one or more [out_i, in] matrices (fp32 or bf16), stacked
// by rows into one product (q|k|v, gate|up). Returns [..., sum out_i] in x's dtype. The weight
// gradients are fp32: an fp32 weight gets it through autograd, a bf16 weight (a leaf) straight
// into its fp32 .grad (kernels/weight_grad.h). A bf16 x on the CPU takes CpuBf16MatmulPath().
torch::Tensor Linear(const torch::Tensor& x, at::TensorList weights);
// The same on an explicit path (tests run both on every machine; kNative is slow but exact
// where the CPU lacks bf16 units).
torch::Tensor Linear(const torch::Tensor& x, at::TensorList weights, Bf16MatmulPath path);

// The pieces of Linear, outside autograd, for code that runs its own backward (the chunked loss,
// the sequence-parallel column layer): the same arithmetic as Linear's forward and backward on
// the path CpuBf16MatmulPath() picks, weights stacked by rows as Linear stacks them.
//   LinearProduct:        y = x W^T in x's dtype
//   LinearInputGrad:      grad_x = grad_y W in x_dtype
//   LinearWeightGrads:    each weight's gradient from grad_y^T x in fp32: where `wanted[i]`, a
//                         bf16 weight's goes into its fp32 .grad (undefined is returned), an fp32
//                         weight's is returned for autograd; undefined where not wanted
//   LinearWeightGradFp32: grad_y^T x in fp32 for one weight, returned, never rounded to bf16
torch::Tensor LinearProduct(const torch::Tensor& x, at::TensorList weights);
torch::Tensor LinearInputGrad(const torch::Tensor& grad_y, at::TensorList weights, at::ScalarType x_dtype);
std::vector<torch::Tensor> LinearWeightGrads(const torch::Tensor& grad_y, const torch::Tensor& x,
                                             at::TensorList weights, const std::vector<bool>& wanted);
torch::Tensor LinearWeightGradFp32(const torch::Tensor& grad_y, const torch::Tensor& x);

// The weights stacked by rows as one [sum out_i, in] matrix, outside autograd: a view of their
// buffer when they are consecutive row blocks of one (as the trainer's flat buffers hold q|k|v
// and gate|up), else a copy.
torch::Tensor StackRows(at::TensorList weights);

// Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16 on x86-64).
bool CpuHasNativeBf16Matmul();

// The path bf16 products take in this process: kNative where the CPU has bf16 units, else
// kEmulated; the environment variable TESSERA_BF16_MATMUL=native|emulated overrides it (to run
// either path on any machine). Read once.
Bf16MatmulPath CpuBf16MatmulPath();

// "native (AVX512-BF16/AMX)" or "emulated (bf16-rounded operands on the fp32 GEMM)", plus
// " (forced by TESSERA_BF16_MATMUL)" when the environment chose it: for the run's log.
std::string DescribeCpuBf16MatmulPath();

}  // namespace tessera::kernels
