// Launchers of the elementwise map kernels (elementwise_kernels.cuh) over
// tensors: the operands' layout picks the flat or the strided path.
#pragma once

#include <algorithm>

#include "engine/cuda/elementwise_kernels.cuh"

namespace fg::cuda {

// ---------------------------------------------------------------- launchers

inline int64_t launch_grid(int64_t work) {
  return grid_for(std::max<int64_t>(work, 1), kElementwiseThreads);
}

template <class R, class F>
void launch_map0(const char* op, const Tensor& out, F f) {
  const auto ix = make_indexer<1>(out.shape(), {&out});
  if (ix.numel == 0) return;
  R* o = static_cast<R*>(out.data_ptr());
  constexpr int VEC = vector_width<R>();
  const MapPlan plan = map_plan<VEC>(ix, is_aligned<VEC>(o));
  const int64_t grid = launch_grid(plan.work);
  if (plan.flat)
    map0_flat<VEC><<<grid, kElementwiseThreads, 0, stream()>>>(o, ix.numel, plan.vectorized, f);
  else
    map0_strided<<<grid, kElementwiseThreads, 0, stream()>>>(o, ix, f);
  FG_CUDA_LAUNCH_CHECK(op);
}

template <class R, class A, class F>
void launch_map1(const char* op, const Tensor& a, const Tensor& out, F f) {
  const auto ix = make_indexer<2>(out.shape(), {&out, &a});
  if (ix.numel == 0) return;
  R* o = static_cast<R*>(out.data_ptr());
  const A* ap = static_cast<const A*>(a.data_ptr());
  constexpr int VEC = vector_width<R, A>();
  const FlatIn<A> fa{ap, ix.is_broadcast(1)};
  const MapPlan plan = map_plan<VEC>(ix, is_aligned<VEC>(o) && vector_ok<VEC>(fa));
  const int64_t grid = launch_grid(plan.work);
  if (plan.flat)
    map1_flat<VEC>
        <<<grid, kElementwiseThreads, 0, stream()>>>(o, fa, ix.numel, plan.vectorized, f);
  else
    map1_strided<<<grid, kElementwiseThreads, 0, stream()>>>(o, ap, ix, f);
  FG_CUDA_LAUNCH_CHECK(op);
}

template <class R, class A, class B, class F>
void launch_map2(const char* op, const Tensor& a, const Tensor& b, const Tensor& out, F f) {
  const auto ix = make_indexer<3>(out.shape(), {&out, &a, &b});
  if (ix.numel == 0) return;
  R* o = static_cast<R*>(out.data_ptr());
  const A* ap = static_cast<const A*>(a.data_ptr());
  const B* bp = static_cast<const B*>(b.data_ptr());
  constexpr int VEC = vector_width<R, A, B>();
  const FlatIn<A> fa{ap, ix.is_broadcast(1)};
  const FlatIn<B> fb{bp, ix.is_broadcast(2)};
  const MapPlan plan =
      map_plan<VEC>(ix, is_aligned<VEC>(o) && vector_ok<VEC>(fa) && vector_ok<VEC>(fb));
  const int64_t grid = launch_grid(plan.work);
  if (plan.flat)
    map2_flat<VEC>
        <<<grid, kElementwiseThreads, 0, stream()>>>(o, fa, fb, ix.numel, plan.vectorized, f);
  else
    map2_strided<<<grid, kElementwiseThreads, 0, stream()>>>(o, ap, bp, ix, f);
  FG_CUDA_LAUNCH_CHECK(op);
}

template <class R, class A, class B, class C, class F>
void launch_map3(const char* op, const Tensor& a, const Tensor& b, const Tensor& c,
                 const Tensor& out, F f) {
  const auto ix = make_indexer<4>(out.shape(), {&out, &a, &b, &c});
  if (ix.numel == 0) return;
  R* o = static_cast<R*>(out.data_ptr());
  const A* ap = static_cast<const A*>(a.data_ptr());
  const B* bp = static_cast<const B*>(b.data_ptr());
  const C* cp = static_cast<const C*>(c.data_ptr());
  constexpr int VEC = vector_width<R, A, B, C>();
  const FlatIn<A> fa{ap, ix.is_broadcast(1)};
  const FlatIn<B> fb{bp, ix.is_broadcast(2)};
  const FlatIn<C> fc{cp, ix.is_broadcast(3)};
  const MapPlan plan = map_plan<VEC>(ix, is_aligned<VEC>(o) && vector_ok<VEC>(fa) &&
                                             vector_ok<VEC>(fb) && vector_ok<VEC>(fc));
  const int64_t grid = launch_grid(plan.work);
  if (plan.flat)
    map3_flat<VEC>
        <<<grid, kElementwiseThreads, 0, stream()>>>(o, fa, fb, fc, ix.numel, plan.vectorized, f);
  else
    map3_strided<<<grid, kElementwiseThreads, 0, stream()>>>(o, ap, bp, cp, ix, f);
  FG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace fg::cuda
