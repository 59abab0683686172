// `tessera checkpoint digest|diff`: looks at saved checkpoints tensor by tensor, whatever parallel
// layouts wrote them.
//
//   digest CKPT [--step N] [--params-only] [--json]
//       one line per logical tensor: name, dtype, shape and a 64-bit digest (FNV-1a) of its
//       bytes. Equal digests: bit-identical tensors (exact-resume tests compare them).
//   diff A B [--step N] [--params-only] [--atol X] [--json]
//       one line per tensor present in either: max |a - b|, max |a|, max |b| and how many
//       elements differ; a tensor missing on one side or shaped differently is an error.
//
// CKPT, A, B: a step directory, or a checkpoint directory (its newest valid step, or step N with
// --step). --params-only leaves out the optimizer's moments ("optim." tensors). Exit codes: 0
// success; 1 a structural difference, a difference above --atol, or unreadable data; 2 a bad
// command line or no such checkpoint.
#pragma once

#include <string>
#include <vector>

namespace tessera {

// `argv`: the arguments after "checkpoint".
int CheckpointCommand(const std::vector<std::string>& argv);

}  // namespace tessera

// The usage lines for cli/main.cc's usage literal.
#define TESSERA_CHECKPOINT_COMMAND_USAGE                                                            \
  "  checkpoint digest CKPT [--step N] [--params-only] [--json]\n"                                  \
  "                                              per-tensor digests of a checkpoint (any layout)\n" \
  "  checkpoint diff A B [--step N] [--params-only] [--atol X] [--json]\n"                          \
  "                                              per-tensor max |a-b| of two checkpoints\n"
