// Tests of the CUDA RMSNorm kernel (kernels/cuda/rms_norm_kernel.cu) through kernels::RmsNorm,
// the wrapper the model calls: forward values and the gradients of x and of the weight against
// kernels::RmsNormReference evaluated in fp64 on the CPU, for fp32 and bf16 storage, vectorised
// and scalar paths, and a row long enough to need the opt-in shared memory. The SwiGLU kernels
// (kernels/cuda/swiglu_kernel.cu) called directly against kernels::SwigluValuesReference and
// SwigluGradReference in fp64, and kernels::Swiglu through autograd against the CPU. Needs a CUDA
// device (label gpu).
#include "kernels/rms_norm.h"

#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/attention_backend.h"
#include "kernels/cuda/swiglu_kernel.h"
#include "kernels/cuda_launch.h"
#include "kernels/linear.h"
#include "kernels/sum_squares.h"
#include "kernels/swiglu.h"

#include "tests/catch_compat.h"

namespace {

using tessera::kernels::RmsNorm;
using tessera::kernels::RmsNormReference;

constexpr double kEps = 1e-5;

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

struct Case {
  std::vector<int64_t> shape;
  torch::ScalarType in, out;
};

std::string Name(const Case& c) {
  std::ostringstream s;
  s << "shape [";
  for (size_t i = 0; i < c.shape.size(); ++i) s << (i ? "," : "") << c.shape[i];
  s << "] " << c.in << " -> " << c.out;
  return s.str();
}

// Runs the CUDA path and the fp64 CPU reference on the same (dtype-rounded) values and checks
// y, grad_x and grad_w.
void CheckCase(const Case& c, uint64_t seed) {
  CATCH_INFO(Name(c));
  torch::manual_seed(seed);
  const int64_t dim = c.shape.back();
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  // Rows of different scales (0.1 .. 10) so that inv_rms differs per row; a weight away from 0.
  torch::Tensor x0 = torch::randn(c.shape) * torch::exp(torch::randn(c.shape).narrow(-1, 0, 1) * 1.5) + 0.1;
  torch::Tensor w0 = torch::rand({dim}) + 0.5;
  torch::Tensor x = x0.to(c.in).to(cuda).requires_grad_();
  torch::Tensor w = w0.to(cuda).requires_grad_();
  torch::Tensor y = RmsNorm(x, w, kEps, c.out);
  CATCH_REQUIRE(y.is_cuda());
  CATCH_REQUIRE(y.scalar_type() == c.out);
  CATCH_REQUIRE(y.grad_fn());
  // The fused kernel, not ATen's fallback, produced y.
  CATCH_CHECK(y.grad_fn()->name().find("RmsNormCudaFunction") != std::string::npos);
  torch::Tensor gy = torch::randn(c.shape).to(c.out).to(cuda);
  auto grads = torch::autograd::grad({y}, {x, w}, {gy});

  // Reference in fp64 from exactly the values the kernel saw.
  torch::Tensor xr = x.detach().cpu().to(torch::kDouble).requires_grad_();
  torch::Tensor wr = w.detach().cpu().to(torch::kDouble).requires_grad_();
  torch::Tensor yr = RmsNormReference(xr, wr, kEps);
  auto grads_ref = torch::autograd::grad({yr}, {xr, wr}, {gy.cpu().to(torch::kDouble)});

  // Tolerances. fp32 results: sums of up to 16384 products in fp32 (per-thread, then a tree)
  // and rsqrtf (2 ulp) give relative errors ~1e-6; 1e-5 leaves margin. grad_x is a difference
  // of two terms of the same size, so its error is relative to the row's scale: an absolute
  // allowance of 1e-5 of the largest value. grad_w sums rows*products in fp32 over blocks:
  // ~rows * 6e-8 relative at worst, 1e-4 covers the shapes here. A bf16 output is one
  // round-to-nearest of the fp32 result: at most 2^-8 relative; 2^-7 allows for the fp32 result
  // sitting next to a rounding boundary.
  auto rtol_for = [](torch::ScalarType t) { return t == torch::kBFloat16 ? 1.0 / 128 : 1e-5; };
  const std::string y_err = Compare(y, yr, rtol_for(c.out), 1e-6);
  CATCH_CHECK(y_err == "");
  const std::string gx_err = Compare(grads[0], grads_ref[0], std::max(rtol_for(c.in), 1e-4), 1e-5);
  CATCH_CHECK(gx_err == "");
  CATCH_CHECK(grads[0].scalar_type() == c.in);
  CATCH_CHECK(grads[1].scalar_type() == torch::kFloat);
  const std::string gw_err = Compare(grads[1], grads_ref[1], 1e-4, 1e-5);
  CATCH_CHECK(gw_err == "");
}

}  // namespace

CATCH_TEST_CASE("CUDA RMSNorm matches the fp64 reference in fp32") {
  CATCH_REQUIRE(torch::cuda::is_available());
  for (const Case& c : std::vector<Case>{
           {{4, 33, 2048}, torch::kFloat, torch::kFloat},  // vectorised, rows not a multiple of anything
           {{7, 100}, torch::kFloat, torch::kFloat},       // dim % 8 != 0: scalar path
           {{3, 16384}, torch::kFloat, torch::kFloat},     // 64 KB of partial grad_w: opt-in shared memory
           {{1, 8}, torch::kFloat, torch::kFloat},         // one row, one vector
           {{600, 256}, torch::kFloat, torch::kFloat}}) {  // more rows than backward blocks on small GPUs
    CheckCase(c, 1);
  }
}

CATCH_TEST_CASE("CUDA RMSNorm matches the fp64 reference with bf16 input or output") {
  CATCH_REQUIRE(torch::cuda::is_available());
  for (const Case& c : std::vector<Case>{
           {{2, 64, 2048}, torch::kBFloat16, torch::kBFloat16},
           {{2, 64, 2048}, torch::kFloat, torch::kBFloat16},  // the model's bf16 path: fp32 residual in
           {{2, 64, 2048}, torch::kBFloat16, torch::kFloat},
           {{5, 3, 200}, torch::kBFloat16, torch::kBFloat16},  // 200 % 8 == 0 but rows of 400 bytes
           {{9, 36}, torch::kFloat, torch::kBFloat16}}) {      // scalar path
    CheckCase(c, 2);
  }
}

CATCH_TEST_CASE("CUDA RMSNorm's weight gradient is deterministic and non-contiguous input works") {
  CATCH_REQUIRE(torch::cuda::is_available());
  torch::manual_seed(3);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  torch::Tensor x = torch::randn({4096, 1024}, cuda);
  torch::Tensor w = (torch::rand({1024}, cuda) + 0.5).requires_grad_();
  torch::Tensor gy = torch::randn({4096, 1024}, cuda);
  auto grad_w = [&] { return torch::autograd::grad({RmsNorm(x, w, kEps, torch::kFloat)}, {w}, {gy})[0]; };
  // Partial sums are added in a fixed order (no atomics): bitwise equal on every run.
  CATCH_CHECK(torch::equal(grad_w(), grad_w()));

  // A transposed (non-contiguous) input is normalised along its last dimension like a copy.
  torch::Tensor xt = torch::randn({64, 48}, cuda).t().requires_grad_();  // [48, 64], strides (1, 48)
  torch::Tensor w2 = torch::rand({64}, cuda) + 0.5;
  torch::Tensor y = RmsNorm(xt, w2, kEps, torch::kFloat);
  torch::Tensor y_ref = RmsNormReference(xt.detach().contiguous(), w2, kEps);
  CATCH_CHECK(Compare(y, y_ref, 1e-5, 1e-6) == "");
  auto gx = torch::autograd::grad({y}, {xt}, {torch::ones_like(y)})[0];
  CATCH_CHECK(gx.sizes() == xt.sizes());
}

CATCH_TEST_CASE("CUDA RMSNorm leaves fp64 and CPU tensors to ATen") {
  CATCH_REQUIRE(torch::cuda::is_available());
  auto x = torch::randn({3, 16}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kDouble))
               .requires_grad_();
  auto w = torch::ones({16}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kDouble));
  auto y = RmsNorm(x, w, kEps, torch::kDouble);
  CATCH_CHECK(y.scalar_type() == torch::kDouble);
  CATCH_CHECK(y.grad_fn()->name().find("RmsNormCudaFunction") == std::string::npos);
  // fp64 both sides: agreement to rounding.
  CATCH_CHECK(Compare(y, RmsNormReference(x.detach(), w, kEps), 1e-12, 1e-12) == "");
}

CATCH_TEST_CASE("CUDA SumOfSquares of fp32 gradients matches fp64 without an fp64 copy") {
  torch::manual_seed(31);
  // 5M elements of mixed scale: fp32 accumulation in a tree reduction keeps ~1e-6 relative.
  auto x = (torch::randn({5'000'003}) * torch::rand({5'000'003}).mul(4).exp()).to(torch::kCUDA);
  const double expected = x.to(torch::kCPU, torch::kDouble).square().sum().item<double>();
  const at::Tensor got = tessera::kernels::SumOfSquares(x);
  CATCH_CHECK(got.is_cuda());
  CATCH_CHECK(got.scalar_type() == torch::kDouble);
  CATCH_CHECK(std::abs(got.item<double>() - expected) <= 1e-5 * expected);
}

CATCH_TEST_CASE("CUDA Linear with bf16 weights accumulates their gradients in fp32 .grad") {
  torch::manual_seed(32);
  auto w = torch::randn({64, 128}).to(torch::kCUDA, torch::kBFloat16).requires_grad_();
  w.mutable_grad() =
      torch::zeros({64, 128}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat));
  auto reference = torch::zeros({64, 128}, torch::kDouble);
  for (int step = 0; step < 8; ++step) {
    auto x = torch::randn({4, 32, 128}).to(torch::kCUDA, torch::kBFloat16);
    auto g = torch::randn({4, 32, 64}).to(torch::kCUDA, torch::kBFloat16);
    tessera::kernels::Linear(x, w).backward(g);
    reference += torch::mm(g.reshape({-1, 64}).t().to(torch::kCPU, torch::kDouble),
                           x.reshape({-1, 128}).to(torch::kCPU, torch::kDouble));
  }
  CATCH_CHECK(w.grad().scalar_type() == torch::kFloat);
  // fp32 accumulation of 8 x 128 products of bf16 values: ~1e-5 relative to the largest entry.
  const double err = (w.grad().to(torch::kCPU, torch::kDouble) - reference).abs().max().item<double>();
  CATCH_CHECK(err <= 1e-4 * reference.abs().max().item<double>());
}

CATCH_TEST_CASE("CUDA attention reads grouped kv heads in place on a fused kernel, equal to expanded ones") {
  torch::manual_seed(33);
  // Llama 3 8B's per-GPU heads at head_dim 128, bf16, in the layouts the model passes.
  const int64_t heads = 32, kv_heads = 8, seq = 1024, hd = 128;
  const std::string line =
      tessera::kernels::DescribeAttention(heads, kv_heads, seq, hd, torch::kCUDA, torch::kBFloat16);
  CATCH_INFO(line);
  CATCH_CHECK(line.find("in place") != std::string::npos);
  const auto options = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  auto q = torch::randn({1, seq, heads, hd}, options).transpose(1, 2).requires_grad_();
  auto k = torch::randn({1, seq, kv_heads, hd}, options).transpose(1, 2).requires_grad_();
  auto v = torch::randn({1, seq, kv_heads, hd}, options).transpose(1, 2).requires_grad_();
  CATCH_CHECK(tessera::kernels::NativeGroupedAttention(q, k, v));
  auto out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, true, std::nullopt, /*enable_gqa=*/true);
  auto seed = torch::randn_like(out);
  out.backward(seed);
  // Reference: fp64 math on the CPU over expanded kv heads.
  auto q64 = q.detach().to(torch::kCPU, torch::kDouble).requires_grad_();
  auto k64 = k.detach().to(torch::kCPU, torch::kDouble).requires_grad_();
  auto v64 = v.detach().to(torch::kCPU, torch::kDouble).requires_grad_();
  auto ref = at::scaled_dot_product_attention(q64, k64.repeat_interleave(heads / kv_heads, 1),
                                              v64.repeat_interleave(heads / kv_heads, 1), {}, 0.0, true);
  ref.backward(seed.to(torch::kCPU, torch::kDouble));
  // bf16 inputs and outputs with fp32 accumulation: errors of a few bf16 ulps (2^-8 relative)
  // of the largest entries; a wrong kv-head mapping is off by order 1.
  CATCH_CHECK(Compare(out, ref, 2e-2, 2e-2) == "");
  CATCH_CHECK(Compare(q.grad(), q64.grad(), 5e-2, 2e-2) == "");
  CATCH_CHECK(Compare(k.grad(), k64.grad(), 5e-2, 2e-2) == "");
  CATCH_CHECK(Compare(v.grad(), v64.grad(), 5e-2, 2e-2) == "");
}

namespace {

namespace kc = ::tessera::kernels::cuda;

// A CUDA buffer of `guard` + n + kSwigluGuard elements, all NaN, and the view of its n elements
// after the first `guard` as `shape`: guard = 1 starts the data off a 16-byte boundary.
constexpr int64_t kSwigluGuard = 8;

struct Poisoned {
  torch::Tensor buffer, view;
};

Poisoned PoisonedBuffer(std::vector<int64_t> shape, torch::ScalarType dtype, int64_t guard) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const auto options = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
  torch::Tensor buffer =
      torch::full({guard + n + kSwigluGuard}, std::numeric_limits<float>::quiet_NaN(), options);
  return {buffer, buffer.narrow(0, guard, n).view(shape)};
}

// The elements of `p.buffer` outside `p.view` are still NaN: nothing was written out of bounds.
bool GuardsUntouched(const Poisoned& p, int64_t guard) {
  const int64_t n = p.view.numel();
  return p.buffer.narrow(0, 0, guard).isnan().all().item<bool>() &&
         p.buffer.narrow(0, guard + n, kSwigluGuard).isnan().all().item<bool>();
}

struct SwigluCase {
  int64_t rows, f;
  torch::ScalarType dtype;
  int64_t guard;  // 0: 16-byte aligned data; 1: one element off (the scalar path)
};

// Runs both kernels on fresh random inputs into NaN-filled outputs, and checks every output
// element against the fp64 CPU reference computed from the same stored inputs.
void CheckSwigluKernels(const SwigluCase& c, uint64_t seed) {
  CATCH_INFO("rows " << c.rows << ", F " << c.f << ", " << c.dtype << ", guard " << c.guard);
  torch::manual_seed(seed);
  const kc::DType dtype = tessera::kernels::ToKernelDtype(c.dtype);
  Poisoned gate_up = PoisonedBuffer({c.rows, 2 * c.f}, c.dtype, c.guard);
  Poisoned dy = PoisonedBuffer({c.rows, c.f}, c.dtype, c.guard);
  gate_up.view.copy_(3 * torch::randn({c.rows, 2 * c.f}));  // through the sigmoid's curved part and tails
  dy.view.copy_(torch::randn({c.rows, c.f}));
  Poisoned y = PoisonedBuffer({c.rows, c.f}, c.dtype, c.guard);
  Poisoned grad = PoisonedBuffer({c.rows, 2 * c.f}, c.dtype, c.guard);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  CATCH_REQUIRE(kc::SwigluForward(gate_up.view.data_ptr(), y.view.data_ptr(), dtype, c.rows, c.f, stream) ==
                cudaSuccess);
  CATCH_REQUIRE(kc::SwigluBackward(dy.view.data_ptr(), gate_up.view.data_ptr(), grad.view.data_ptr(), dtype,
                                   c.rows, c.f, stream) == cudaSuccess);
  // Finite inputs give finite outputs: a NaN left means an element was never written.
  CATCH_CHECK(!y.view.isnan().any().item<bool>());
  CATCH_CHECK(!grad.view.isnan().any().item<bool>());
  CATCH_CHECK(GuardsUntouched(y, c.guard));
  CATCH_CHECK(GuardsUntouched(grad, c.guard));

  const torch::Tensor x64 = gate_up.view.to(torch::kCPU, torch::kDouble);
  const torch::Tensor y_ref = tessera::kernels::SwigluValuesReference(x64);
  const torch::Tensor grad_ref =
      tessera::kernels::SwigluGradReference(dy.view.to(torch::kCPU, torch::kDouble), x64);
  // fp32: expf (2 ulp), the division and five products, ~10 ulps (6e-7) in all; 1e-5 leaves
  // margin. The gate gradient's factor 1 + g (1 - s) cancels near g = -1.28, leaving an absolute
  // error of a few 1e-7 of |dy u|: 1e-5 of the largest value. bf16: one rounding of the fp32
  // result, at most 2^-8 relative; 2^-7 allows for the fp32 error on top.
  const double rtol = c.dtype == torch::kBFloat16 ? 1.0 / 128 : 1e-5;
  const std::string y_err = Compare(y.view, y_ref, rtol, 1e-5);
  CATCH_CHECK(y_err == "");
  const std::string grad_err = Compare(grad.view, grad_ref, rtol, 1e-5);
  CATCH_CHECK(grad_err == "");
}

}  // namespace

CATCH_TEST_CASE("CUDA SwiGLU kernels write every element and match the fp64 reference") {
  CATCH_REQUIRE(torch::cuda::is_available());
  for (torch::ScalarType dtype : {torch::kFloat, torch::kBFloat16}) {
    for (const SwigluCase& c : std::vector<SwigluCase>{
             {300, 8192, dtype, 0},   // vectorised; more vectors than one wave of threads: grid-stride
             {300, 1001, dtype, 0},   // F odd: scalar path, stride steps that carry into the next row
             {2048, 2056, dtype, 0},  // vectorised, 257 (bf16) or 514 (fp32) vectors a row: carries
             {7, 8192, dtype, 1},     // F fits vectors but the data is one element off: scalar path
             {1, 3, dtype, 0}}) {     // fewer positions than a warp
      CheckSwigluKernels(c, 40);
    }
  }
}

CATCH_TEST_CASE("CUDA Swiglu forward and backward through autograd match the CPU") {
  CATCH_REQUIRE(torch::cuda::is_available());
  torch::manual_seed(41);
  for (torch::ScalarType dtype : {torch::kFloat, torch::kBFloat16}) {
    CATCH_INFO(c10::toString(dtype));
    // A transposed (non-contiguous) input of [2, 33, 2F], F = 1024, as well as the plain layout.
    const torch::Tensor base = (3 * torch::randn({2, 2 * 1024, 33})).to(dtype).transpose(1, 2);
    for (const torch::Tensor& x0 : {base, base.contiguous()}) {
      const torch::Tensor gy = torch::randn({2, 33, 1024}).to(dtype);
      torch::Tensor x = x0.to(torch::kCUDA).requires_grad_(true);
      torch::Tensor y = tessera::kernels::Swiglu(x);
      y.backward(gy.to(torch::kCUDA));
      torch::Tensor x_cpu = x0.clone().requires_grad_(true);
      torch::Tensor y_cpu = tessera::kernels::Swiglu(x_cpu);
      y_cpu.backward(gy);
      CATCH_CHECK(y.scalar_type() == dtype);
      CATCH_CHECK(x.grad().scalar_type() == dtype);
      CATCH_CHECK(x.grad().sizes() == x0.sizes());
      // fp32: both sides within ~1e-6 of the exact values (see above): 1e-5. bf16: the CPU rounds
      // to bf16 up to twice more than the kernel (silu(g), then the product; dy * u, then
      // silu_backward), so the two differ by up to 3 roundings of 2^-8: 2^-6 holds them.
      const double rtol = dtype == torch::kBFloat16 ? 1.0 / 64 : 1e-5;
      const std::string y_err = Compare(y, y_cpu, rtol, 1e-5);
      CATCH_CHECK(y_err == "");
      const std::string grad_err = Compare(x.grad(), x_cpu.grad(), rtol, 1e-5);
      CATCH_CHECK(grad_err == "");
    }
  }
}
