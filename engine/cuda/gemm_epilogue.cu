// Small kernels around the GEMM for the cases the library's fused epilogues do
// not cover: starting C from the bias rows (or zeros / beta C), and ReLU after.
// C is row-major (batch, m, n) with row stride ldc and batch stride stride_c.
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/gemm_epilogue.h"

namespace fg::cuda {

namespace {

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

}  // namespace

void gemm_start_rows(DType dtype, void* c, int64_t ldc, int64_t stride_c, int64_t batch, int64_t m,
                     int64_t n, const void* bias, double beta) {
  if (batch * m * n == 0) return;
  FG_CUDA_DISPATCH_FLOATING(dtype, "matmul", [&] {
    start_rows_kernel<scalar_t><<<grid_for(batch * m * n, 256), 256, 0, stream()>>>(
        static_cast<scalar_t*>(c), ldc, stride_c, batch, m, n, static_cast<const scalar_t*>(bias),
        beta);
  });
  FG_CUDA_LAUNCH_CHECK("matmul (bias)");
}

void gemm_relu_rows(DType dtype, void* c, int64_t ldc, int64_t stride_c, int64_t batch, int64_t m,
                    int64_t n) {
  if (batch * m * n == 0) return;
  FG_CUDA_DISPATCH_FLOATING(dtype, "matmul", [&] {
    relu_rows_kernel<scalar_t><<<grid_for(batch * m * n, 256), 256, 0, stream()>>>(
        static_cast<scalar_t*>(c), ldc, stride_c, batch, m, n);
  });
  FG_CUDA_LAUNCH_CHECK("matmul (relu)");
}

}  // namespace fg::cuda
