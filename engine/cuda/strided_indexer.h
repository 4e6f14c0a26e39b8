// Element offsets of N operands that share one shape but not one layout (views,
// broadcasts with stride 0, transposes), as an elementwise CUDA kernel needs
// them. Built on the host, passed to kernels by value; plain C++ so that the
// tests check the index arithmetic on machines without a GPU.
#pragma once

#include <array>
#include <cstdint>

#include "engine/tensor.h"

#if defined(__CUDACC__)
#define FG_INDEXER_HD __host__ __device__ __forceinline__
#else
#define FG_INDEXER_HD inline
#endif

namespace fg::cuda {

constexpr int kMaxIndexerDims = 16;

template <int N>
struct StridedIndexer {
  int ndim = 0;
  int64_t numel = 1;
  int64_t sizes[kMaxIndexerDims];       // outermost first, size-1 dimensions dropped
  int64_t strides[N][kMaxIndexerDims];  // in elements of each operand

  // Offsets (in elements) of linear index i (row-major over the shape) in every operand.
  FG_INDEXER_HD void offsets(int64_t i, int64_t (&out)[N]) const {
    for (int op = 0; op < N; ++op) out[op] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t size = sizes[d];
      const int64_t coord = i % size;
      i /= size;
      for (int op = 0; op < N; ++op) out[op] += coord * strides[op][d];
    }
  }

  // True when every operand is either contiguous or one broadcast value, so a
  // flat loop over [0, numel) addresses them as ptr[i] or ptr[0].
  bool is_flat() const {
    if (ndim == 0) return true;
    if (ndim != 1) return false;
    for (int op = 0; op < N; ++op)
      if (strides[op][0] != 0 && strides[op][0] != 1) return false;
    return true;
  }
  bool is_broadcast(int op) const { return ndim == 0 || strides[op][0] == 0; }
};

// Operands must all have `shape` (broadcasting already applied as stride 0).
// Adjacent dimensions are merged where every operand allows it, so contiguous
// tensors become one flat dimension.
template <int N>
StridedIndexer<N> make_indexer(const Shape& shape, const std::array<const Tensor*, N>& operands) {
  FG_CHECK(shape.size() <= static_cast<size_t>(kMaxIndexerDims), "tensors of more than ",
           kMaxIndexerDims, " dimensions are not supported");
  StridedIndexer<N> ix;
  int64_t sizes[kMaxIndexerDims];
  int64_t strides[N][kMaxIndexerDims];
  int nd = 0;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    const int64_t size = shape[d];
    ix.numel *= size;
    if (size == 1) continue;
    if (nd > 0) {
      bool mergeable = true;
      for (int op = 0; op < N; ++op)
        if (operands[op]->strides()[d] != strides[op][nd - 1] * sizes[nd - 1]) mergeable = false;
      if (mergeable) {
        sizes[nd - 1] *= size;
        continue;
      }
    }
    sizes[nd] = size;
    for (int op = 0; op < N; ++op) strides[op][nd] = operands[op]->strides()[d];
    ++nd;
  }
  ix.ndim = nd;
  for (int i = 0; i < nd; ++i) {  // reverse into outermost-first order
    ix.sizes[i] = sizes[nd - 1 - i];
    for (int op = 0; op < N; ++op) ix.strides[op][i] = strides[op][nd - 1 - i];
  }
  return ix;
}

}  // namespace fg::cuda
