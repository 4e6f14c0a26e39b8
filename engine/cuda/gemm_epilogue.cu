// Small kernels around the GEMM for the cases the library's fused epilogues do
// not cover: starting C from the bias rows (or zeros / beta C), and ReLU after.
// The kernels are in gemm_epilogue_kernels.cuh; this file launches them.
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/gemm_epilogue.h"
#include "engine/cuda/gemm_epilogue_kernels.cuh"

namespace fg::cuda {

using namespace gemm_epilogue_detail;

void gemm_start_rows(DType dtype, void* c, int64_t ldc, int64_t stride_c, int64_t batch, int64_t m,
                     int64_t n, const void* bias, double beta) {
  if (batch * m * n == 0) return;
  FG_CUDA_DISPATCH_FLOATING(dtype, "matmul", [&] {
    start_rows_kernel<scalar_t><<<grid_for(batch * m * n, kThreads), kThreads, 0, stream()>>>(
        static_cast<scalar_t*>(c), ldc, stride_c, batch, m, n, static_cast<const scalar_t*>(bias),
        beta);
  });
  FG_CUDA_LAUNCH_CHECK("matmul (bias)");
}

void gemm_relu_rows(DType dtype, void* c, int64_t ldc, int64_t stride_c, int64_t batch, int64_t m,
                    int64_t n) {
  if (batch * m * n == 0) return;
  FG_CUDA_DISPATCH_FLOATING(dtype, "matmul", [&] {
    relu_rows_kernel<scalar_t><<<grid_for(batch * m * n, kThreads), kThreads, 0, stream()>>>(
        static_cast<scalar_t*>(c), ldc, stride_c, batch, m, n);
  });
  FG_CUDA_LAUNCH_CHECK("matmul (relu)");
}

}  // namespace fg::cuda
