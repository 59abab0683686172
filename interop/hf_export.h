// Exports a Tessera checkpoint as a Hugging Face LlamaForCausalLM directory (`tessera
// export-hf`): config.json, model.safetensors or model-0000k-of-0000n.safetensors + index, the
// tokenizer file. Tensors are read whole from the checkpoint, whatever layout wrote it, one at a time, so
// memory stays at one tensor. docs/checkpoints.md has the name mapping.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/manifest.h"

namespace tessera::checkpoint {

struct HfExportOptions {
  std::string checkpoint;  // a step directory, or a checkpoint directory (its newest valid step)
  std::string out_dir;
  DType dtype = DType::kFloat32;  // kFloat32, kBFloat16 or kFloat16 (round to nearest even)
  uint64_t max_shard_bytes = 5'000'000'000;
  std::string tokenizer = {};  // a file to copy into out_dir ("" : the checkpoint's, if it has one)
};

// The files written, relative to out_dir.
absl::StatusOr<std::vector<std::string>> ExportHf(const HfExportOptions& options);

// "5GB" = 5e9 bytes (KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: of 1024; "123" or "123B"
// bytes), as transformers' max_shard_size.
absl::StatusOr<uint64_t> ParseByteSize(const std::string& text);

}  // namespace tessera::checkpoint
