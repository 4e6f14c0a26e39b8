// The uniform, normal and dropout-mask kernels of random.cu, with the shared
// Philox generator (engine/philox.h): element i takes word i % 4 of
// philox4x32(i / 4, offset, seed), as on the CPU. One thread evaluates one
// Philox block and writes its four elements. Dropout masks are bitwise the
// CPU's; uniform and normal values agree to the last bit or so (fused
// multiply-adds, logf/cosf/sinf).
//
// Written against the CUDA subset of the tests' host emulation, which compiles
// this header for the host; random.cu holds the checks and the launches.
#pragma once

#include <cstdint>
#include <type_traits>

#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernel_header.cuh"
#include "engine/philox.h"

namespace fg::cuda::random_detail {

// Philox blocks (of four elements) for n elements: the kernels' work items.
__host__ __device__ __forceinline__ int64_t philox_blocks(int64_t n) { return (n + 3) / 4; }

// A draw computed in double, stored as the CPU stores it: as is in double,
// else rounded once to float (then to T).
template <class T>
__device__ __forceinline__ void store_value(T* dst, double v) {
  if constexpr (std::is_same_v<T, double>)
    *dst = v;
  else
    *dst = convert<T>(static_cast<float>(v));
}

FG_KERNELS_BEGIN

template <class T>
__global__ void uniform_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset, double low,
                               double high) {
  const int64_t blocks = philox_blocks(n);
  for (int64_t b = global_thread(); b < blocks; b += grid_threads()) {
    const Philox4 r = philox4x32(static_cast<uint64_t>(b), offset, seed);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = b * 4 + k;
      if (i < n) {
        // Whether either compiler fuses the multiply-add is its choice, so values may
        // differ from the CPU's in the last bit of the double (masks never do).
        store_value(out + i,
                    low + (high - low) * static_cast<double>(philox_word_uniform(r.v[k])));
      }
    }
  }
}

template <class T>
__global__ void normal_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset, double mean,
                              double std) {
  const int64_t blocks = philox_blocks(n);
  for (int64_t b = global_thread(); b < blocks; b += grid_threads()) {
    const Philox4 r = philox4x32(static_cast<uint64_t>(b), offset, seed);
#pragma unroll
    for (int pair = 0; pair < 2; ++pair) {
      const int64_t i = b * 4 + pair * 2;
      if (i >= n) break;
      const float u1 = philox_word_uniform_nonzero(r.v[pair * 2]);
      const float u2 = philox_word_uniform(r.v[pair * 2 + 1]);
      const float radius = sqrtf(-2.0f * logf(u1));
      const float angle = 6.283185307179586f * u2;
      const double v0 = mean + std * static_cast<double>(radius * cosf(angle));
      const double v1 = mean + std * static_cast<double>(radius * sinf(angle));
      store_value(out + i, v0);
      if (i + 1 < n) store_value(out + i + 1, v1);
    }
  }
}

template <class T>
__global__ void dropout_mask_kernel(T* mask, int64_t n, uint64_t seed, uint64_t offset,
                                    float threshold, T scale) {
  const int64_t blocks = philox_blocks(n);
  const T zero = convert<T>(0.0f);
  for (int64_t b = global_thread(); b < blocks; b += grid_threads()) {
    const Philox4 r = philox4x32(static_cast<uint64_t>(b), offset, seed);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = b * 4 + k;
      if (i < n) mask[i] = philox_keeps(r.v[k], threshold) ? scale : zero;
    }
  }
}

FG_KERNELS_END
}  // namespace fg::cuda::random_detail
