// Tests of the CUDA rotary kernel (kernels/cuda/rotary_kernel.cu): called directly on outputs
// poisoned with NaN (every element written), and through kernels::ApplyRotary with autograd, on
// q and k as the model makes them (strided views of the fused q|k|v projection output), against
// the rotation evaluated in fp64 on the CPU and against kernels::ApplyRotaryFp32Reference, whose
// rounding it shares exactly. fp32 and bf16; head dims 128 and 64 (vectorised), 40, 42 and 602
// (half a multiple of 4 but not 8, odd halves: the one-pair path) and a misaligned view. Needs a
// CUDA device (label gpu).
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cuda/rotary_kernel.h"
#include "kernels/cuda_launch.h"
#include "kernels/rotary.h"
#include "tests/catch_compat.h"

namespace {

namespace kc = ::tessera::kernels::cuda;
using tessera::kernels::ApplyRotary;
using tessera::kernels::ApplyRotaryFp32Reference;
using tessera::kernels::ApplyRotaryReference;
using tessera::kernels::MakeRotaryTables;
using tessera::kernels::RotaryTables;

// |actual - expected| <= rtol * |expected| + atol_rel * max|expected|, elementwise; the message
// names the worst element.
std::string Compare(const torch::Tensor& actual, const torch::Tensor& expected, double rtol,
                    double atol_rel) {
  torch::Tensor a = actual.detach().to(torch::kCPU, torch::kDouble);
  torch::Tensor e = expected.detach().to(torch::kCPU, torch::kDouble);
  if (a.sizes() != e.sizes()) return "shape mismatch";
  const double scale = e.abs().max().item<double>();
  torch::Tensor excess = (a - e).abs() - (rtol * e.abs() + atol_rel * scale);
  const double worst = excess.max().item<double>();
  if (worst <= 0) return "";
  const int64_t i = excess.flatten().argmax().item<int64_t>();
  std::ostringstream out;
  out << "element " << i << ": got " << a.flatten()[i].item<double>() << ", expected "
      << e.flatten()[i].item<double>() << " (max |expected| " << scale << ", rtol " << rtol << ", atol "
      << atol_rel * scale << ")";
  return out.str();
}

// Tolerances against fp64. The kernel rounds each of a*c, b*s and their sum once in fp32: the
// error is at most 2u(|a c| + |b s|) <= 2u * |(a, b)| (Cauchy-Schwarz, cos^2 + sin^2 = 1), and the
// pair's norm is at most sqrt(2) max|out|: about 1.7e-7 of the largest output; 1e-6 leaves margin.
// A bf16 output adds one round-to-nearest: at most 2^-8 of the element itself.
double Rtol(torch::ScalarType t) { return t == torch::kBFloat16 ? 1.0 / 256 : 0.0; }
constexpr double kAtolRel = 1e-6;

struct Case {
  int64_t batch, seq, heads, kv_heads, dim;
  torch::ScalarType dtype;
  bool misaligned = false;  // the fused tensor starts one element into its storage
};

std::string Name(const Case& c) {
  std::ostringstream s;
  s << "B " << c.batch << " T " << c.seq << " H " << c.heads << " Hkv " << c.kv_heads << " D " << c.dim << " "
    << c.dtype << (c.misaligned ? " misaligned" : "");
  return s.str();
}

std::vector<Case> Cases(torch::ScalarType dtype) {
  return {
      {2, 33, 4, 2, 128, dtype},      // vectorised; T not a multiple of anything
      {2, 64, 32, 8, 128, dtype},     // the Llama 3 8B heads: several heads per thread
      {2, 17, 8, 2, 64, dtype},       // vectorised, D = 64
      {3, 5, 3, 1, 40, dtype},        // D/2 = 20: one pair per thread in bf16, 4 in fp32
      {1, 9, 20, 5, 42, dtype},       // D/2 = 21: one pair per thread
      {1, 3, 2, 1, 602, dtype},       // D/2 = 301 > threads per block: pairs loop
      {2, 8, 4, 2, 128, dtype, true}  // 16-byte misaligned view: one pair per thread
  };
}

// The fused q|k|v projection output [B, T, (H + 2 Hkv) D] on the GPU, optionally misaligned.
torch::Tensor MakeFused(const Case& c) {
  const int64_t width = (c.heads + 2 * c.kv_heads) * c.dim;
  const auto cuda = torch::TensorOptions().device(torch::kCUDA).dtype(c.dtype);
  if (!c.misaligned) return torch::randn({c.batch, c.seq, width}, cuda);
  return torch::randn({c.batch, c.seq, width + 1}, cuda).narrow(-1, 1, width);
}

// q and k as model/model.cc makes them: views with a row stride of (H + 2 Hkv) D.
std::vector<torch::Tensor> QkViews(const torch::Tensor& fused, const Case& c) {
  auto parts = fused.split_with_sizes({c.heads * c.dim, c.kv_heads * c.dim, c.kv_heads * c.dim}, -1);
  return {parts[0].view({c.batch, c.seq, c.heads, c.dim}),
          parts[1].view({c.batch, c.seq, c.kv_heads, c.dim})};
}

// The rotation of x (any device and type) evaluated in fp64 on the CPU with the fp32 tables.
torch::Tensor RotateFp64(const torch::Tensor& x, const RotaryTables& cpu_tables, bool inverse) {
  const torch::Tensor x64 = x.detach().to(torch::kCPU, torch::kDouble);
  return ApplyRotaryReference(x64, {cpu_tables.cos, inverse ? -cpu_tables.sin : cpu_tables.sin});
}

// One direct kernel call on x into a NaN-filled output, checked against fp64 and the fp32
// reference.
void CheckRawKernel(const torch::Tensor& x, const RotaryTables& tables, const RotaryTables& cpu_tables,
                    bool inverse) {
  CATCH_INFO("inverse " << inverse << ", strides " << x.strides());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  torch::Tensor out = torch::full(x.sizes(), nan, x.options());
  const kc::RotaryInput shape{.batch = x.size(0),
                              .seq = x.size(1),
                              .heads = x.size(2),
                              .head_dim = x.size(3),
                              .stride_batch = x.stride(0),
                              .stride_seq = x.stride(1),
                              .stride_head = x.stride(2)};
  const kc::DType dtype = tessera::kernels::ToKernelDtype(x.scalar_type());
  // The tables hold more positions than x: the kernel reads rows 0..T-1 of the full tables.
  const cudaError_t status = kc::ApplyRotaryKernel(
      x.data_ptr(), shape, dtype, tables.cos.data_ptr<float>(), tables.sin.data_ptr<float>(), out.data_ptr(),
      inverse ? kc::RotaryDirection::kInverse : kc::RotaryDirection::kForward,
      c10::cuda::getCurrentCUDAStream().stream());
  CATCH_REQUIRE(status == cudaSuccess);
  CATCH_REQUIRE(cudaStreamSynchronize(c10::cuda::getCurrentCUDAStream().stream()) == cudaSuccess);
  CATCH_CHECK(!out.isnan().any().item<bool>());
  CATCH_CHECK(Compare(out, RotateFp64(x, cpu_tables, inverse), Rtol(x.scalar_type()), kAtolRel) == "");
  // Same rounding, step by step, as the fp32 reference: equal bits.
  CATCH_CHECK(torch::equal(out.cpu(), ApplyRotaryFp32Reference(x.cpu(), cpu_tables, inverse)));
}

// ApplyRotary on q and k, backward through autograd to the fused tensor, against fp64 autograd
// through ApplyRotaryReference from the same values.
void CheckAutograd(const Case& c) {
  CATCH_INFO(Name(c));
  const RotaryTables tables = MakeRotaryTables(c.seq + 7, c.dim, 500000.0, torch::kCUDA);
  const RotaryTables cpu_tables{tables.cos.cpu(), tables.sin.cpu()};
  const torch::Tensor fused = MakeFused(c).requires_grad_();
  const auto qk = QkViews(fused, c);
  const torch::Tensor yq = ApplyRotary(qk[0], tables), yk = ApplyRotary(qk[1], tables);
  for (const torch::Tensor& y : {yq, yk}) {
    CATCH_CHECK(y.is_contiguous());
    CATCH_CHECK(y.scalar_type() == c.dtype);
  }
  // Gradients as attention hands them back: q's through a transpose (strided), k's contiguous.
  const torch::Tensor gq = torch::randn({c.batch, c.heads, c.seq, c.dim}, yq.options()).transpose(1, 2);
  const torch::Tensor gk = torch::randn_like(yk);
  const torch::Tensor grad = torch::autograd::grad({yq, yk}, {fused}, {gq, gk})[0];

  const torch::Tensor fused64 = fused.detach().cpu().to(torch::kDouble).requires_grad_();
  const auto qk64 = QkViews(fused64, c);
  const torch::Tensor yq64 = ApplyRotaryReference(qk64[0], cpu_tables);
  const torch::Tensor yk64 = ApplyRotaryReference(qk64[1], cpu_tables);
  const torch::Tensor grad64 = torch::autograd::grad(
      {yq64, yk64}, {fused64}, {gq.cpu().to(torch::kDouble), gk.cpu().to(torch::kDouble)})[0];
  CATCH_CHECK(Compare(yq, yq64, Rtol(c.dtype), kAtolRel) == "");
  CATCH_CHECK(Compare(yk, yk64, Rtol(c.dtype), kAtolRel) == "");
  // The gradient of the v part is zero; the q and k parts are the inverse rotations.
  CATCH_CHECK(Compare(grad, grad64, Rtol(c.dtype), kAtolRel) == "");
  // The fused kernel ran (ATen's path would round the tables to bf16): equal bits with the fp32
  // reference, forward and backward.
  CATCH_CHECK(torch::equal(yq.cpu(), ApplyRotaryFp32Reference(qk[0].detach().cpu(), cpu_tables)));
  const torch::Tensor grad_q = QkViews(grad, c)[0];
  CATCH_CHECK(torch::equal(grad_q.cpu(), ApplyRotaryFp32Reference(gq.cpu(), cpu_tables, /*inverse=*/true)));
}

}  // namespace

CATCH_TEST_CASE("CUDA rotary kernel writes every element and matches fp64 on strided q and k") {
  CATCH_REQUIRE(torch::cuda::is_available());
  torch::manual_seed(11);
  for (const torch::ScalarType dtype : {torch::kFloat, torch::kBFloat16}) {
    for (const Case& c : Cases(dtype)) {
      CATCH_INFO(Name(c));
      const RotaryTables tables = MakeRotaryTables(c.seq + 7, c.dim, 500000.0, torch::kCUDA);
      const RotaryTables cpu_tables{tables.cos.cpu(), tables.sin.cpu()};
      const torch::Tensor fused = MakeFused(c);
      for (const torch::Tensor& x : QkViews(fused, c)) {
        CheckRawKernel(x, tables, cpu_tables, /*inverse=*/false);
        CheckRawKernel(x, tables, cpu_tables, /*inverse=*/true);
      }
    }
  }
}

CATCH_TEST_CASE("CUDA ApplyRotary matches fp64 forward and backward in fp32") {
  CATCH_REQUIRE(torch::cuda::is_available());
  torch::manual_seed(12);
  for (const Case& c : Cases(torch::kFloat)) CheckAutograd(c);
}

CATCH_TEST_CASE("CUDA ApplyRotary matches fp64 forward and backward in bf16") {
  CATCH_REQUIRE(torch::cuda::is_available());
  torch::manual_seed(13);
  for (const Case& c : Cases(torch::kBFloat16)) CheckAutograd(c);
}

CATCH_TEST_CASE("CUDA ApplyRotary takes a gradient without a contiguous head vector") {
  CATCH_REQUIRE(torch::cuda::is_available());
  torch::manual_seed(14);
  const RotaryTables tables = MakeRotaryTables(16, 64, 500000.0, torch::kCUDA);
  const RotaryTables cpu_tables{tables.cos.cpu(), tables.sin.cpu()};
  const auto cuda = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const torch::Tensor x = torch::randn({2, 16, 4, 64}, cuda).requires_grad_();
  // sum() hands back an expanded gradient: every stride 0, the last included.
  const torch::Tensor gx = torch::autograd::grad({ApplyRotary(x, tables).sum()}, {x})[0];
  const torch::Tensor ones = torch::ones({2, 16, 4, 64}, torch::kBFloat16);
  CATCH_CHECK(torch::equal(gx.cpu(), ApplyRotaryFp32Reference(ones, cpu_tables, /*inverse=*/true)));
}
