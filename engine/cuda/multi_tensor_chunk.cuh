// Where a block of a multi-tensor kernel works (the fused AdamW, gradient
// clipping's passes): launches follow plan_multi_tensor_launches
// (multi_tensor_plan.h), whose block -> (slot, chunk) map the kernel argument
// carries in its block_tensor and block_chunk arrays.
#pragma once

#include <cstdint>

#include "engine/cuda/device_utils.cuh"

namespace fg::cuda {

// This block's slot t and the elements [begin, end) of its chunk, in a batch
// with numel, block_tensor and block_chunk arrays.
template <class Batch>
__device__ __forceinline__ void chunk_of(const Batch& batch, int64_t chunk, int& t, int64_t& begin,
                                         int64_t& end) {
  t = batch.block_tensor[blockIdx.x];
  begin = static_cast<int64_t>(batch.block_chunk[blockIdx.x]) * chunk;
  end = min(batch.numel[t], begin + chunk);
}

}  // namespace fg::cuda
