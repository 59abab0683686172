// Tests of trainer/sample_printer: a run with train.sample_every prints its samples and trains
// bit for bit as the same run without it (losses and gradient norms of every step), and the
// cases where sampling cannot run are said or refused with the key named.
#include "trainer/sample_printer.h"

#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "config/config.h"
#include "tests/catch_compat.h"
#include "tests/trainer/trainer_test_util.h"
#include "trainer/trainer.h"

namespace fs = std::filesystem;
using tessera::trainer_testing::LocalGrid;

namespace {

fs::path TempDir(const std::string& name) { return tessera::trainer_testing::TempDir("sample", name); }

// A byte-level rank file: the 256 single bytes (the tokenizer adds <|endoftext|> = 256).
std::string WriteByteTokenizer(const fs::path& dir) {
  const std::string path = (dir / "bytes.tiktoken").string();
  std::ofstream out(path);
  for (int b = 0; b < 256; ++b)
    out << absl::Base64Escape(std::string(1, static_cast<char>(b))) << " " << b << "\n";
  return path;
}

// A corpus of one document of byte ids (a repeated sentence, so the model has something to learn).
std::string WriteCorpus(const fs::path& dir) {
  const std::string prefix = (dir / "text").string();
  std::vector<int32_t> ids;
  for (int i = 0; i < 8; ++i) {
    for (unsigned char c : std::string("The cat sat on the mat. ")) ids.push_back(c);
  }
  tessera::trainer_testing::WriteCorpus(prefix, ids);
  return prefix;
}

// The tiny model on that corpus for 10 steps of 4 sequences; `more` overrides.
tessera::Config TinyConfig(const fs::path& dir, const std::vector<std::string>& more) {
  std::vector<std::string> overrides = {"model.vocab_size=320",
                                        "train.micro_batch=2",
                                        "train.global_batch=4",
                                        "train.steps=10",
                                        "train.warmup_steps=2",
                                        "train.log_every=5",
                                        "checkpoint.at_end=false",
                                        "data.train=" + WriteCorpus(dir),
                                        "train.run_dir=" + (dir / "run").string()};
  overrides.insert(overrides.end(), more.begin(), more.end());
  return tessera::trainer_testing::TinyConfig(overrides);
}

// Runs `config` with stderr captured; returns the history and the captured text.
std::vector<tessera::StepMetrics> RunCapturing(const tessera::Config& config, const fs::path& log,
                                               std::string* captured) {
  std::fflush(stderr);
  const int saved = ::dup(2);
  FILE* file = std::fopen(log.c_str(), "w");
  ::dup2(::fileno(file), 2);
  auto trainer = tessera::Trainer::Create(config, LocalGrid());
  const bool ran = trainer.ok() && (*trainer)->Run().ok();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::fclose(file);
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  *captured = text.str();
  CATCH_INFO(*captured);
  CATCH_REQUIRE(ran);
  return (*trainer)->history();
}

}  // namespace

CATCH_TEST_CASE("sampling during training prints samples and changes no loss") {
  const fs::path dir = TempDir("same_losses");
  const std::string tokenizer = WriteByteTokenizer(dir);
  std::string quiet_log, sampled_log;
  const auto quiet =
      RunCapturing(TinyConfig(dir, {"data.tokenizer=" + tokenizer}), dir / "quiet.log", &quiet_log);
  const auto sampled = RunCapturing(TinyConfig(dir, {"data.tokenizer=" + tokenizer, "train.sample_every=3",
                                                     "train.sample_prompt=The cat", "train.sample_tokens=8"}),
                                    dir / "sampled.log", &sampled_log);
  // Steps 3, 6, 9 and the last, 10, sample; the quiet run prints none.
  for (const char* step :
       {"sample at step 3: The cat|", "sample at step 6: ", "sample at step 9: ", "sample at step 10: "}) {
    CATCH_CHECK(sampled_log.find(step) != std::string::npos);
  }
  CATCH_CHECK(quiet_log.find("sample at step") == std::string::npos);
  // Bit for bit: sampling reads the weights only, draws no random numbers, records no graph.
  CATCH_REQUIRE(quiet.size() == 10);
  CATCH_REQUIRE(sampled.size() == 10);
  for (size_t i = 0; i < quiet.size(); ++i) {
    CATCH_INFO("step " << i + 1);
    CATCH_CHECK(std::memcmp(&quiet[i].loss, &sampled[i].loss, sizeof(double)) == 0);
    CATCH_CHECK(std::memcmp(&quiet[i].grad_norm, &sampled[i].grad_norm, sizeof(double)) == 0);
  }
  CATCH_CHECK(sampled.back().loss < sampled.front().loss);  // it trained
}

CATCH_TEST_CASE("without data.tokenizer sampling is off and says why, and a bad tokenizer is an error") {
  const fs::path dir = TempDir("no_tokenizer");
  std::string log;
  RunCapturing(TinyConfig(dir, {"train.sample_every=5", "train.steps=3"}), dir / "run.log", &log);
  CATCH_CHECK(log.find("data.tokenizer is not set") != std::string::npos);
  CATCH_CHECK(log.find("sample at step") == std::string::npos);

  auto missing = tessera::SamplePrinter::Create(
      TinyConfig(dir, {"train.sample_every=5", "data.tokenizer=" + (dir / "absent.tiktoken").string()}),
      /*is_logger=*/true, /*whole_model=*/true, "");
  CATCH_REQUIRE(!missing.ok());
  CATCH_CHECK(std::string(missing.status().message()).find("data.tokenizer") != std::string::npos);

  auto small = tessera::SamplePrinter::Create(TinyConfig(dir, {"train.sample_every=5", "model.vocab_size=200",
                                                               "data.tokenizer=" + WriteByteTokenizer(dir)}),
                                              /*is_logger=*/true, /*whole_model=*/true, "");
  CATCH_REQUIRE(!small.ok());
  CATCH_CHECK(std::string(small.status().message()).find("model.vocab_size = 200") != std::string::npos);
}
