// `tessera logits CHECKPOINT --tokens 1,2,3 [--tokens ...]`: runs the checkpoint's model (one
// process, fp32) on token sequences and prints the logits as JSON lines, one per sequence:
//   {"tokens": [1, 2, 3], "logits": [[...vocab floats...], ...one row per position]}
// A debugging aid: compare a checkpoint with another implementation (tests/trainer/
// hf_interop_test.py compares it with transformers), or two checkpoints with each other.
#pragma once

#include <string>
#include <vector>

namespace tessera::checkpoint {

int LogitsCommand(const std::vector<std::string>& args);

}  // namespace tessera::checkpoint
