// Tests of trainer/trainer: a fixed batch is overfit to near-zero loss, the default config's
// loss falls well below its start on the sample corpus, the run directory holds the effective
// config and metrics, and bad data is reported before the model is built.
#include "trainer/trainer.h"

#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/file_util.h"
#include "tests/catch_compat.h"

namespace fs = std::filesystem;

namespace {

fs::path TempDir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("tessera_trainer_" + std::to_string(::getpid())) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string SampleCorpus() {
  const char* env = std::getenv("TESSERA_SAMPLE_CORPUS");
  return env ? env : std::string(TESSERA_SOURCE_DIR) + "/.cache/sample_corpus";
}

tessera::Config Parse(const std::string& file, const std::vector<std::string>& overrides) {
  auto config = file.empty() ? tessera::ConfigFromOverrides(overrides) : tessera::LoadConfig(file, overrides);
  if (!config.ok()) CATCH_FAIL(std::string(config.status().message()));
  return *config;
}

}  // namespace

namespace {

// Trains the tiny overfitting setup at `precision` and returns its history.
std::vector<tessera::StepMetrics> Overfit(const std::string& precision) {
  const fs::path dir = TempDir("overfit_" + precision);
  // 2 sequences of 16 tokens (+1 target) of arbitrary ids; sequential sampling over a stream
  // that holds exactly two windows feeds the same batch at every step.
  torch::manual_seed(0);
  auto ids = torch::randint(0, 60, {33}, torch::kInt16);
  std::ofstream(dir / "tokens.u16", std::ios::binary).write(static_cast<const char*>(ids.data_ptr()), 66);
  tessera::Config config = Parse("", {
      "model.dim=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.ffn_dim=128",
      "model.vocab_size=64", "train.seq_len=16", "train.micro_batch=2", "train.global_batch=2",
      "train.steps=120", "train.warmup_steps=5", "train.lr=0.01", "train.min_lr=0.001",
      "train.weight_decay=0", "train.eval_every=0", "train.log_every=20", "train.peak_tflops=1",
      "data.token_file=" + (dir / "tokens.u16").string(), "train.run_dir=" + (dir / "run").string(),
      "train.precision=" + precision});
  auto trainer = tessera::Trainer::Create(config);
  CATCH_REQUIRE(trainer.ok());
  CATCH_REQUIRE((*trainer)->Run().ok());
  return (*trainer)->history();
}

}  // namespace

CATCH_TEST_CASE("a fixed small batch is overfit to near-zero loss") {
  const auto history = Overfit("fp32");
  CATCH_REQUIRE(history.size() == 120);
  CATCH_CHECK(history.front().loss > 3.5);  // about ln(64) = 4.16 at random init
  CATCH_CHECK(history.back().loss < 0.05);
}

CATCH_TEST_CASE("bf16 mixed precision also overfits the fixed batch") {
  const auto history = Overfit("bf16");
  CATCH_REQUIRE(history.size() == 120);
  CATCH_CHECK(history.front().loss > 3.5);
  // bf16 rounding of activations limits how far the loss can go; 0.1 is still memorised.
  CATCH_CHECK(history.back().loss < 0.1);
}

CATCH_TEST_CASE("the default config's loss falls well below its start on the sample corpus") {
  const std::string corpus = SampleCorpus();
  CATCH_REQUIRE(tessera::PathExists(corpus + "/COMPLETE"));  // scripts/test.sh makes it
  const fs::path dir = TempDir("default");
  // The default config, shortened: 60 of its 300 steps, schedule compressed accordingly.
  tessera::Config config = Parse(std::string(TESSERA_SOURCE_DIR) + "/configs/tiny.yaml", {
      "data.train=" + corpus + "/train", "data.val=" + corpus + "/val", "train.steps=60",
      "train.eval_every=60", "train.eval_batches=4", "train.run_dir=" + (dir / "run").string()});
  auto trainer = tessera::Trainer::Create(config);
  CATCH_REQUIRE(trainer.ok());
  CATCH_REQUIRE((*trainer)->Run().ok());
  const auto& history = (*trainer)->history();
  // Bytes start near ln(vocab) = ln(512) = 6.2 nats; 60 steps of English and code reach ~2.5.
  // "Well below" = at least 2.5 nats lower, on training and on held-out data.
  CATCH_CHECK(history.front().loss > 5.0);
  CATCH_CHECK(history.back().loss < history.front().loss - 2.5);
  CATCH_REQUIRE(history.back().eval_loss.has_value());
  CATCH_CHECK(*history.back().eval_loss < history.front().loss - 2.5);

  // The run directory holds the effective config (loadable) and one JSON line per logged step.
  auto dumped = tessera::LoadConfig((dir / "run/config.yaml").string(), {});
  CATCH_REQUIRE(dumped.ok());
  CATCH_CHECK(dumped->train.steps == 60);
  std::ifstream metrics(dir / "run/metrics.jsonl");
  std::string line, last;
  int lines = 0;
  while (std::getline(metrics, line)) { last = line; ++lines; }
  CATCH_CHECK(lines == 7);  // step 1, every 10th, and the last (60, with eval)
  for (const char* key : {"\"step\": 60", "\"loss\": ", "\"lr\": ", "\"grad_norm\": ", "\"tokens_per_s\": ",
                          "\"mfu\": ", "\"eval_loss\": "}) {
    CATCH_CHECK(last.find(key) != std::string::npos);
  }
}

CATCH_TEST_CASE("bad data is reported before the model is built") {
  const fs::path dir = TempDir("bad");
  std::ofstream(dir / "doc.txt") << "some text that is long enough for a couple of short sequences";
  const std::string doc = (dir / "doc.txt").string(), run = "train.run_dir=" + (dir / "run").string();
  auto missing = tessera::Trainer::Create(Parse("", {"data.train=" + (dir / "nope/*.txt").string(), "train.eval_every=0", run}));
  CATCH_REQUIRE_FALSE(missing.ok());
  CATCH_CHECK(std::string(missing.status().message()) == "data.train: no file matches '" + (dir / "nope/*.txt").string() + "'");
  auto small_vocab = tessera::Trainer::Create(Parse("", {"data.train=" + doc, "train.eval_every=0", "model.vocab_size=200", "train.seq_len=8", run}));
  CATCH_REQUIRE_FALSE(small_vocab.ok());
  CATCH_CHECK(std::string(small_vocab.status().message()).find("model.vocab_size = 200 is smaller than the data's 257 token ids") != std::string::npos);
  auto too_short = tessera::Trainer::Create(Parse("", {"data.train=" + doc, "train.eval_every=0", "train.seq_len=4096", run}));
  CATCH_REQUIRE_FALSE(too_short.ok());
  CATCH_CHECK(std::string(too_short.status().message()).find("fewer than one sequence") != std::string::npos);
  std::ofstream(dir / "odd.u16", std::ios::binary) << "abc";
  auto odd = tessera::Trainer::Create(Parse("", {"data.token_file=" + (dir / "odd.u16").string(), "train.eval_every=0", run}));
  CATCH_REQUIRE_FALSE(odd.ok());
  CATCH_CHECK(std::string(odd.status().message()).find("has 3 bytes: expected an even number") != std::string::npos);
  if (!torch::cuda::is_available()) {
    auto cuda = tessera::Trainer::Create(Parse("", {"data.train=" + doc, "train.eval_every=0", "train.device=cuda", "train.seq_len=8", run}));
    CATCH_REQUIRE_FALSE(cuda.ok());
    CATCH_CHECK(std::string(cuda.status().message()).find("train.device = cuda, but no CUDA device") != std::string::npos);
  }
}
