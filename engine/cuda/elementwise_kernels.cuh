// Elementwise map kernels over 0 to 3 inputs and one output, and the
// host-side choice of their path.
//
// Two paths: "flat", when the output is contiguous and every input is either
// contiguous or a single broadcast value (the common case: a grid-stride loop,
// with aligned vector accesses of up to 16 bytes per operand when every pointer
// allows it), and "strided", for any other views (a StridedIndexer turns the
// linear index into per-operand offsets). The functor gets and returns storage
// types (it converts to its compute type itself).
//
// Written against the CUDA subset of the tests' host emulation, which compiles
// this header for the host; elementwise.cuh holds the launchers.
#pragma once

#include <algorithm>

#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernel_header.cuh"
#include "engine/cuda/strided_indexer.h"

namespace fg::cuda {

constexpr int kElementwiseThreads = 256;

// Elements per vector access: 16 bytes of the widest operand, at most 8.
template <class... Ts>
constexpr int vector_width() {
  constexpr size_t widest = std::max({sizeof(Ts)...});
  constexpr size_t n = 16 / widest;
  return n > 8 ? 8 : (n < 1 ? 1 : static_cast<int>(n));
}

template <class T>
struct FlatIn {
  const T* ptr;
  bool broadcast;  // one value for every element
};

template <int VEC, class T>
__device__ __forceinline__ void load_vec(const FlatIn<T>& in, int64_t vec_index, T (&values)[VEC]) {
  if (in.broadcast) {
    const T v = in.ptr[0];
#pragma unroll
    for (int k = 0; k < VEC; ++k) values[k] = v;
  } else {
    const Vec<T, VEC> loaded = reinterpret_cast<const Vec<T, VEC>*>(in.ptr)[vec_index];
#pragma unroll
    for (int k = 0; k < VEC; ++k) values[k] = loaded.v[k];
  }
}

template <class T>
__device__ __forceinline__ T load_one(const FlatIn<T>& in, int64_t i) {
  return in.broadcast ? in.ptr[0] : in.ptr[i];
}

template <int VEC, class R>
__device__ __forceinline__ void store_vec(R* out, int64_t vec_index, const R (&values)[VEC]) {
  Vec<R, VEC> v;
#pragma unroll
  for (int k = 0; k < VEC; ++k) v.v[k] = values[k];
  reinterpret_cast<Vec<R, VEC>*>(out)[vec_index] = v;
}

// ---------------------------------------------------------------- kernels

FG_KERNELS_BEGIN

template <int VEC, class R, class F>
__global__ void map0_flat(R* out, int64_t n, bool vectorized, F f) {
  const int64_t step = grid_threads();
  int64_t tail = 0;
  if (vectorized) {
    const int64_t nvec = n / VEC;
    for (int64_t v = global_thread(); v < nvec; v += step) {
      R r[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) r[k] = f();
      store_vec<VEC>(out, v, r);
    }
    tail = nvec * VEC;
  }
  for (int64_t i = tail + global_thread(); i < n; i += step) out[i] = f();
}

template <class R, class F>
__global__ void map0_strided(R* out, StridedIndexer<1> ix, F f) {
  for (int64_t i = global_thread(); i < ix.numel; i += grid_threads()) {
    int64_t off[1];
    ix.offsets(i, off);
    out[off[0]] = f();
  }
}

template <int VEC, class R, class A, class F>
__global__ void map1_flat(R* out, FlatIn<A> a, int64_t n, bool vectorized, F f) {
  const int64_t step = grid_threads();
  int64_t tail = 0;
  if (vectorized) {
    const int64_t nvec = n / VEC;
    for (int64_t v = global_thread(); v < nvec; v += step) {
      A av[VEC];
      load_vec<VEC>(a, v, av);
      R r[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) r[k] = f(av[k]);
      store_vec<VEC>(out, v, r);
    }
    tail = nvec * VEC;
  }
  for (int64_t i = tail + global_thread(); i < n; i += step) out[i] = f(load_one(a, i));
}

template <class R, class A, class F>
__global__ void map1_strided(R* out, const A* a, StridedIndexer<2> ix, F f) {
  for (int64_t i = global_thread(); i < ix.numel; i += grid_threads()) {
    int64_t off[2];
    ix.offsets(i, off);
    out[off[0]] = f(a[off[1]]);
  }
}

template <int VEC, class R, class A, class B, class F>
__global__ void map2_flat(R* out, FlatIn<A> a, FlatIn<B> b, int64_t n, bool vectorized, F f) {
  const int64_t step = grid_threads();
  int64_t tail = 0;
  if (vectorized) {
    const int64_t nvec = n / VEC;
    for (int64_t v = global_thread(); v < nvec; v += step) {
      A av[VEC];
      B bv[VEC];
      load_vec<VEC>(a, v, av);
      load_vec<VEC>(b, v, bv);
      R r[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) r[k] = f(av[k], bv[k]);
      store_vec<VEC>(out, v, r);
    }
    tail = nvec * VEC;
  }
  for (int64_t i = tail + global_thread(); i < n; i += step)
    out[i] = f(load_one(a, i), load_one(b, i));
}

template <class R, class A, class B, class F>
__global__ void map2_strided(R* out, const A* a, const B* b, StridedIndexer<3> ix, F f) {
  for (int64_t i = global_thread(); i < ix.numel; i += grid_threads()) {
    int64_t off[3];
    ix.offsets(i, off);
    out[off[0]] = f(a[off[1]], b[off[2]]);
  }
}

template <int VEC, class R, class A, class B, class C, class F>
__global__ void map3_flat(R* out, FlatIn<A> a, FlatIn<B> b, FlatIn<C> c, int64_t n, bool vectorized,
                          F f) {
  const int64_t step = grid_threads();
  int64_t tail = 0;
  if (vectorized) {
    const int64_t nvec = n / VEC;
    for (int64_t v = global_thread(); v < nvec; v += step) {
      A av[VEC];
      B bv[VEC];
      C cv[VEC];
      load_vec<VEC>(a, v, av);
      load_vec<VEC>(b, v, bv);
      load_vec<VEC>(c, v, cv);
      R r[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) r[k] = f(av[k], bv[k], cv[k]);
      store_vec<VEC>(out, v, r);
    }
    tail = nvec * VEC;
  }
  for (int64_t i = tail + global_thread(); i < n; i += step)
    out[i] = f(load_one(a, i), load_one(b, i), load_one(c, i));
}

template <class R, class A, class B, class C, class F>
__global__ void map3_strided(R* out, const A* a, const B* b, const C* c, StridedIndexer<4> ix,
                             F f) {
  for (int64_t i = global_thread(); i < ix.numel; i += grid_threads()) {
    int64_t off[4];
    ix.offsets(i, off);
    out[off[0]] = f(a[off[1]], b[off[2]], c[off[3]]);
  }
}

FG_KERNELS_END

// ---------------------------------------------------------------- the path

// The flat path applies when the output is contiguous (stride 1 once merged) and
// every input is contiguous or broadcast.
template <int N>
bool flat_layout(const StridedIndexer<N>& ix) {
  if (ix.ndim == 0) return true;
  return ix.is_flat() && ix.strides[0][0] == 1;
}

template <int VEC, class T>
bool vector_ok(const FlatIn<T>& in) {
  return in.broadcast || is_aligned<VEC>(in.ptr);
}

// How a map runs: the flat path (vectorized when VEC > 1 and every operand's
// pointer allows VEC-wide accesses) or the strided one, and the work items a
// grid of kElementwiseThreads-thread blocks covers (vectors plus the tail, or
// elements).
struct MapPlan {
  bool flat, vectorized;
  int64_t work;
};

template <int VEC, int N>
MapPlan map_plan(const StridedIndexer<N>& ix, bool pointers_allow_vectors) {
  MapPlan p;
  p.flat = flat_layout(ix);
  p.vectorized = p.flat && VEC > 1 && pointers_allow_vectors;
  p.work = p.vectorized ? ix.numel / VEC + VEC : ix.numel;
  return p;
}

}  // namespace fg::cuda
