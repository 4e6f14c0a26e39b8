// Elementwise map kernels over any number of inputs and one output, and the
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
// this header for the host; elementwise.cuh launches through run_map.
#pragma once

#include <algorithm>
#include <array>
#include <utility>

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

// VEC consecutive values of an input (one value repeated when it is broadcast).
template <int VEC, class T>
__device__ __forceinline__ Vec<T, VEC> load_vec(const FlatIn<T>& in, int64_t vec_index) {
  if (!in.broadcast) return reinterpret_cast<const Vec<T, VEC>*>(in.ptr)[vec_index];
  Vec<T, VEC> values;
  const T v = in.ptr[0];
#pragma unroll
  for (int k = 0; k < VEC; ++k) values.v[k] = v;
  return values;
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

// f applied lane by lane to VEC values of each input.
template <int VEC, class R, class F, class... In>
__device__ __forceinline__ void apply_vec(R (&r)[VEC], F& f, const Vec<In, VEC>&... in) {
#pragma unroll
  for (int k = 0; k < VEC; ++k) r[k] = f(in.v[k]...);
}

// f applied to the inputs at a strided element's offsets (off[0] is the output's).
template <class F, size_t... I, class... In>
__device__ __forceinline__ auto apply_at(F& f, const int64_t* off, std::index_sequence<I...>,
                                         const In*... in) {
  return f(in[off[I + 1]]...);
}

FG_KERNELS_BEGIN

// out[i] = f(in[i]...) for a contiguous output and contiguous or broadcast inputs;
// VEC elements a thread at a time when vectorized, then the tail one by one.
template <int VEC, class R, class F, class... In>
__global__ void map_flat(R* out, int64_t n, bool vectorized, F f, FlatIn<In>... in) {
  const int64_t step = grid_threads();
  int64_t tail = 0;
  if (vectorized) {
    const int64_t nvec = n / VEC;
    for (int64_t v = global_thread(); v < nvec; v += step) {
      R r[VEC];
      apply_vec<VEC>(r, f, load_vec<VEC>(in, v)...);
      store_vec<VEC>(out, v, r);
    }
    tail = nvec * VEC;
  }
  for (int64_t i = tail + global_thread(); i < n; i += step) out[i] = f(load_one(in, i)...);
}

// The same over any views: the indexer gives each operand's offset.
template <class R, class F, class... In>
__global__ void map_strided(R* out, StridedIndexer<1 + sizeof...(In)> ix, F f, const In*... in) {
  for (int64_t i = global_thread(); i < ix.numel; i += grid_threads()) {
    int64_t off[1 + sizeof...(In)];
    ix.offsets(i, off);
    out[off[0]] = apply_at(f, off, std::index_sequence_for<In...>{}, in...);
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

// ---------------------------------------------------------------- over tensors

template <class A, int N>
FlatIn<A> flat_in(const Tensor& t, const StridedIndexer<N>& ix, int operand) {
  return FlatIn<A>{static_cast<const A*>(t.data_ptr()), ix.is_broadcast(operand)};
}

template <class R, class... In, class F, class Launch, size_t... I>
MapPlan run_map_operands(const Launch& launch, F f, const Tensor& out,
                         const std::array<const Tensor*, sizeof...(In)>& in,
                         std::index_sequence<I...>) {
  constexpr int N = 1 + sizeof...(In);
  constexpr int VEC = vector_width<R, In...>();
  const StridedIndexer<N> ix = make_indexer<N>(out.shape(), {&out, in[I]...});
  R* o = static_cast<R*>(out.data_ptr());
  const MapPlan plan = map_plan<VEC>(
      ix, is_aligned<VEC>(o) && (vector_ok<VEC>(flat_in<In>(*in[I], ix, I + 1)) && ...));
  if (ix.numel == 0) return plan;
  if (plan.flat)
    launch(plan.work, map_flat<VEC, R, F, In...>, o, ix.numel, plan.vectorized, f,
           flat_in<In>(*in[I], ix, I + 1)...);
  else
    launch(plan.work, map_strided<R, F, In...>, o, ix, f,
           static_cast<const In*>(in[I]->data_ptr())...);
  return plan;
}

// out = f(in...) elementwise, inputs broadcast to out's shape, element types R
// and In... (storage types). Picks the path (map_plan) and calls
// launch(work, kernel, kernel arguments...), which launches the kernel over
// `work` items; returns the plan (nothing is launched for an empty output).
template <class R, class... In, class F, class Launch, class... Tensors>
MapPlan run_map(const Launch& launch, F f, const Tensor& out, const Tensors&... in) {
  static_assert(sizeof...(Tensors) == sizeof...(In), "one tensor per input type");
  return run_map_operands<R, In...>(launch, f, out, {&in...}, std::index_sequence_for<In...>{});
}

}  // namespace fg::cuda
