// Layer normalization over the last `cols` values of each of `rows` rows, with
// statistics in float (double for double inputs) as the ops allocate them.
// Forward (one warp per row): mean, then the variance as the mean of squared
// deviations (two passes, like the CPU), rstd = 1 / sqrt(var + eps),
// y = (x - mean) * rstd * w + b.
// Backward: per row, gx = rstd * (w g - mean(w g) - xhat * mean(w g xhat));
// the parameter gradients sum g * xhat and g over rows in a fixed order
// (per-chunk partial sums, then one pass over the chunks), so they are
// deterministic.
//
// The kernels and their launch shapes, written against the CUDA subset that
// the tests' host emulation provides so that the tests compile this same header
// for the host; layer_norm.cu holds the checks, the dispatch and the launches.
#pragma once

#include <algorithm>
#include <cstdint>

#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/dropout_kernels.cuh"
#include "engine/cuda/kernel_header.cuh"
#include "engine/dtype.h"
#include "engine/philox.h"

namespace fg::cuda::layer_norm_detail {
FG_KERNELS_BEGIN

constexpr int kWarpColsLimit = 4096;

template <class W, class A>
__device__ __forceinline__ A param_or(const W* p, int64_t j, A fallback) {
  return p ? convert<A>(p[j]) : fallback;
}

// How a kernel's threads take rows: a warp per row (lane of 32, the grid's
// warps striding over rows) or a block per row (`Block`).
struct RowSplit {
  int64_t lane, width, first, step;
};

template <bool Block>
__device__ __forceinline__ RowSplit row_split() {
  if constexpr (Block)
    return RowSplit{threadIdx.x, blockDim.x, blockIdx.x, gridDim.x};
  else
    return RowSplit{threadIdx.x % 32, 32, global_thread() / 32, grid_threads() / 32};
}

// The sum of v over the threads that share a row (row_split<Block>()).
template <bool Block, class A>
__device__ __forceinline__ A row_sum(A v, A* scratch) {
  if constexpr (Block)
    return block_sum(v, scratch);
  else
    return warp_sum(v);
}

// One warp per row (short rows) or one block per row (long rows); `Block` picks.
template <class T, class W, bool Block>
__global__ void layer_norm_forward(const T* x, const W* weight, const W* bias, T* y,
                                   accum_t<T>* mean_out, accum_t<T>* rstd_out, int64_t rows,
                                   int64_t cols, double eps) {
  using A = accum_t<T>;
  __shared__ A scratch[32];
  const auto [lane, width, first, step] = row_split<Block>();
  for (int64_t row = first; row < rows; row += step) {
    const T* xr = x + row * cols;
    A sum = 0;
    for (int64_t j = lane; j < cols; j += width) sum += convert<A>(xr[j]);
    sum = row_sum<Block>(sum, scratch);
    const A mu = sum / static_cast<A>(cols);
    A sq = 0;
    for (int64_t j = lane; j < cols; j += width) {
      const A d = convert<A>(xr[j]) - mu;
      sq += d * d;
    }
    sq = row_sum<Block>(sq, scratch);
    const A inv = A(1) / math::sqrt(sq / static_cast<A>(cols) + static_cast<A>(eps));
    if (lane == 0) {
      mean_out[row] = mu;
      rstd_out[row] = inv;
    }
    T* yr = y + row * cols;
    for (int64_t j = lane; j < cols; j += width) {
      const A v =
          (convert<A>(xr[j]) - mu) * inv * param_or(weight, j, A(1)) + param_or(bias, j, A(0));
      yr[j] = convert<T>(v);
    }
  }
}

template <class T, class W, bool Block>
__global__ void layer_norm_backward_input(const T* g, const T* x, const accum_t<T>* mean,
                                          const accum_t<T>* rstd, const W* weight, T* gx,
                                          int64_t rows, int64_t cols) {
  using A = accum_t<T>;
  __shared__ A scratch[32];
  const auto [lane, width, first, step] = row_split<Block>();
  for (int64_t row = first; row < rows; row += step) {
    const T* gr = g + row * cols;
    const T* xr = x + row * cols;
    const A mu = mean[row], inv = rstd[row];
    A sum_wg = 0, sum_wg_xhat = 0;
    for (int64_t j = lane; j < cols; j += width) {
      const A wg = convert<A>(gr[j]) * param_or(weight, j, A(1));
      const A xhat = (convert<A>(xr[j]) - mu) * inv;
      sum_wg += wg;
      sum_wg_xhat += wg * xhat;
    }
    sum_wg = row_sum<Block>(sum_wg, scratch);
    sum_wg_xhat = row_sum<Block>(sum_wg_xhat, scratch);
    const A a = sum_wg / static_cast<A>(cols), b = sum_wg_xhat / static_cast<A>(cols);
    T* gxr = gx + row * cols;
    for (int64_t j = lane; j < cols; j += width) {
      const A wg = convert<A>(gr[j]) * param_or(weight, j, A(1));
      const A xhat = (convert<A>(xr[j]) - mu) * inv;
      gxr[j] = convert<T>(inv * (wg - a - xhat * b));
    }
  }
}

// ---------------------------------------------------------------- add_layer_norm
// out = layer_norm(residual + dropout(x)) (Backend::add_layer_norm) in one pass
// each way. A row's threads walk its elements by Philox quads (global elements
// 4q .. 4q + 3, whose keep decisions one philox4x32 gives), and every pass of
// a thread visits the same elements, so each thread reads back only the sums
// it wrote itself (no barrier). The numbers are the composite's: the dropout
// product rounded to X, added in the accumulation type, stored as T; the
// input gradient stored as T, rounded to X, then through dropout's backward.
// Only the order of the row sums differs from layer_norm_forward's.

struct RowDropout {
  bool drop;
  uint64_t seed, offset;
  float threshold;
  const uint64_t* offset_base;  // see philox_offset_at (null outside a CUDA graph)
};

// Calls f(i, j, r) for the elements i (column j) of row `row` this thread owns,
// with r the Philox block of i's quad (drawn only when dropping).
template <class F>
__device__ __forceinline__ void for_row_quads(int64_t row, int64_t cols, const RowSplit& split,
                                              const RowDropout& d, F f) {
  const int64_t begin = row * cols, end = begin + cols;
  const uint64_t offset = d.drop ? philox_offset_at(d.offset, d.offset_base) : 0;
  for (int64_t q = begin / 4 + split.lane; q < (end + 3) / 4; q += split.width) {
    Philox4 r{};
    if (d.drop) r = philox4x32(static_cast<uint64_t>(q), offset, d.seed);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = q * 4 + k;
      if (i >= begin && i < end) f(i, i - begin, r.v[k]);
    }
  }
}

template <class T, class X, class W, bool Block>
__global__ void add_layer_norm_forward(const T* residual, const X* x, const W* weight,
                                       const W* bias, T* sum_out, T* y, accum_t<T>* mean_out,
                                       accum_t<T>* rstd_out, int64_t rows, int64_t cols, double eps,
                                       RowDropout d, compute_t<X> scale) {
  using A = accum_t<T>;
  using C = compute_t<X>;
  __shared__ A scratch[32];
  const RowSplit split = row_split<Block>();
  for (int64_t row = split.first; row < rows; row += split.step) {
    A total = 0;
    for_row_quads(row, cols, split, d, [&](int64_t i, int64_t, uint32_t word) {
      C v = convert<C>(x[i]);
      if (d.drop) v = v * dropout_detail::keep_factor(word, d.threshold, scale);
      const T s = convert<T>(convert<A>(residual[i]) + convert<A>(convert<X>(v)));
      sum_out[i] = s;
      total += convert<A>(s);
    });
    total = row_sum<Block>(total, scratch);
    const A mu = total / static_cast<A>(cols);
    A sq = 0;
    for_row_quads(row, cols, split, RowDropout{}, [&](int64_t i, int64_t, uint32_t) {
      const A dev = convert<A>(sum_out[i]) - mu;
      sq += dev * dev;
    });
    sq = row_sum<Block>(sq, scratch);
    const A inv = A(1) / math::sqrt(sq / static_cast<A>(cols) + static_cast<A>(eps));
    if (split.lane == 0) {
      mean_out[row] = mu;
      rstd_out[row] = inv;
    }
    for_row_quads(row, cols, split, RowDropout{}, [&](int64_t i, int64_t j, uint32_t) {
      const A v =
          (convert<A>(sum_out[i]) - mu) * inv * param_or(weight, j, A(1)) + param_or(bias, j, A(0));
      y[i] = convert<T>(v);
    });
  }
}

// grad_residual and grad_x may be null (not needed).
template <class T, class X, class W, bool Block>
__global__ void add_layer_norm_backward_input(const T* g, const T* sum, const accum_t<T>* mean,
                                              const accum_t<T>* rstd, const W* weight,
                                              T* grad_residual, X* grad_x, int64_t rows,
                                              int64_t cols, RowDropout d, compute_t<X> scale) {
  using A = accum_t<T>;
  using C = compute_t<X>;
  __shared__ A scratch[32];
  const RowSplit split = row_split<Block>();
  for (int64_t row = split.first; row < rows; row += split.step) {
    const A mu = mean[row], inv = rstd[row];
    A sum_wg = 0, sum_wg_xhat = 0;
    for_row_quads(row, cols, split, RowDropout{}, [&](int64_t i, int64_t j, uint32_t) {
      const A wg = convert<A>(g[i]) * param_or(weight, j, A(1));
      sum_wg += wg;
      sum_wg_xhat += wg * ((convert<A>(sum[i]) - mu) * inv);
    });
    sum_wg = row_sum<Block>(sum_wg, scratch);
    sum_wg_xhat = row_sum<Block>(sum_wg_xhat, scratch);
    const A a = sum_wg / static_cast<A>(cols), b = sum_wg_xhat / static_cast<A>(cols);
    for_row_quads(row, cols, split, d, [&](int64_t i, int64_t j, uint32_t word) {
      const A wg = convert<A>(g[i]) * param_or(weight, j, A(1));
      const A xhat = (convert<A>(sum[i]) - mu) * inv;
      const T gs = convert<T>(inv * (wg - a - xhat * b));
      if (grad_residual) grad_residual[i] = gs;
      if (grad_x) {
        C gv = convert<C>(convert<X>(gs));
        if (d.drop) gv = gv * dropout_detail::keep_factor(word, d.threshold, scale);
        grad_x[i] = convert<X>(gv);
      }
    });
  }
}

constexpr int kParamWidth = 32, kParamDepth = 8;

// Partial parameter gradients: block (32, 8) over (columns, rows of chunk s).
// partial_w/partial_b are (chunks, cols).
template <class T>
__global__ void layer_norm_param_partials(const T* g, const T* x, const accum_t<T>* mean,
                                          const accum_t<T>* rstd, int64_t rows, int64_t cols,
                                          int64_t chunk, accum_t<T>* partial_w,
                                          accum_t<T>* partial_b) {
  using A = accum_t<T>;
  __shared__ A sum_w[kParamDepth][kParamWidth + 1];
  __shared__ A sum_b[kParamDepth][kParamWidth + 1];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kParamWidth + threadIdx.x;
  const int64_t s = blockIdx.y;
  const int64_t begin = s * chunk, end = min(rows, begin + chunk);
  A acc_w = 0, acc_b = 0;
  if (j < cols) {
    for (int64_t r = begin + threadIdx.y; r < end; r += kParamDepth) {
      const A gv = convert<A>(g[r * cols + j]);
      acc_w += gv * (convert<A>(x[r * cols + j]) - mean[r]) * rstd[r];
      acc_b += gv;
    }
  }
  sum_w[threadIdx.y][threadIdx.x] = acc_w;
  sum_b[threadIdx.y][threadIdx.x] = acc_b;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    A w = sum_w[0][threadIdx.x], b = sum_b[0][threadIdx.x];
    for (int k = 1; k < kParamDepth; ++k) {
      w += sum_w[k][threadIdx.x];
      b += sum_b[k][threadIdx.x];
    }
    partial_w[s * cols + j] = w;
    partial_b[s * cols + j] = b;
  }
}

template <class A>
__device__ __forceinline__ void store_as(void* base, DType type, int64_t j, A v) {
  switch (type) {
    case DType::Float32:
      static_cast<float*>(base)[j] = static_cast<float>(v);
      break;
    case DType::Float64:
      static_cast<double*>(base)[j] = static_cast<double>(v);
      break;
    case DType::BFloat16:
      static_cast<bf16*>(base)[j] = convert<bf16>(static_cast<float>(v));
      break;
    default:
      break;  // checked on the host
  }
}

template <class A>
__global__ void layer_norm_param_finish(const A* partial_w, const A* partial_b, int64_t chunks,
                                        int64_t cols, void* grad_weight, DType weight_type,
                                        void* grad_bias, DType bias_type) {
  for (int64_t j = global_thread(); j < cols; j += grid_threads()) {
    A w = 0, b = 0;
    for (int64_t s = 0; s < chunks; ++s) {
      w += partial_w[s * cols + j];
      b += partial_b[s * cols + j];
    }
    if (grad_weight) store_as(grad_weight, weight_type, j, w);
    if (grad_bias) store_as(grad_bias, bias_type, j, b);
  }
}

// ---------------------------------------------------------------- launch shapes

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Rows of up to kWarpColsLimit columns take one warp each, 8 to a block; longer
// rows one block of 512 threads each. Both loops are grid-strided, so the grid
// is capped.
struct RowLaunch {
  bool block_per_row;
  int64_t grid;
  int threads;
};
inline RowLaunch row_launch(int64_t rows, int64_t cols) {
  if (cols <= kWarpColsLimit) return {false, std::min<int64_t>(ceil_div(rows, 8), 1 << 20), 256};
  return {true, std::min<int64_t>(rows, 1 << 20), 512};
}

// The parameter gradients' chunks of rows: about 64 rows each, at most 256 (a
// fixed function of the sizes, so the sums' order is too).
struct ParamChunks {
  int64_t chunks, chunk;
};
inline ParamChunks param_chunks(int64_t rows) {
  const int64_t chunks = std::min<int64_t>(256, std::max<int64_t>(1, ceil_div(rows, 64)));
  return {chunks, ceil_div(rows, chunks)};
}
// layer_norm_param_partials: blocks of (kParamWidth, kParamDepth) threads.
inline dim3 param_partials_grid(int64_t cols, int64_t chunks) {
  return dim3(static_cast<unsigned>(ceil_div(cols, kParamWidth)), static_cast<unsigned>(chunks));
}

FG_KERNELS_END
}  // namespace fg::cuda::layer_norm_detail
