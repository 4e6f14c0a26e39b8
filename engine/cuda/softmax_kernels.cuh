// Softmax and log-softmax over the middle dimension of a contiguous
// (outer, n, inner) tensor, forward and backward, computed in float (double for
// double) with the CPU's formulas (engine/cpu/kernels.cpp):
//   softmax:      y = exp(x - max) / sum,        dx = y (g - sum(g y))
//   log_softmax:  y = (x - max) - log(sum),      dx = g - exp(y) sum(g)
// inner == 1 (rows, e.g. attention probabilities or the Soft MoE combine over
// n * p slots): one warp per row, or one block per row for long rows.
// inner > 1 (e.g. the Soft MoE dispatch over tokens, inner = n * p): blocks of
// 32 columns x 8 slices of n, coalesced across inner, combined in shared memory.
//
// The kernels and their launch shapes, written against the CUDA subset that
// the tests' host emulation provides so that the tests compile this same header
// for the host; softmax.cu holds the checks, the dispatch and the launches.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernel_header.cuh"

namespace fg::cuda::softmax_detail {
FG_KERNELS_BEGIN

constexpr int kWarpRowLimit = 2048;

template <class T, bool Log>
__global__ void softmax_rows_warp(const T* x, T* y, int64_t rows, int64_t n) {
  using A = accum_t<T>;
  const int lane = threadIdx.x % 32;
  const int64_t warps = grid_threads() / 32;
  for (int64_t row = global_thread() / 32; row < rows; row += warps) {
    const T* xr = x + row * n;
    T* yr = y + row * n;
    A mx = -INFINITY;
    for (int64_t i = lane; i < n; i += 32) mx = max(mx, convert<A>(xr[i]));
    mx = warp_max(mx);
    A sum = 0;
    for (int64_t i = lane; i < n; i += 32) sum += math::exp(convert<A>(xr[i]) - mx);
    sum = warp_sum(sum);
    if constexpr (Log) {
      const A log_sum = math::log(sum);
      for (int64_t i = lane; i < n; i += 32) yr[i] = convert<T>((convert<A>(xr[i]) - mx) - log_sum);
    } else {
      const A inv = A(1) / sum;
      for (int64_t i = lane; i < n; i += 32)
        yr[i] = convert<T>(math::exp(convert<A>(xr[i]) - mx) * inv);
    }
  }
}

template <class T, bool Log>
__global__ void softmax_rows_block(const T* x, T* y, int64_t rows, int64_t n) {
  using A = accum_t<T>;
  __shared__ A scratch[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * n;
    T* yr = y + row * n;
    A mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) mx = max(mx, convert<A>(xr[i]));
    mx = block_max(mx, scratch);
    A sum = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += math::exp(convert<A>(xr[i]) - mx);
    sum = block_sum(sum, scratch);
    if constexpr (Log) {
      const A log_sum = math::log(sum);
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        yr[i] = convert<T>((convert<A>(xr[i]) - mx) - log_sum);
    } else {
      const A inv = A(1) / sum;
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        yr[i] = convert<T>(math::exp(convert<A>(xr[i]) - mx) * inv);
    }
  }
}

constexpr int kColumnWidth = 32, kColumnDepth = 8;

// Combines the kColumnDepth partial values of each column through shared
// memory; every thread of the column gets the result.
template <class A, class F>
__device__ __forceinline__ A combine_column(A v, A (&scratch)[kColumnDepth][kColumnWidth + 1],
                                            F f) {
  scratch[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  if (threadIdx.y == 0) {
    A r = scratch[0][threadIdx.x];
    for (int k = 1; k < kColumnDepth; ++k) r = f(r, scratch[k][threadIdx.x]);
    scratch[0][threadIdx.x] = r;
  }
  __syncthreads();
  const A result = scratch[0][threadIdx.x];
  __syncthreads();  // scratch is reused by the next combine
  return result;
}

// Block (32, 8): x over inner (coalesced), y over slices of n. Grid (column
// tiles, outer slices, grid-strided).
template <class T, bool Log>
__global__ void softmax_columns(const T* x, T* y, int64_t outer, int64_t n, int64_t inner) {
  using A = accum_t<T>;
  __shared__ A scratch[kColumnDepth][kColumnWidth + 1];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColumnWidth + threadIdx.x;
  const bool active = j < inner;
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    const T* xc = x + o * n * inner + j;
    T* yc = y + o * n * inner + j;
    A mx = -INFINITY;
    if (active)
      for (int64_t i = threadIdx.y; i < n; i += kColumnDepth)
        mx = max(mx, convert<A>(xc[i * inner]));
    mx = combine_column(mx, scratch, [](A a, A b) { return a > b ? a : b; });
    A sum = 0;
    if (active)
      for (int64_t i = threadIdx.y; i < n; i += kColumnDepth)
        sum += math::exp(convert<A>(xc[i * inner]) - mx);
    sum = combine_column(sum, scratch, [](A a, A b) { return a + b; });
    if (!active) continue;
    if constexpr (Log) {
      const A log_sum = math::log(sum);
      for (int64_t i = threadIdx.y; i < n; i += kColumnDepth)
        yc[i * inner] = convert<T>((convert<A>(xc[i * inner]) - mx) - log_sum);
    } else {
      const A inv = A(1) / sum;
      for (int64_t i = threadIdx.y; i < n; i += kColumnDepth)
        yc[i * inner] = convert<T>(math::exp(convert<A>(xc[i * inner]) - mx) * inv);
    }
  }
}

// dx from y and g: acc = sum(g y) (softmax) or sum(g) (log_softmax).
template <class A, bool Log>
__device__ __forceinline__ A backward_term(A y, A g) {
  return Log ? g : g * y;
}
template <class A, bool Log>
__device__ __forceinline__ A backward_value(A y, A g, A acc) {
  return Log ? g - math::exp(y) * acc : y * (g - acc);
}

template <class T, bool Log>
__global__ void softmax_backward_rows_warp(const T* y, const T* g, T* gx, int64_t rows, int64_t n) {
  using A = accum_t<T>;
  const int lane = threadIdx.x % 32;
  const int64_t warps = grid_threads() / 32;
  for (int64_t row = global_thread() / 32; row < rows; row += warps) {
    const int64_t base = row * n;
    A acc = 0;
    for (int64_t i = lane; i < n; i += 32)
      acc += backward_term<A, Log>(convert<A>(y[base + i]), convert<A>(g[base + i]));
    acc = warp_sum(acc);
    for (int64_t i = lane; i < n; i += 32)
      gx[base + i] =
          convert<T>(backward_value<A, Log>(convert<A>(y[base + i]), convert<A>(g[base + i]), acc));
  }
}

template <class T, bool Log>
__global__ void softmax_backward_rows_block(const T* y, const T* g, T* gx, int64_t rows,
                                            int64_t n) {
  using A = accum_t<T>;
  __shared__ A scratch[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * n;
    A acc = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      acc += backward_term<A, Log>(convert<A>(y[base + i]), convert<A>(g[base + i]));
    acc = block_sum(acc, scratch);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      gx[base + i] =
          convert<T>(backward_value<A, Log>(convert<A>(y[base + i]), convert<A>(g[base + i]), acc));
  }
}

template <class T, bool Log>
__global__ void softmax_backward_columns(const T* y, const T* g, T* gx, int64_t outer, int64_t n,
                                         int64_t inner) {
  using A = accum_t<T>;
  __shared__ A scratch[kColumnDepth][kColumnWidth + 1];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColumnWidth + threadIdx.x;
  const bool active = j < inner;
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    const int64_t base = o * n * inner + j;
    A acc = 0;
    if (active)
      for (int64_t i = threadIdx.y; i < n; i += kColumnDepth)
        acc +=
            backward_term<A, Log>(convert<A>(y[base + i * inner]), convert<A>(g[base + i * inner]));
    acc = combine_column(acc, scratch, [](A a, A b) { return a + b; });
    if (!active) continue;
    for (int64_t i = threadIdx.y; i < n; i += kColumnDepth) {
      const int64_t k = base + i * inner;
      gx[k] = convert<T>(backward_value<A, Log>(convert<A>(y[k]), convert<A>(g[k]), acc));
    }
  }
}
// ---------------------------------------------------------------- launch shapes

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// inner == 1: rows of up to kWarpRowLimit values take one warp each, 8 to a
// block; longer rows one block of 512 threads each. Both loops are
// grid-strided, so the grid is capped.
struct RowLaunch {
  bool block_per_row;
  int64_t grid;
  int threads;
};
inline RowLaunch row_launch(int64_t rows, int64_t n) {
  if (n <= kWarpRowLimit) return {false, std::min<int64_t>(ceil_div(rows, 8), 1 << 20), 256};
  return {true, std::min<int64_t>(rows, 1 << 20), 512};
}

// inner > 1: blocks of (kColumnWidth, kColumnDepth) threads over (column
// tiles, outer slices); the slices are grid-strided past 65535.
inline dim3 column_launch_grid(int64_t outer, int64_t inner) {
  return dim3(static_cast<unsigned>(ceil_div(inner, kColumnWidth)),
              static_cast<unsigned>(std::min<int64_t>(outer, 65535)));
}

FG_KERNELS_END
}  // namespace fg::cuda::softmax_detail
