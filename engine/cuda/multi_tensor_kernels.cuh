// Multi-tensor kernels for gradient clipping (Backend::sum_squares_many and
// scale_many): a whole model's float32 gradients in a few launches instead of
// several kernels per parameter. Launches follow plan_multi_tensor_launches
// (multi_tensor_plan.h): block b works on chunk block_chunk[b] of the tensor in
// slot block_tensor[b].
//
// The sum of squares is deterministic: each block writes its chunk's sum to
// its own slot of a partials buffer (in plan order over all launches), and one
// block adds the partials in a fixed order, in double. The scale reads its
// factor from device memory, so clipping needs no host read.
//
// Written against the CUDA subset of the tests' host emulation, which compiles
// this header for the host; grad_clip.cu holds the checks and the launches.
#pragma once

#include <cstdint>

#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernel_header.cuh"
#include "engine/cuda/multi_tensor_chunk.cuh"
#include "engine/cuda/multi_tensor_plan.h"

namespace fg::cuda::multi_tensor_detail {
FG_KERNELS_BEGIN

constexpr int kMaxTensors = 48;
constexpr int kMaxBlocks = 320;
constexpr int kThreads = 512;

// One launch's tensors and its block -> (slot, chunk) map, passed by value.
struct FloatBatch {
  float* data[kMaxTensors];
  int64_t numel[kMaxTensors];
  uint16_t block_tensor[kMaxBlocks];
  int32_t block_chunk[kMaxBlocks];
};
static_assert(sizeof(FloatBatch) <= 4000, "kernel arguments are limited to 4 KB");

// One planned launch's argument (host code): slot s holds tensor
// plan.tensors[s], whose data and size data_of(i) and numel_of(i) give.
template <class Data, class Numel>
FloatBatch make_batch(const MultiTensorLaunch& plan, Data data_of, Numel numel_of) {
  FloatBatch batch{};
  for (size_t slot = 0; slot < plan.tensors.size(); ++slot) {
    batch.data[slot] = data_of(plan.tensors[slot]);
    batch.numel[slot] = numel_of(plan.tensors[slot]);
  }
  set_block_map(batch, plan);
  return batch;
}

// partials[blockIdx.x] = the sum of squares of this block's chunk.
__global__ void sum_squares_partials(FloatBatch batch, int64_t chunk, double* partials) {
  __shared__ float scratch[32];
  int t;
  int64_t begin, end;
  chunk_of(batch, chunk, t, begin, end);
  const float* x = batch.data[t];
  float acc = 0.0f;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) acc += x[i] * x[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = static_cast<double>(acc);
}

// *out = the sum of partials[0, count), in double, by one block.
__global__ void sum_partials(const double* partials, int64_t count, float* out) {
  __shared__ double scratch[32];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) *out = static_cast<float>(acc);
}

// x *= *factor for every element of the block's chunk.
__global__ void scale_chunks(FloatBatch batch, int64_t chunk, const float* factor) {
  int t;
  int64_t begin, end;
  chunk_of(batch, chunk, t, begin, end);
  float* x = batch.data[t];
  const float f = *factor;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) x[i] *= f;
}

FG_KERNELS_END
}  // namespace fg::cuda::multi_tensor_detail
