// Helpers for GEMM epilogues the library does not fuse (engine/cuda/gemm_epilogue.cu).
#pragma once

#include <cstdint>

#include "engine/dtype.h"

namespace fg::cuda {

// C = (beta == 0 ? 0 : beta * C) + bias (bias may be null), row-major (batch, m, n).
void gemm_start_rows(DType dtype, void* c, int64_t ldc, int64_t stride_c, int64_t batch, int64_t m,
                     int64_t n, const void* bias, double beta);
// C = max(C, 0).
void gemm_relu_rows(DType dtype, void* c, int64_t ldc, int64_t stride_c, int64_t batch, int64_t m,
                    int64_t n);

}  // namespace fg::cuda
