// Column- and row-parallel linear (layers.h): the conjugate functions around kernels::Linear.
#include "parallel/tensor_parallel/layers.h"

#include "kernels/linear.h"
#include "parallel/tensor_parallel/mappings.h"

namespace tessera::parallel {

torch::Tensor ColumnParallelLinear(const torch::Tensor& x, at::TensorList weight_shards, Communicator* group,
                                   bool sequence_parallel) {
  const torch::Tensor input =
      sequence_parallel ? GatherFromSequence(x, group) : CopyToTensorParallel(x, group);
  return kernels::Linear(input, weight_shards);
}

torch::Tensor RowParallelLinear(const torch::Tensor& x, const torch::Tensor& weight_shard,
                                Communicator* group, bool sequence_parallel) {
  const torch::Tensor partial = kernels::Linear(x, weight_shard);
  return sequence_parallel ? ReduceScatterToSequence(partial, group)
                           : ReduceFromTensorParallel(partial, group);
}

}  // namespace tessera::parallel
