// Row-major GemmArgs -> the column-major problem cuBLAS solves. Plain C++ so the
// tests check the mapping on machines without a GPU (against a column-major
// reference GEMM on the host).
//
// A row-major matrix X (r x c, row stride ld) is, read column-major, X^T (c x r)
// with the same ld. So C = op(A) op(B) (row-major, m x n) is computed as
// C^T = op(B)^T op(A)^T: a column-major n x m result whose first operand is our
// B and second our A, each transposed iff it was transposed in GemmArgs.
#pragma once

#include <cstdint>

#include "engine/backend.h"

namespace fg::cuda {

struct ColumnMajorOperand {
  const void* ptr = nullptr;
  bool transposed = false;     // op applied by cuBLAS
  int64_t rows = 0, cols = 0;  // of the stored column-major matrix, before op
  int64_t ld = 0, batch_stride = 0;
};

struct ColumnMajorGemm {
  int64_t m = 0, n = 0, k = 0;  // D (m x n) = op(first) (m x k) op(second) (k x n)
  ColumnMajorOperand first, second;
  void* d = nullptr;
  int64_t ldd = 0, stride_d = 0;  // D stored m x n column-major
  int64_t batch = 1;
};

inline ColumnMajorGemm to_column_major(const GemmArgs& g) {
  ColumnMajorGemm cm;
  cm.m = g.n;
  cm.n = g.m;
  cm.k = g.k;
  // First operand: our B, op(B) is k x n row-major. Untransposed B is stored
  // row-major k x n, i.e. column-major n x k; transposed, it is stored n x k
  // row-major, i.e. column-major k x n, and cuBLAS transposes it back.
  cm.first.ptr = g.b;
  cm.first.transposed = g.trans_b;
  cm.first.rows = g.trans_b ? g.k : g.n;
  cm.first.cols = g.trans_b ? g.n : g.k;
  cm.first.ld = g.ldb;
  cm.first.batch_stride = g.stride_b;
  // Second operand: our A, op(A) is m x k row-major.
  cm.second.ptr = g.a;
  cm.second.transposed = g.trans_a;
  cm.second.rows = g.trans_a ? g.m : g.k;
  cm.second.cols = g.trans_a ? g.k : g.m;
  cm.second.ld = g.lda;
  cm.second.batch_stride = g.stride_a;
  cm.d = g.c;
  cm.ldd = g.ldc;
  cm.stride_d = g.stride_c;
  cm.batch = g.batch;
  return cm;
}

// Element (i, j) of a stored column-major matrix after its op, as cuBLAS reads it.
inline int64_t column_major_index(const ColumnMajorOperand& op, int64_t i, int64_t j) {
  return op.transposed ? j + i * op.ld : i + j * op.ld;
}

}  // namespace fg::cuda
