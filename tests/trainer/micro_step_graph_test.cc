// Tests of trainer/micro_step_graph through the Trainer, on the CPU: with the CPU stand-in of
// the recorder (it replays by running the recorded micro-step again on the static buffers), a
// run whose micro-steps go through the captured-step path after the warm-up trains bit for bit
// as the eager run: the same losses, gradient norms and final parameters, in fp32, in bf16 and
// with full recomputation, over micro-batches that all differ. That checks what the CUDA path
// shares with it: each micro-batch's tokens reach the static buffers, the warm-up micro-step
// counts once, the losses sum as the executor sums them, and the reducer reduces every bucket
// after the replays without any hook having launched one. What it cannot check (the device
// replaying without the host's side effects) the GPU test does (tests/gpu/cuda_graph_test.cc).
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "data/indexed_dataset.h"
#include "tests/catch_compat.h"
#include "trainer/step_recorder.h"
#include "trainer/trainer.h"

namespace fs = std::filesystem;

namespace {

tessera::parallel::ProcessGrid& LocalGrid() {
  static std::unique_ptr<tessera::parallel::ProcessGrid> grid = [] {
    tessera::parallel::GridOptions options;
    options.install_signal_handlers = false;
    auto g = tessera::parallel::ProcessGrid::Create(tessera::parallel::LaunchInfo{}, options);
    if (!g.ok()) CATCH_FAIL(std::string(g.status().message()));
    return *std::move(g);
  }();
  return *grid;
}

// One document of random ids, long enough for 24 different windows of 16 + 1 tokens.
std::string Corpus() {
  static const std::string prefix = [] {
    const fs::path dir =
        fs::temp_directory_path() / ("tessera_micro_step_graph_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    torch::manual_seed(3);
    const torch::Tensor ids = torch::randint(0, 64, {24 * 16 + 1}, torch::kInt32);
    const std::string p = (dir / "random").string();
    auto writer = tessera::data::IndexedDatasetWriter::Create(p, tessera::data::TokenDType::kUint16);
    CATCH_REQUIRE(writer.ok());
    CATCH_REQUIRE((*writer)
                      ->AddDocument(std::vector<int32_t>(ids.data_ptr<int32_t>(),
                                                         ids.data_ptr<int32_t>() + ids.numel()))
                      .ok());
    CATCH_REQUIRE((*writer)->Finish().ok());
    return p;
  }();
  return prefix;
}

struct Run {
  std::vector<tessera::StepMetrics> history;
  std::vector<torch::Tensor> params;
  int64_t replays = 0;
};

// 8 steps of 4 micro-batches of one row each; `captured`: through the captured-step path.
Run Train(const std::string& precision, const std::string& recompute, bool captured) {
  const fs::path dir = fs::temp_directory_path() /
                       ("tessera_micro_step_graph_" + std::to_string(::getpid())) /
                       (precision + recompute + (captured ? "_captured" : "_eager"));
  auto config = tessera::ConfigFromOverrides({"model.dim=64",
                                              "model.n_layers=2",
                                              "model.n_heads=4",
                                              "model.n_kv_heads=2",
                                              "model.ffn_dim=128",
                                              "model.vocab_size=64",
                                              "model.recompute=" + recompute,
                                              "train.seq_len=16",
                                              "train.micro_batch=1",
                                              "train.global_batch=4",
                                              "train.steps=8",
                                              "train.warmup_steps=2",
                                              "train.lr=0.01",
                                              "train.eval_every=0",
                                              "train.log_every=3",
                                              "train.peak_tflops=1",
                                              "train.precision=" + precision,
                                              "checkpoint.at_end=false",
                                              "data.train=" + Corpus(),
                                              "data.shuffle=false",
                                              "train.run_dir=" + (dir / "run").string()});
  if (!config.ok()) CATCH_FAIL(std::string(config.status().message()));
  auto trainer = tessera::Trainer::Create(*config, LocalGrid());
  if (!trainer.ok()) CATCH_FAIL(std::string(trainer.status().message()));
  CATCH_CHECK_FALSE((*trainer)->cuda_graphs().on);  // the CPU: the policy says off
  if (captured) (*trainer)->UseStepRecorder(tessera::MakeRerunRecorder());
  const absl::Status status = (*trainer)->Run();
  if (!status.ok()) CATCH_FAIL(std::string(status.message()));
  Run run;
  run.history = (*trainer)->history();
  for (const torch::Tensor& p : (*trainer)->model()->parameters()) run.params.push_back(p.detach().clone());
  run.replays = (*trainer)->cuda_graph_replays();
  return run;
}

}  // namespace

CATCH_TEST_CASE("the captured micro-step's path trains bit for bit as the eager step (CPU stand-in)") {
  for (const auto& [precision, recompute] : std::vector<std::pair<std::string, std::string>>{
           {"fp32", "none"}, {"bf16", "none"}, {"fp32", "full"}, {"bf16", "selective"}}) {
    CATCH_INFO(precision << ", model.recompute " << recompute);
    const Run eager = Train(precision, recompute, false);
    const Run captured = Train(precision, recompute, true);
    CATCH_CHECK(eager.replays == 0);
    // 3 eager warm-up steps; the 4th runs micro-batch 0 eagerly and captures, then replays 3;
    // steps 5 to 8 replay 4 each.
    CATCH_CHECK(captured.replays == 3 + 4 * 4);
    CATCH_REQUIRE(eager.history.size() == 8);
    CATCH_REQUIRE(captured.history.size() == 8);
    for (size_t i = 0; i < 8; ++i) {
      CATCH_INFO("step " << i + 1 << ": loss " << eager.history[i].loss << " eager, "
                         << captured.history[i].loss << " captured");
      CATCH_CHECK(std::memcmp(&eager.history[i].loss, &captured.history[i].loss, sizeof(double)) == 0);
      CATCH_CHECK(std::memcmp(&eager.history[i].grad_norm, &captured.history[i].grad_norm, sizeof(double)) ==
                  0);
    }
    // Different micro-batches every step: a replay that read the previous tokens would differ.
    CATCH_CHECK(eager.history[4].loss != eager.history[5].loss);
    CATCH_REQUIRE(eager.params.size() == captured.params.size());
    for (size_t p = 0; p < eager.params.size(); ++p) {
      CATCH_INFO("parameter " << p);
      CATCH_CHECK(torch::equal(eager.params[p], captured.params[p]));
    }
  }
}
