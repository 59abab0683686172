// Activation recomputation (model.recompute): a function of one tensor run so that none of its
// intermediate activations is kept for backward. Forward runs it without recording the graph and
// saves only its input; backward runs it again with the graph recorded and differentiates that
// copy. This is PyTorch's reentrant checkpointing (torch.utils.checkpoint, use_reentrant=True)
// and Megatron-LM's full recomputation; selective recomputation applies it to the attention core.
//
// The parameters the function reads are given too and are inputs of the autograd node, and their
// gradients go back through it: so a backward restricted to some inputs sees the right paths. A
// zero-bubble schedule's input pass (torch::autograd::grad towards the stage's input) asks this
// node for the input's gradient alone, and its weight pass (a backward restricted to the
// parameters) reaches the node through the parameters' edges and gets theirs; the replay only
// differentiates what the pass asked for. A bf16 parameter's gradient goes straight to its fp32
// .grad in the replay (kernels/weight_grad.h) and comes back undefined, as it does without
// recomputation; its accumulator still runs, so the data-parallel reducer's hooks fire.
//
// The function must compute the same values when run again: Tessera's blocks have no dropout
// and no other randomness, so no RNG state is saved or restored. Collectives inside it (tensor
// and sequence parallelism) run again in backward, on every rank of the group in the same order.
#pragma once

#include <torch/types.h>

#include <functional>
#include <vector>

namespace tessera {

// fn(x) with fn's activations recomputed in backward; `params`: every parameter fn reads (none
// for a function without weights). `fn` must stay callable until backward.
torch::Tensor Recompute(const torch::Tensor& x, std::function<torch::Tensor(const torch::Tensor&)> fn,
                        const std::vector<torch::Tensor>& params = {});

}  // namespace tessera
