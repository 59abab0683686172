// Tests of train.cuda_graphs on CUDA: the default tiny config trained with the micro-step
// captured as a CUDA graph gives the eager run's losses, held-out losses and final parameters,
// within the eager run's own run-to-run spread; the graph was replayed the expected number of
// times; the steps that do not log still wait for the device at most once. In fp32, in bf16
// and with full recomputation (whose replay inside backward runs under the capture too). Needs
// a CUDA device (label gpu).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/host_sync.h"
#include "parallel/process_grid.h"
#include "tests/catch_compat.h"
#include "trainer/trainer.h"

namespace fs = std::filesystem;

namespace {

tessera::parallel::ProcessGrid& CudaGrid() {
  static std::unique_ptr<tessera::parallel::ProcessGrid> grid = [] {
    tessera::parallel::GridOptions options;
    options.install_signal_handlers = false;
    options.device = "cuda";
    auto g = tessera::parallel::ProcessGrid::Create(tessera::parallel::LaunchInfo{}, options);
    if (!g.ok()) CATCH_FAIL(std::string(g.status().message()));
    return *std::move(g);
  }();
  return *grid;
}

constexpr int kSteps = 10;

struct Run {
  std::vector<tessera::StepMetrics> history;
  std::vector<torch::Tensor> params;  // fp64 on the CPU
  int64_t replays = 0;
  bool graphs_on = false;
  std::vector<int64_t> syncs;  // host synchronisations of step i + 1
};

// kSteps steps of configs/tiny.yaml on the sample data (2 micro-batches of 8 per step),
// evaluating at steps 5 and 10.
Run Train(const std::string& precision, const std::string& recompute, const std::string& graphs, int id) {
  const std::string src = TESSERA_SOURCE_DIR;
  const char* env = std::getenv("TESSERA_SAMPLE_DATA");
  const std::string data = env ? env : src + "/.cache/sample_data";
  const fs::path dir = fs::temp_directory_path() / ("tessera_gpu_graph_" + std::to_string(::getpid())) /
                       (precision + "_" + recompute + "_" + graphs + "_" + std::to_string(id));
  fs::remove_all(dir);
  auto config = tessera::LoadConfig(
      src + "/configs/tiny.yaml",
      {"data.train=[{prefix: " + data + "/text, weight: 0.6}, {prefix: " + data + "/code, weight: 0.4}]",
       "data.val=" + data + "/val", "data.tokenizer=" + data + "/tokenizer.tiktoken", "train.device=cuda",
       "train.precision=" + precision, "model.recompute=" + recompute, "train.cuda_graphs=" + graphs,
       "train.steps=" + std::to_string(kSteps), "train.warmup_steps=3", "train.eval_every=5",
       "train.eval_batches=2", "train.log_every=5", "train.sample_every=0", "train.peak_tflops=1",
       "checkpoint.at_end=false", "train.allow_tf32=false", "train.run_dir=" + (dir / "run").string()});
  if (!config.ok()) CATCH_FAIL(std::string(config.status().message()));
  auto trainer = tessera::Trainer::Create(*config, CudaGrid());
  if (!trainer.ok()) CATCH_FAIL(std::string(trainer.status().message()));
  Run run;
  int64_t before = tessera::HostSyncCount();
  (*trainer)->set_step_end_hook([&](int64_t) {
    run.syncs.push_back(tessera::HostSyncCount() - before);
    before = tessera::HostSyncCount();
  });
  const absl::Status status = (*trainer)->Run();
  if (!status.ok()) CATCH_FAIL(std::string(status.message()));
  run.history = (*trainer)->history();
  for (const torch::Tensor& p : (*trainer)->model()->parameters()) {
    run.params.push_back(p.detach().to(torch::kCPU, torch::kDouble));
  }
  run.replays = (*trainer)->cuda_graph_replays();
  run.graphs_on = (*trainer)->cuda_graphs().on;
  return run;
}

// The largest relative difference of the losses (training and held-out), and the relative L2
// distance of all parameters.
struct Distance {
  double loss = 0, params = 0;
};
Distance Between(const Run& a, const Run& b) {
  Distance d;
  CATCH_REQUIRE(a.history.size() == b.history.size());
  for (size_t i = 0; i < a.history.size(); ++i) {
    d.loss = std::max(d.loss, std::abs(a.history[i].loss - b.history[i].loss) / std::abs(a.history[i].loss));
    if (a.history[i].eval_loss && b.history[i].eval_loss) {
      d.loss = std::max(d.loss, std::abs(*a.history[i].eval_loss - *b.history[i].eval_loss) /
                                    std::abs(*a.history[i].eval_loss));
    }
  }
  double diff = 0, norm = 0;
  for (size_t p = 0; p < a.params.size(); ++p) {
    diff += (a.params[p] - b.params[p]).pow(2).sum().item<double>();
    norm += a.params[p].pow(2).sum().item<double>();
  }
  d.params = std::sqrt(diff / norm);
  return d;
}

// Graphs against eager, beside eager against eager. The bound is the larger of a floor and 4x
// the eager runs' own spread: some CUDA backward kernels accumulate with atomics (the
// embedding's, attention's dq), so two eager runs may differ in their last bits and those bits
// grow over the steps; a replay runs the kernels the capture recorded, the eager run's, so it
// may differ by as much. The floors cover a last-bit difference the spread may not show (a
// GEMM algorithm picked for the capture stream's workspace): fp32 arithmetic (TF32 off) rounds
// at 6e-8 per operation and ten steps of training magnify a last-bit difference to ~1e-6 of the
// loss, so 1e-4 leaves margin; bf16 weights round at 2^-8, so one master weight that crosses a
// rounding boundary in one run and not the other moves the loss by ~1e-4, hence 2e-3. What a
// wrong capture does is far larger: a stale or missing micro-batch, a warm-up micro-step counted
// twice or a missing reduction changes the first captured step's loss by 1e-2 or more
// (different tokens, or a gradient off by a factor) and every parameter update after it.
void CheckGraphsMatchEager(const std::string& precision, const std::string& recompute) {
  const Run eager = Train(precision, recompute, "false", 0);
  const Run again = Train(precision, recompute, "false", 1);
  const Run graphed = Train(precision, recompute, "true", 2);
  CATCH_CHECK_FALSE(eager.graphs_on);
  CATCH_CHECK(eager.replays == 0);
  CATCH_CHECK(graphed.graphs_on);
  // 3 eager warm-up steps; step 4 runs micro-batch 0 eagerly, captures and replays micro-batch
  // 1; steps 5 to 10 replay both.
  CATCH_CHECK(graphed.replays == 1 + 2 * (kSteps - 4));
  const Distance spread = Between(eager, again), graph = Between(eager, graphed);
  const double floor = precision == "bf16" ? 2e-3 : 1e-4;
  CATCH_INFO("eager vs eager: loss " << spread.loss << ", params " << spread.params
                                     << "; graphs vs eager: loss " << graph.loss << ", params "
                                     << graph.params);
  CATCH_CHECK(graph.loss <= std::max(floor, 4 * spread.loss));
  CATCH_CHECK(graph.params <= std::max(floor, 4 * spread.params));
  // The captured steps keep the step free of host waits: at most one on a step that does not
  // log (steps 1, 5 and 10 log; 5 and 10 evaluate).
  CATCH_REQUIRE(graphed.syncs.size() == static_cast<size_t>(kSteps));
  for (int step : {2, 3, 4, 6, 7, 8, 9}) {
    CATCH_INFO("step " << step);
    CATCH_CHECK(graphed.syncs[step - 1] <= 1);
  }
  // And the run learns: the loss falls from its start near ln(4224) = 8.3.
  CATCH_CHECK(graphed.history.back().loss < graphed.history.front().loss - 0.5);
}

}  // namespace

CATCH_TEST_CASE("cuda graphs: fp32 training replays the micro-step and matches the eager run") {
  CATCH_REQUIRE(torch::cuda::is_available());
  CheckGraphsMatchEager("fp32", "none");
}

CATCH_TEST_CASE("cuda graphs: bf16 training replays the micro-step and matches the eager run") {
  CATCH_REQUIRE(torch::cuda::is_available());
  CheckGraphsMatchEager("bf16", "none");
}

CATCH_TEST_CASE("cuda graphs: full recomputation replays under the capture and matches the eager run") {
  CATCH_REQUIRE(torch::cuda::is_available());
  CheckGraphsMatchEager("fp32", "full");
}
