// Shared by the trainer tests that run in one process (trainer_test.cc, sample_printer_test.cc,
// flat_adamw_test.cc): a fresh scratch directory, the grid of a plain process, a Megatron-format
// corpus of one document, configs that fail the test when invalid, and the tiny Llama these tests
// train.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/indexed_dataset.h"
#include "parallel/process_grid.h"
#include "tests/catch_compat.h"

namespace tessera::trainer_testing {

// An empty directory `name` in tessera_<suite>_<pid> under the system's temporary directory.
inline std::filesystem::path TempDir(const std::string& suite, const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("tessera_" + suite + "_" + std::to_string(::getpid())) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A world of one: the same grid the CLI builds for a plain process (no signal handlers: the test
// runner keeps its own).
inline parallel::ProcessGrid& LocalGrid() {
  static std::unique_ptr<parallel::ProcessGrid> grid = [] {
    parallel::GridOptions options;
    options.install_signal_handlers = false;
    auto g = parallel::ProcessGrid::Create(parallel::LaunchInfo{}, options);
    if (!g.ok()) CATCH_FAIL(std::string(g.status().message()));
    return *std::move(g);
  }();
  return *grid;
}

// Writes one Megatron-format document of `tokens` (uint16 ids) at `prefix`.
inline void WriteCorpus(const std::string& prefix, const std::vector<int32_t>& tokens) {
  auto writer = data::IndexedDatasetWriter::Create(prefix, data::TokenDType::kUint16);
  CATCH_REQUIRE(writer.ok());
  CATCH_REQUIRE((*writer)->AddDocument(tokens).ok());
  CATCH_REQUIRE((*writer)->Finish().ok());
}

// The config of `file` (the defaults when empty) with `overrides` applied in order; an invalid
// one fails the test with its message.
inline Config ParseConfig(const std::string& file, const std::vector<std::string>& overrides) {
  auto config = file.empty() ? ConfigFromOverrides(overrides) : LoadConfig(file, overrides);
  if (!config.ok()) CATCH_FAIL(std::string(config.status().message()));
  return *config;
}

// The tiny Llama these tests train: 2 layers of width 64 (4 heads, 2 of them key/value), an MLP of
// 128, 16-token sequences, learning rate 0.01, no evaluation. `more` adds the rest (vocabulary,
// batch, steps, data, run directory) and may override any of these: a later override wins.
inline Config TinyConfig(const std::vector<std::string>& more) {
  std::vector<std::string> overrides = {"model.dim=64",       "model.n_layers=2",  "model.n_heads=4",
                                        "model.n_kv_heads=2", "model.ffn_dim=128", "train.seq_len=16",
                                        "train.lr=0.01",      "train.eval_every=0"};
  overrides.insert(overrides.end(), more.begin(), more.end());
  return ParseConfig("", overrides);
}

}  // namespace tessera::trainer_testing
