// Imports a Hugging Face LlamaForCausalLM directory (`tessera import-hf`: config.json and
// safetensors weights, single file or sharded with an index) to a single-rank Tessera checkpoint at step 0,
// whose saved config holds the model shape (model.* keys) so a run can start from it. Weights
// become fp32 master weights; the original config.json (and a tokenizer file, if given) are
// stored as blobs ("hf/config.json", "tokenizer/NAME") so export-hf can restore token ids and
// the tokenizer.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::checkpoint {

struct HfImportOptions {
  std::string hf_dir;
  std::string out_dir;         // the checkpoint directory; step-00000000 is created in it
  std::string tokenizer = {};  // optional file stored with the checkpoint
};

// Returns the step directory written.
absl::StatusOr<std::string> ImportHf(const HfImportOptions& options);

}  // namespace tessera::checkpoint
