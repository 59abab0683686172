// Test helper for tensorboard_test.py: writes TensorBoard event files with Tessera's writer so
// that TensorBoard's own reader can check them.
//   tensorboard_driver scalars DIR [FILENAME_SUFFIX] < SPEC
//       SPEC: one scalar per line, tab-separated: tag, step, value, wall_time (values as
//       Python's repr writes floats, also nan/inf/-inf). Each becomes one AddScalar call.
//   tensorboard_driver run DIR
//       a small synthetic run: DIR/metrics.jsonl (MetricsJsonLine) and events (WriteStepScalars)
//       for the same StepMetrics records, as the trainer writes them.
// Exit code 0 on success, 1 on an error (printed), 2 on bad usage.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "trainer/metrics.h"
#include "trainer/metrics_tensorboard.h"
#include "trainer/tensorboard/tensorboard_writer.h"

namespace {

using tessera::tensorboard::TensorBoardWriter;
using tessera::tensorboard::TensorBoardWriterOptions;

int Error(const std::string& message) {
  std::fprintf(stderr, "tensorboard_driver: %s\n", message.c_str());
  return 1;
}

int Scalars(const std::string& dir, const std::string& suffix) {
  TensorBoardWriterOptions options;
  options.filename_suffix = suffix;
  options.flush_bytes = 4096;  // several automatic flushes in a test of a few hundred scalars
  auto writer = TensorBoardWriter::Open(dir, options);
  if (!writer.ok()) return Error(std::string(writer.status().message()));
  std::string line;
  int line_number = 0;
  while (std::getline(std::cin, line)) {
    ++line_number;
    std::vector<std::string> fields = absl::StrSplit(line, '\t');
    if (fields.size() != 4)
      return Error("stdin line " + std::to_string(line_number) + ": expected 4 tab-separated fields");
    char* end = nullptr;
    const long long step = std::strtoll(fields[1].c_str(), &end, 10);
    const double value = std::strtod(fields[2].c_str(), &end);
    const double wall_time = std::strtod(fields[3].c_str(), &end);
    if (absl::Status s = (*writer)->AddScalar(fields[0], step, value, wall_time); !s.ok()) {
      return Error(std::string(s.message()));
    }
  }
  if (absl::Status s = (*writer)->Close(); !s.ok()) return Error(std::string(s.message()));
  std::printf("%s\n", (*writer)->path().c_str());
  return 0;
}

// 20 steps with every field set, eval every 5 steps, one non-finite gradient norm (a skipped
// step) and zeros (mfu on CPU) that must still appear in both logs.
int Run(const std::string& dir) {
  auto writer = TensorBoardWriter::Open(dir);
  if (!writer.ok()) return Error(std::string(writer.status().message()));
  std::ofstream jsonl(dir + "/metrics.jsonl", std::ios::trunc);
  if (!jsonl) return Error("cannot write " + dir + "/metrics.jsonl");
  int64_t skipped = 0;
  for (int64_t step = 1; step <= 20; ++step) {
    tessera::StepMetrics m;
    m.step = step;
    m.total_steps = 20;
    m.loss = 10.0 / (1.0 + 0.1 * static_cast<double>(step)) + 1e-7 * static_cast<double>(step);
    m.lr = 3e-4 * std::min<double>(1.0, static_cast<double>(step) / 5.0);
    m.grad_norm = step == 13 ? std::numeric_limits<double>::quiet_NaN() : 1.0 / static_cast<double>(step);
    if (step == 13) ++skipped;
    m.tokens_per_s = 123456.789 + static_cast<double>(step);
    m.mfu = 0;
    m.step_time_s = 0.25 + 0.001 * static_cast<double>(step);
    m.memory_mb = 1024.5;
    m.data_wait_s = step == 1 ? 0.5 : 0.0;
    m.skipped_steps = skipped;
    if (step % 5 == 0) m.eval_loss = m.loss + 0.125;
    jsonl << tessera::MetricsJsonLine(m);
    if (absl::Status s = tessera::WriteStepScalars(**writer, m); !s.ok())
      return Error(std::string(s.message()));
  }
  jsonl.close();
  if (!jsonl) return Error("writing " + dir + "/metrics.jsonl failed");
  if (absl::Status s = (*writer)->Close(); !s.ok()) return Error(std::string(s.message()));
  std::printf("%s\n", (*writer)->path().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "scalars" && (argc == 3 || argc == 4)) return Scalars(argv[2], argc == 4 ? argv[3] : "");
  if (mode == "run" && argc == 3) return Run(argv[2]);
  std::fprintf(stderr,
               "usage: tensorboard_driver scalars DIR [SUFFIX] < SPEC | tensorboard_driver run DIR\n");
  return 2;
}
