// The reduction kernels of reduce.cu (sum, max and min over the middle
// dimension of a contiguous (outer, r, inner) tensor) and the host-side plan
// of their launches: which kernel, how many chunks a long reduction splits
// into, the grid. Accumulation in float for float and bfloat16 inputs (double
// for double, int64 for int64); max and min propagate NaN as the CPU does.
//
// Deterministic: each output is combined in a fixed order that depends only on
// the sizes. When there are few outputs and long reductions, the reduction is
// split into chunks whose partial results (in the accumulator type) go to a
// temporary buffer and are combined by a second launch of the same kernels.
//
// Written against the CUDA subset of the tests' host emulation, which compiles
// this header for the host; reduce.cu holds the checks and the launches.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "engine/backend.h"
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernel_header.cuh"

namespace fg::cuda::reduce_detail {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr int kRowThreads = 256;
constexpr int kColumnWidth = 32, kColumnDepth = 8;

// Over rows (inner == 1): enough rows fill the GPU; otherwise long rows split
// into about 4096-long chunks (at least 2048 long, so the first pass still
// takes the block kernel).
inline int64_t row_chunks(int64_t outer, int64_t r) {
  if (outer < 1024 && r > 8192) return std::min(ceil_div(r, 4096), ceil_div(1024, outer));
  return 1;
}

// Over columns: r splits when the (tile, outer) blocks alone would not fill the GPU.
inline int64_t column_chunks(int64_t outer, int64_t r, int64_t inner) {
  const int64_t blocks = ceil_div(inner, kColumnWidth) * outer;
  int64_t chunks = 1;
  if (blocks < 512 && r > 256) chunks = std::min(ceil_div(r, 128), ceil_div(512, blocks));
  return std::min<int64_t>(chunks, 65535);
}

// One launch over rows rows of length r, each split into chunks tasks: a warp
// per task (reduce_rows_warp) for chunks under 1024 values, else a block
// (reduce_rows_block).
struct RowLaunch {
  bool block_per_task;
  int64_t grid, chunk, tasks;
};

inline RowLaunch row_launch(int64_t rows, int64_t r, int64_t chunks) {
  RowLaunch l;
  l.chunk = ceil_div(r, chunks);
  l.tasks = rows * chunks;
  l.block_per_task = l.chunk >= 1024;
  l.grid = l.block_per_task ? std::min<int64_t>(l.tasks, 65535 * 8)
                            : std::min<int64_t>(ceil_div(l.tasks, kRowThreads / 32), 65535 * 8);
  return l;
}

// One launch of reduce_columns: grid (column tiles, outer, chunks), blocks of
// (kColumnWidth, kColumnDepth) threads.
struct ColumnLaunch {
  dim3 grid, block;
  int64_t chunk;
};

inline ColumnLaunch column_launch(int64_t outer, int64_t r, int64_t inner, int64_t chunks) {
  return ColumnLaunch{dim3(static_cast<unsigned>(ceil_div(inner, kColumnWidth)),
                           static_cast<unsigned>(outer), static_cast<unsigned>(chunks)),
                      dim3(kColumnWidth, kColumnDepth), ceil_div(r, chunks)};
}

FG_KERNELS_BEGIN

template <class A>
__device__ __forceinline__ bool is_nan(A v) {
  if constexpr (std::is_floating_point_v<A>)
    return math::isnan(v);
  else
    return false;
}

template <class A>
__device__ __forceinline__ A combine(ReduceOp op, A a, A b) {
  switch (op) {
    case ReduceOp::Sum:
      return a + b;
    case ReduceOp::Max:
      return (b > a || is_nan(b)) ? b : a;
    case ReduceOp::Min:
      return (b < a || is_nan(b)) ? b : a;
  }
  return a;
}

template <class A>
__device__ __forceinline__ A identity(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return A(0);
    case ReduceOp::Max:
      if constexpr (std::is_floating_point_v<A>)
        return -INFINITY;
      else
        return std::numeric_limits<A>::lowest();
    case ReduceOp::Min:
      if constexpr (std::is_floating_point_v<A>)
        return INFINITY;
      else
        return std::numeric_limits<A>::max();
  }
  return A(0);
}

template <class A>
__device__ __forceinline__ A warp_combine(ReduceOp op, A v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = combine(op, v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Task t = (row o, chunk s) reduces x[o * r + s * chunk, o * r + min(r, (s + 1) * chunk))
// into out[t]. One warp per task.
template <class In, class A, class Out>
__global__ void reduce_rows_warp(const In* x, Out* out, int64_t tasks, int64_t r, int64_t chunks,
                                 int64_t chunk, ReduceOp op) {
  const int lane = threadIdx.x % 32;
  const int64_t warps_per_grid = grid_threads() / 32;
  for (int64_t t = global_thread() / 32; t < tasks; t += warps_per_grid) {
    const int64_t o = t / chunks, s = t % chunks;
    const int64_t begin = s * chunk, end = min(r, begin + chunk);
    const In* row = x + o * r;
    A acc = identity<A>(op);
    for (int64_t i = begin + lane; i < end; i += 32) acc = combine(op, acc, convert<A>(row[i]));
    acc = warp_combine(op, acc);
    if (lane == 0) out[t] = convert<Out>(acc);
  }
}

// As reduce_rows_warp with one block of 256 threads per task, for long rows.
template <class In, class A, class Out>
__global__ void reduce_rows_block(const In* x, Out* out, int64_t tasks, int64_t r, int64_t chunks,
                                  int64_t chunk, ReduceOp op) {
  __shared__ A scratch[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t t = blockIdx.x; t < tasks; t += gridDim.x) {
    const int64_t o = t / chunks, s = t % chunks;
    const int64_t begin = s * chunk, end = min(r, begin + chunk);
    const In* row = x + o * r;
    A acc = identity<A>(op);
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
      acc = combine(op, acc, convert<A>(row[i]));
    acc = warp_combine(op, acc);
    __syncthreads();  // scratch is reused by the next task
    if (lane == 0) scratch[warp] = acc;
    __syncthreads();
    if (warp == 0) {
      A v = lane < warps ? scratch[lane] : identity<A>(op);
      v = warp_combine(op, v);
      if (lane == 0) out[t] = convert<Out>(v);
    }
  }
}

// Block (32, 8): x over inner (coalesced), y over a slice of r. Grid (column
// tiles, outer, chunks); chunk s of output (o, j) goes to out[(o * chunks + s) * inner + j].
template <class In, class A, class Out>
__global__ void reduce_columns(const In* x, Out* out, int64_t r, int64_t inner, int64_t chunks,
                               int64_t chunk, ReduceOp op) {
  __shared__ A partial[kColumnDepth][kColumnWidth + 1];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColumnWidth + threadIdx.x;
  const int64_t o = blockIdx.y, s = blockIdx.z;
  const int64_t begin = s * chunk, end = min(r, begin + chunk);
  A acc = identity<A>(op);
  if (j < inner) {
    const In* base = x + o * r * inner + j;
    for (int64_t i = begin + threadIdx.y; i < end; i += kColumnDepth)
      acc = combine(op, acc, convert<A>(base[i * inner]));
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < inner) {
    A v = partial[0][threadIdx.x];
    for (int k = 1; k < kColumnDepth; ++k) v = combine(op, v, partial[k][threadIdx.x]);
    out[(o * chunks + s) * inner + j] = convert<Out>(v);
  }
}

FG_KERNELS_END
}  // namespace fg::cuda::reduce_detail
