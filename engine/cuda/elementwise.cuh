// The launcher of the elementwise map kernels (elementwise_kernels.cuh) over
// tensors: run_map picks the flat or the strided path from the operands' layout.
#pragma once

#include <algorithm>

#include "engine/cuda/elementwise_kernels.cuh"

namespace fg::cuda {

inline int64_t launch_grid(int64_t work) {
  return grid_for(std::max<int64_t>(work, 1), kElementwiseThreads);
}

// run_map's launch on the process's stream.
struct StreamLaunch {
  template <class Kernel, class... Args>
  void operator()(int64_t work, Kernel kernel, const Args&... args) const {
    kernel<<<launch_grid(work), kElementwiseThreads, 0, stream()>>>(args...);
  }
};

// out = f(in...) elementwise (element types R and In..., inputs broadcast to
// out's shape); op names the operation in errors.
template <class R, class... In, class F, class... Tensors>
void launch_map(const char* op, F f, const Tensor& out, const Tensors&... in) {
  run_map<R, In...>(StreamLaunch{}, f, out, in...);
  FG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace fg::cuda
