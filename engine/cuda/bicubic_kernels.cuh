// The bicubic resize kernel of bicubic.cu, with PyTorch's semantics as the
// CPU kernel (engine/cpu/kernels.cpp) computes them, from the same weights
// and source coordinates (engine/bicubic_weights.h); taps clamped to the border.
// One thread per output element, arithmetic in the CPU's type (float for
// bfloat16), the CPU's association (a horizontal pass per row, then vertical).
//
// Written against the CUDA subset of the tests' host emulation, which compiles
// this header for the host; bicubic.cu holds the checks and the launch.
#pragma once

#include <cstdint>

#include "engine/bicubic_weights.h"
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernel_header.cuh"

namespace fg::cuda::bicubic_detail {

constexpr int kThreads = 256;

FG_KERNELS_BEGIN

__device__ __forceinline__ int64_t clamp_index(int64_t i, int64_t size) {
  return i < 0 ? 0 : (i >= size ? size - 1 : i);
}

template <class T>
__global__ void bicubic_kernel(const T* x, T* out, int64_t planes, int64_t h, int64_t w, int64_t oh,
                               int64_t ow, bool align_corners) {
  using C = compute_t<T>;
  const int64_t total = planes * oh * ow;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t ox = idx % ow, oy = (idx / ow) % oh, plane = idx / (ow * oh);
    const C real_x = source_index<C>(ox, w, ow, align_corners);
    const C real_y = source_index<C>(oy, h, oh, align_corners);
    const C floor_x = floor(real_x), floor_y = floor(real_y);
    C wx[4], wy[4];
    cubic_coefficients(real_x - floor_x, wx);
    cubic_coefficients(real_y - floor_y, wy);
    const int64_t x0 = static_cast<int64_t>(floor_x) - 1, y0 = static_cast<int64_t>(floor_y) - 1;
    const T* src = x + plane * h * w;
    C acc = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const T* row = src + clamp_index(y0 + k, h) * w;
      // Same association as the CPU: a horizontal pass per row, then vertical.
      const C horizontal = convert<C>(row[clamp_index(x0, w)]) * wx[0] +
                           convert<C>(row[clamp_index(x0 + 1, w)]) * wx[1] +
                           convert<C>(row[clamp_index(x0 + 2, w)]) * wx[2] +
                           convert<C>(row[clamp_index(x0 + 3, w)]) * wx[3];
      acc += horizontal * wy[k];
    }
    out[idx] = convert<T>(acc);
  }
}

FG_KERNELS_END

}  // namespace fg::cuda::bicubic_detail
