// Dropout without a mask tensor (Backend::dropout and dropout_backward): the
// keep decisions are the Philox words of dropout_mask (element i: word i % 4 of
// philox4x32(i / 4, offset, seed)), evaluated where they are used, so the
// forward reads x and writes y, and the backward reads the gradient and writes
// the input's: no mask is stored between them. relu_dropout's backward reads
// the forward's output instead (kept and positive = output > 0), so it needs no
// Philox at all.
//
// One thread per Philox block of four elements; with `vector` (every pointer
// aligned to four elements) the four move in one access. Products in float
// (double for double), rounded once, as the CPU's x * mask.
//
// Written against the CUDA subset of the tests' host emulation, which compiles
// this header for the host; dropout.cu holds the checks and the launches.
#pragma once

#include <cstdint>

#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernel_header.cuh"
#include "engine/philox.h"

namespace fg::cuda::dropout_detail {
FG_KERNELS_BEGIN

constexpr int kThreads = 256;

// What element i's value is multiplied by, given its Philox word: scale when
// kept, else 0.
template <class C>
__device__ __forceinline__ C keep_factor(uint32_t word, float threshold, C scale) {
  return philox_keeps(word, threshold) ? scale : C(0);
}

// Elements [first, first + count) of p, count <= 4.
template <class T>
__device__ __forceinline__ void load4(const T* p, int64_t first, int count, bool vector,
                                      T (&v)[4]) {
  if (vector && count == 4) {
    const Vec<T, 4> q = *reinterpret_cast<const Vec<T, 4>*>(p + first);
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = q.v[k];
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k)  // fixed indices keep v in registers
      if (k < count) v[k] = p[first + k];
  }
}

template <class T>
__device__ __forceinline__ void store4(T* p, int64_t first, int count, bool vector,
                                       const T (&v)[4]) {
  if (vector && count == 4) {
    Vec<T, 4> q;
#pragma unroll
    for (int k = 0; k < 4; ++k) q.v[k] = v[k];
    *reinterpret_cast<Vec<T, 4>*>(p + first) = q;
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (k < count) p[first + k] = v[k];
  }
}

// out[i] = (Relu ? max(x[i], 0) : x[i]) * (keep_i ? scale : 0). Also the
// backward of plain dropout, with the gradient as x. offset_base: see
// philox_offset_at (null outside a CUDA graph).
template <class T, bool Relu>
__global__ void dropout_kernel(const T* x, T* out, int64_t n, uint64_t seed, uint64_t offset,
                               const uint64_t* offset_base, float threshold, compute_t<T> scale,
                               bool vector) {
  using C = compute_t<T>;
  offset = philox_offset_at(offset, offset_base);
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = global_thread(); b < blocks; b += grid_threads()) {
    const Philox4 r = philox4x32(static_cast<uint64_t>(b), offset, seed);
    const int64_t first = b * 4;
    const int count = n - first < 4 ? static_cast<int>(n - first) : 4;
    T v[4]{};
    load4(x, first, count, vector, v);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      C c = convert<C>(v[k]);
      if (Relu) c = c > C(0) ? c : C(0);
      v[k] = convert<T>(c * keep_factor(r.v[k], threshold, scale));
    }
    store4(out, first, count, vector, v);
  }
}

// relu_dropout's backward: gx[i] = (out[i] > 0 ? g[i] : 0) * scale, as the CPU.
template <class T>
__global__ void dropout_backward_by_output_kernel(const T* g, const T* out, T* gx, int64_t n,
                                                  compute_t<T> scale, bool vector) {
  using C = compute_t<T>;
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = global_thread(); b < blocks; b += grid_threads()) {
    const int64_t first = b * 4;
    const int count = n - first < 4 ? static_cast<int>(n - first) : 4;
    T gv[4]{}, yv[4]{};
    load4(g, first, count, vector, gv);
    load4(out, first, count, vector, yv);
#pragma unroll
    for (int k = 0; k < 4; ++k)
      gv[k] = convert<T>((convert<C>(yv[k]) > C(0) ? convert<C>(gv[k]) : C(0)) * scale);
    store4(gx, first, count, vector, gv);
  }
}

FG_KERNELS_END
}  // namespace fg::cuda::dropout_detail
