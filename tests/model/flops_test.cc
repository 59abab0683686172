// Tests of model/flops: the peak probe's shapes (the model's own products among them, capped in
// size, sharded under tensor parallelism) and that the measured peak is the best of them, named.
#include "model/flops.h"

#include <torch/torch.h>

#include <string>

#include "tests/catch_compat.h"

using tessera::MatmulShape;
using tessera::ModelConfig;

namespace {

ModelConfig Llama(int64_t dim, int64_t heads, int64_t kv, int64_t ffn, int64_t vocab) {
  ModelConfig c;
  c.dim = dim;
  c.n_heads = heads;
  c.n_kv_heads = kv;
  c.ffn_dim = ffn;
  c.vocab_size = vocab;
  return c;
}

const MatmulShape* Named(const std::vector<MatmulShape>& shapes, const std::string& prefix) {
  for (const MatmulShape& s : shapes) {
    if (s.what.rfind(prefix, 0) == 0) return &s;
  }
  return nullptr;
}

}  // namespace

CATCH_TEST_CASE("peak probe shapes: three squares and the model's own products, sharded by tp") {
  const ModelConfig m = Llama(256, 8, 2, 768, 4096);  // head_dim 32
  const auto shapes = tessera::PeakProbeShapes(m, 512, 1);
  CATCH_REQUIRE(shapes.size() == 7);
  const MatmulShape* qkv = Named(shapes, "the model's q|k|v");
  CATCH_REQUIRE(qkv != nullptr);
  CATCH_CHECK((qkv->m == 512 && qkv->k == 256 && qkv->n == (8 + 2 * 2) * 32));
  const MatmulShape* down = Named(shapes, "the model's feed-forward down");
  CATCH_REQUIRE(down != nullptr);
  CATCH_CHECK((down->k == 768 && down->n == 256));
  const auto tp2 = tessera::PeakProbeShapes(m, 512, 2);
  CATCH_CHECK(Named(tp2, "the model's feed-forward gate|up")->n == 768);  // 2 x 768 / 2
  CATCH_CHECK(Named(tp2, "the model's output head")->n == 2048);
  // A large model's products are cut in rows to stay short: <= ~8 GFLOP each.
  const auto big = tessera::PeakProbeShapes(Llama(8192, 64, 8, 28672, 128256), 8192, 1);
  for (const MatmulShape& s : big) {
    CATCH_CHECK(2.0 * s.m * s.k * s.n <= 8.1e9 + 2.0 * s.k * s.n);
    CATCH_CHECK(s.m >= 1);
  }
}

CATCH_TEST_CASE("the measured CPU peak is the fastest shape's rate and names it") {
  // A tiny product runs far below the GEMM's peak (call overhead dominates), so with a 512^3
  // square beside it the square must win; the rate must be a plausible CPU figure.
  const std::vector<MatmulShape> shapes = {{4, 4, 4, "tiny 4x4x4"}, {512, 512, 512, "square 512"}};
  const tessera::PeakRate peak = tessera::MeasureCpuPeak(torch::kFloat, shapes);
  CATCH_CHECK(peak.tflops > 1e-3);
  CATCH_CHECK(peak.tflops < 100);
  CATCH_CHECK(peak.basis.find("best of 2 product shapes") != std::string::npos);
  CATCH_CHECK(peak.basis.find("set by square 512") != std::string::npos);
  const tessera::PeakRate cpu = tessera::PeakTflops(torch::Device(torch::kCPU), torch::kFloat, shapes);
  CATCH_CHECK(cpu.basis.rfind("measured:", 0) == 0);
  const tessera::PeakRate gpu = tessera::PeakTflops(torch::Device(torch::kCUDA, 0), torch::kBFloat16, shapes);
  CATCH_CHECK(gpu.basis.rfind("data sheet", 0) == 0);  // no CUDA here: an unnamed device
  CATCH_CHECK(gpu.basis.find("assumed") != std::string::npos);
}

CATCH_TEST_CASE("the data-sheet peak is found by the device's name: bf16, TF32 and plain fp32") {
  // Dense figures of NVIDIA's data sheets (TFLOP/s; the sheets print the 2:4-sparse ones twice
  // as large), as the CUDA driver names the devices.
  struct Case {
    const char* name;
    double bf16, tf32, fp32;
  };
  const Case cases[] = {
      {"NVIDIA H100 80GB HBM3", 989.4, 494.7, 66.9}, {"NVIDIA H100 PCIe", 756.0, 378.0, 51.2},
      {"NVIDIA H100 NVL", 835.5, 417.5, 60.0},       {"NVIDIA H200", 989.4, 494.7, 66.9},
      {"NVIDIA A100-SXM4-80GB", 312.0, 156.0, 19.5}, {"NVIDIA A100 80GB PCIe", 312.0, 156.0, 19.5},
      {"NVIDIA L40S", 362.05, 183.0, 91.6},          {"NVIDIA B200", 2250.0, 1100.0, 75.0},
  };
  for (const Case& c : cases) {
    CATCH_INFO(c.name);
    CATCH_CHECK(tessera::DataSheetPeak(c.name, torch::kBFloat16, true).tflops == c.bf16);
    CATCH_CHECK(tessera::DataSheetPeak(c.name, torch::kBFloat16, false).tflops == c.bf16);
    CATCH_CHECK(tessera::DataSheetPeak(c.name, torch::kFloat, true).tflops == c.tf32);
    CATCH_CHECK(tessera::DataSheetPeak(c.name, torch::kFloat, false).tflops == c.fp32);
    CATCH_CHECK(tessera::DataSheetPeak(c.name, torch::kFloat, true).basis.find("assumed") ==
                std::string::npos);
  }
  const tessera::PeakRate unknown = tessera::DataSheetPeak("Tesla T4", torch::kBFloat16, true);
  CATCH_CHECK(unknown.tflops == 989.4);
  CATCH_CHECK(unknown.basis.find("assumed for 'Tesla T4'") != std::string::npos);
}
