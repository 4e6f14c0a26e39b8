// The kernels around the GEMM for the epilogues the library does not fuse
// (gemm_epilogue.cu launches them): C started from beta * C plus the bias row,
// and ReLU after. C is row-major (batch, m, n) with row stride ldc and batch
// stride stride_c; elements between n and ldc are never touched.
//
// Written against the CUDA subset of the tests' host emulation, which compiles
// this header for the host.
#pragma once

#include <cstdint>

#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernel_header.cuh"

namespace fg::cuda::gemm_epilogue_detail {

constexpr int kThreads = 256;

FG_KERNELS_BEGIN

template <class T>
__global__ void start_rows_kernel(T* c, int64_t ldc, int64_t stride_c, int64_t batch, int64_t m,
                                  int64_t n, const T* bias, double beta) {
  using C = compute_t<T>;
  const int64_t total = batch * m * n;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t col = idx % n, row = (idx / n) % m, b = idx / (m * n);
    T& dst = c[b * stride_c + row * ldc + col];
    // beta == 0 must not read C: it may hold anything, NaN included.
    C v = beta == 0.0 ? C(0) : static_cast<C>(beta) * convert<C>(dst);
    if (bias) v += convert<C>(bias[col]);
    dst = convert<T>(v);
  }
}

template <class T>
__global__ void relu_rows_kernel(T* c, int64_t ldc, int64_t stride_c, int64_t batch, int64_t m,
                                 int64_t n) {
  using C = compute_t<T>;
  const int64_t total = batch * m * n;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t col = idx % n, row = (idx / n) % m, b = idx / (m * n);
    T& dst = c[b * stride_c + row * ldc + col];
    const C v = convert<C>(dst);
    dst = convert<T>(v > C(0) ? v : C(0));
  }
}

FG_KERNELS_END

}  // namespace fg::cuda::gemm_epilogue_detail
