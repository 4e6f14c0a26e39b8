// Row-major BLAS GEMM for float and double, and whether BLAS may be called from
// inside an OpenMP parallel region, one matrix per thread.
#pragma once

#include <cblas.h>
#include <omp.h>

#include <cstdint>

namespace fg::cpu {

inline void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                      double alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                      double beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, static_cast<float>(alpha), a, lda, b, ldb,
              static_cast<float>(beta), c, ldc);
}

inline void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                      double alpha, const double* a, int64_t lda, const double* b, int64_t ldb,
                      double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// True when independent GEMMs may run one per OpenMP thread: the OpenMP build
// of OpenBLAS runs single-threaded inside a parallel region (the pthread build
// would start its own threads in each call), and there are threads to share.
inline bool blas_splits_over_threads() {
  static const bool openmp_blas = openblas_get_parallel() == 2;
  return openmp_blas && !omp_in_parallel() && omp_get_max_threads() > 1;
}

}  // namespace fg::cpu
