// Tests of the fused residual add + RMSNorm CUDA kernels (kernels/cuda/add_rms_norm_kernel.cu):
// called directly into NaN-filled outputs on the vectorised and scalar paths, every output element
// against kernels::AddRmsNormReference in fp64 and nothing written outside the outputs; then
// kernels::AddRmsNorm through autograd against the CPU path, and the cases left to ATen. Needs a
// CUDA device (label gpu).
#include "kernels/add_rms_norm.h"

#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cuda/add_rms_norm_kernel.h"
#include "kernels/cuda/rms_norm_kernel.h"
#include "kernels/cuda_launch.h"
#include "tests/catch_compat.h"

namespace {

namespace kc = ::tessera::kernels::cuda;
using tessera::kernels::AddRmsNorm;
using tessera::kernels::AddRmsNormOutput;
using tessera::kernels::AddRmsNormReference;
using tessera::kernels::ToKernelDtype;

constexpr double kEps = 1e-5;
constexpr int64_t kTail = 8;  // NaN elements after each output

// |actual - expected| <= rtol * |expected| + atol_rel * max|expected|, elementwise; "" or the
// worst element.
std::string Compare(const torch::Tensor& actual, const torch::Tensor& expected, double rtol,
                    double atol_rel) {
  const torch::Tensor a = actual.detach().to(torch::kCPU, torch::kDouble);
  const torch::Tensor e = expected.detach().to(torch::kCPU, torch::kDouble);
  if (a.sizes() != e.sizes()) return "shape mismatch";
  const double scale = e.abs().max().item<double>();
  const torch::Tensor excess = (a - e).abs() - (rtol * e.abs() + atol_rel * scale);
  if (excess.max().item<double>() <= 0) return "";
  const int64_t i = excess.flatten().argmax().item<int64_t>();
  std::ostringstream out;
  out << "element " << i << ": got " << a.flatten()[i].item<double>() << ", expected "
      << e.flatten()[i].item<double>() << " (max |expected| " << scale << ")";
  return out.str();
}

// A NaN-filled CUDA buffer of guard + n + kTail elements and the view of its n elements after
// the first `guard` as `shape`: guard = 1 starts the data off a 16-byte boundary.
struct Poisoned {
  torch::Tensor buffer, view;
  int64_t guard;
};

Poisoned PoisonedBuffer(std::vector<int64_t> shape, torch::ScalarType dtype, int64_t guard) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const auto options = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
  torch::Tensor buffer = torch::full({guard + n + kTail}, std::numeric_limits<float>::quiet_NaN(), options);
  return {buffer, buffer.narrow(0, guard, n).view(shape), guard};
}

// Every element of the view written (finite inputs give finite outputs), none outside it.
bool WrittenExactly(const Poisoned& p) {
  const int64_t n = p.view.numel();
  return !p.view.isnan().any().item<bool>() && p.buffer.narrow(0, 0, p.guard).isnan().all().item<bool>() &&
         p.buffer.narrow(0, p.guard + n, kTail).isnan().all().item<bool>();
}

struct KernelCase {
  int64_t rows, dim;
  torch::ScalarType delta, out;
  int64_t guard;  // 0: aligned (vectorised when dim % 8 == 0); 1: one element off (scalar path)
};

void CheckKernels(const KernelCase& c, uint64_t seed) {
  CATCH_INFO("rows " << c.rows << ", dim " << c.dim << ", delta " << c.delta << ", out " << c.out
                     << ", guard " << c.guard);
  torch::manual_seed(static_cast<int64_t>(seed));
  const std::vector<int64_t> shape = {c.rows, c.dim};
  Poisoned h = PoisonedBuffer(shape, torch::kFloat, c.guard);
  Poisoned delta = PoisonedBuffer(shape, c.delta, c.guard);
  Poisoned gy = PoisonedBuffer(shape, c.out, c.guard);
  Poisoned gs = PoisonedBuffer(shape, torch::kFloat, c.guard);
  h.view.copy_(torch::randn(shape) * torch::exp(torch::randn({c.rows, 1})));  // rows of different scales
  delta.view.copy_(0.5 * torch::randn(shape));
  gy.view.copy_(torch::randn(shape));
  gs.view.copy_(torch::randn(shape));
  const torch::Tensor w = (torch::rand({c.dim}) + 0.5).cuda();
  Poisoned sum = PoisonedBuffer(shape, torch::kFloat, c.guard);
  Poisoned y = PoisonedBuffer(shape, c.out, c.guard);
  Poisoned inv = PoisonedBuffer({c.rows}, torch::kFloat, c.guard);
  Poisoned gh = PoisonedBuffer(shape, torch::kFloat, c.guard);
  Poisoned gd = PoisonedBuffer(shape, c.delta, c.guard);
  Poisoned gw = PoisonedBuffer({c.dim}, torch::kFloat, c.guard);
  const int64_t ws_elements = kc::RmsNormBackwardWorkspaceElements(c.rows, c.dim);
  torch::Tensor workspace = torch::empty({ws_elements}, w.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  CATCH_REQUIRE(kc::AddRmsNormForward(h.view.data_ptr<float>(), delta.view.data_ptr(), ToKernelDtype(c.delta),
                                      w.data_ptr<float>(), sum.view.data_ptr<float>(), y.view.data_ptr(),
                                      ToKernelDtype(c.out), inv.view.data_ptr<float>(), c.rows, c.dim, kEps,
                                      stream) == cudaSuccess);
  CATCH_REQUIRE(kc::AddRmsNormBackward(gy.view.data_ptr(), ToKernelDtype(c.out), gs.view.data_ptr<float>(),
                                       sum.view.data_ptr<float>(), w.data_ptr<float>(),
                                       inv.view.data_ptr<float>(), gh.view.data_ptr<float>(),
                                       gd.view.data_ptr(), ToKernelDtype(c.delta), gw.view.data_ptr<float>(),
                                       workspace.data_ptr<float>(), ws_elements, c.rows, c.dim,
                                       stream) == cudaSuccess);
  for (const Poisoned* p : {&sum, &y, &inv, &gh, &gd, &gw}) CATCH_CHECK(WrittenExactly(*p));

  // fp64 on the stored values.
  torch::Tensor h64 = h.view.to(torch::kCPU, torch::kDouble).requires_grad_();
  torch::Tensor d64 = delta.view.to(torch::kCPU, torch::kDouble).requires_grad_();
  torch::Tensor w64 = w.to(torch::kCPU, torch::kDouble).requires_grad_();
  const AddRmsNormOutput ref = AddRmsNormReference(h64, d64, w64, kEps);
  auto g = torch::autograd::grad(
      {ref.sum, ref.normed}, {h64, d64, w64},
      {gs.view.to(torch::kCPU, torch::kDouble), gy.view.to(torch::kCPU, torch::kDouble)});
  // Tolerances. The sum is one fp32 rounding (2^-24). fp32 results: sums of up to 16384 products
  // per row (per thread, then a tree) and rsqrtf (2 ulp) give ~1e-6 relative: 1e-5. grad_h
  // subtracts two terms of the row's scale: an absolute 1e-5 of the largest value on top. grad_w
  // sums up to 600 rows in fp32 over blocks: 1e-4. A bf16 output is one round-to-nearest of the
  // fp32 result (2^-8 relative): 2^-7.
  const double out_rtol = c.out == torch::kBFloat16 ? 1.0 / 128 : 1e-5;
  const double delta_rtol = c.delta == torch::kBFloat16 ? 1.0 / 128 : 1e-5;
  const torch::Tensor inv_ref = torch::rsqrt(ref.sum.detach().pow(2).mean(-1) + kEps);
  CATCH_CHECK(Compare(sum.view, ref.sum, 1e-7, 0) == "");
  CATCH_CHECK(Compare(inv.view, inv_ref, 1e-5, 0) == "");
  CATCH_CHECK(Compare(y.view, ref.normed, out_rtol, 1e-6) == "");
  CATCH_CHECK(Compare(gh.view, g[0], 1e-4, 1e-5) == "");
  CATCH_CHECK(Compare(gd.view, g[1], std::max(delta_rtol, 1e-4), 1e-5) == "");
  CATCH_CHECK(Compare(gw.view, g[2], 1e-4, 1e-5) == "");
}

}  // namespace

CATCH_TEST_CASE("CUDA add + RMSNorm kernels write every element and match the fp64 reference") {
  CATCH_REQUIRE(torch::cuda::is_available());
  for (const KernelCase& c : std::vector<KernelCase>{
           {33, 2048, torch::kBFloat16, torch::kBFloat16, 0},  // the bf16 model: vectorised
           {33, 2048, torch::kFloat, torch::kFloat, 0},        // the fp32 model
           {33, 2048, torch::kBFloat16, torch::kBFloat16, 1},  // one element off 16 bytes: scalar path
           {7, 100, torch::kFloat, torch::kBFloat16, 0},       // dim % 8 != 0: scalar path
           {3, 16384, torch::kBFloat16, torch::kFloat, 0},  // 64 KB of partial grad_w: opt-in shared memory
           {600, 256, torch::kFloat, torch::kBFloat16, 0},  // more rows than backward blocks on small GPUs
           {1, 8, torch::kBFloat16, torch::kFloat, 0}}) {   // one row, one vector
    CheckKernels(c, 50);
  }
}

CATCH_TEST_CASE("CUDA AddRmsNorm through autograd matches the CPU path") {
  CATCH_REQUIRE(torch::cuda::is_available());
  torch::manual_seed(51);
  for (torch::ScalarType low : {torch::kFloat, torch::kBFloat16}) {
    CATCH_INFO("delta and output " << low);
    const torch::Tensor h0 = torch::randn({2, 65, 512});
    const torch::Tensor d0 = (0.5 * torch::randn({2, 65, 512})).to(low);
    const torch::Tensor w0 = torch::rand({512}) + 0.5;
    const torch::Tensor gs = torch::randn({2, 65, 512});
    const torch::Tensor gy = torch::randn({2, 65, 512}).to(low);
    auto run = [&](torch::Device device) {
      torch::Tensor h = h0.to(device).requires_grad_();
      torch::Tensor d = d0.to(device).requires_grad_();
      torch::Tensor w = w0.to(device).requires_grad_();
      const AddRmsNormOutput out = AddRmsNorm(h, d, w, kEps, low);
      auto grads = torch::autograd::grad({out.sum, out.normed}, {h, d, w}, {gs.to(device), gy.to(device)});
      return std::vector<torch::Tensor>{out.sum, out.normed, grads[0], grads[1], grads[2]};
    };
    const auto cuda = run(torch::kCUDA);
    const auto cpu = run(torch::kCPU);
    CATCH_CHECK(cuda[0].grad_fn()->name().find("AddRmsNormCudaFunction") != std::string::npos);
    CATCH_CHECK(cuda[1].scalar_type() == low);
    CATCH_CHECK(cuda[3].scalar_type() == low);
    CATCH_CHECK(cuda[4].scalar_type() == torch::kFloat);
    // Both within ~1e-6 of exact in fp32 (see above): 1e-5, and 1e-5 of the largest value for the
    // cancelling grad_h. bf16: each side rounds once to bf16 (2^-8), possibly to neighbouring
    // values: 2^-7. The sum is the same fp32 addition on both.
    const double rtol = low == torch::kBFloat16 ? 1.0 / 128 : 1e-5;
    CATCH_CHECK(torch::equal(cuda[0].cpu(), cpu[0].detach()));
    CATCH_CHECK(Compare(cuda[1], cpu[1], rtol, 1e-6) == "");
    CATCH_CHECK(Compare(cuda[2], cpu[2], 1e-5, 1e-5) == "");
    CATCH_CHECK(Compare(cuda[3], cpu[3], rtol, 1e-5) == "");
    CATCH_CHECK(Compare(cuda[4], cpu[4], 1e-4, 1e-5) == "");
  }
}

CATCH_TEST_CASE("CUDA AddRmsNorm's weight gradient is deterministic; fp64 is left to ATen") {
  CATCH_REQUIRE(torch::cuda::is_available());
  torch::manual_seed(52);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const torch::Tensor h = torch::randn({4096, 1024}, cuda);
  const torch::Tensor d = torch::randn({4096, 1024}, cuda).to(torch::kBFloat16);
  torch::Tensor w = (torch::rand({1024}, cuda) + 0.5).requires_grad_();
  const torch::Tensor gy = torch::randn({4096, 1024}, cuda).to(torch::kBFloat16);
  auto grad_w = [&] {
    return torch::autograd::grad({AddRmsNorm(h, d, w, kEps, torch::kBFloat16).normed}, {w}, {gy})[0];
  };
  // Partial sums are added in a fixed order (no atomics): bitwise equal on every run.
  CATCH_CHECK(torch::equal(grad_w(), grad_w()));

  const auto f64 = cuda.dtype(torch::kDouble);
  const torch::Tensor h64 = torch::randn({3, 16}, f64).requires_grad_();
  const torch::Tensor d64 = torch::randn({3, 16}, f64);
  const AddRmsNormOutput out = AddRmsNorm(h64, d64, torch::ones({16}, f64), kEps, torch::kDouble);
  CATCH_CHECK(out.normed.scalar_type() == torch::kDouble);
  CATCH_CHECK(out.sum.grad_fn()->name().find("AddRmsNormCudaFunction") == std::string::npos);
  // fp64 both sides: agreement to rounding.
  CATCH_CHECK(Compare(out.normed, AddRmsNormReference(h64.detach(), d64, torch::ones({16}, f64), kEps).normed,
                      1e-12, 1e-12) == "");
}
