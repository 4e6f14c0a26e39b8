// Device-side helpers shared by the CUDA kernels: element types and their
// conversions (matching the CPU's), vector accesses, warp and block reductions,
// and dtype dispatch.
// Device code only needs the element types; the runtime and the backend's
// context are left out under the host emulation of the tests, which brings its
// own built-ins (and is included first).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#if !defined(FGMOE_CUDA_EMULATION)
#include <cuda_runtime.h>
#endif

#include <cstdint>
#include <type_traits>

#if !defined(FGMOE_CUDA_EMULATION)
#include "engine/cuda/context.h"
#endif

namespace fg::cuda {

using bf16 = __nv_bfloat16;
using f16 = __half;

// 16-bit floats are stored as such and computed in float.
template <class T>
struct ComputeType {
  using type = T;
};
template <>
struct ComputeType<bf16> {
  using type = float;
};
template <>
struct ComputeType<f16> {
  using type = float;
};
template <class T>
using compute_t = typename ComputeType<T>::type;

// Accumulators for sums: float for every float type narrower than double.
template <class T>
struct AccumType {
  using type = float;
};
template <>
struct AccumType<double> {
  using type = double;
};
template <>
struct AccumType<int64_t> {
  using type = int64_t;
};
template <class T>
using accum_t = typename AccumType<T>::type;

// Conversion between element types with the CPU backend's rules: the 16-bit
// floats through float (round to nearest even), bool as != 0, else static_cast.
template <class To, class From>
__host__ __device__ __forceinline__ To convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<From, bf16>) {
    return convert<To>(__bfloat162float(v));
  } else if constexpr (std::is_same_v<From, f16>) {
    return convert<To>(__half2float(v));
  } else if constexpr (std::is_same_v<To, bf16>) {
    return __float2bfloat16_rn(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, f16>) {
    return __float2half_rn(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, bool>) {
    return v != From(0);
  } else {
    return static_cast<To>(v);
  }
}

// N elements moved by one aligned access (16 bytes for 4 floats or 8 bf16).
template <class T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <int N, class T>
__host__ __device__ __forceinline__ bool is_aligned(const T* ptr) {
  return reinterpret_cast<uintptr_t>(ptr) % (sizeof(T) * N) == 0;
}

constexpr unsigned kFullMask = 0xffffffffu;

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

template <class T>
__device__ __forceinline__ T warp_max(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const T other = __shfl_xor_sync(kFullMask, v, offset);
    v = (other > v || other != other) ? other : v;  // NaN wins, so every lane agrees
  }
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result. `scratch` holds 32 values; the call begins and ends with a
// barrier so consecutive calls may share it.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : T(0);
  v = warp_sum(v);
  __syncthreads();
  return v;
}

template <class T>
__device__ __forceinline__ T block_max(T v, T* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : scratch[0];
  v = warp_max(v);
  __syncthreads();
  return v;
}

// Grid-stride loop bounds in 64-bit.
__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

}  // namespace fg::cuda

// Element type dispatch for CUDA kernels (scalar_t is the device type).
#define FG_CUDA_CASE(ENUM, TYPE, ...) \
  case ENUM: {                        \
    using scalar_t = TYPE;            \
    __VA_ARGS__();                    \
    break;                            \
  }

// float32, float64 and bfloat16: the types CUDA computes in.
#define FG_CUDA_DISPATCH_FLOATING(dtype, name, ...)                              \
  switch (dtype) {                                                               \
    FG_CUDA_CASE(::fg::DType::Float32, float, __VA_ARGS__)                       \
    FG_CUDA_CASE(::fg::DType::Float64, double, __VA_ARGS__)                      \
    FG_CUDA_CASE(::fg::DType::BFloat16, ::fg::cuda::bf16, __VA_ARGS__)           \
    default:                                                                     \
      FG_CHECK(false, name, ": dtype ", ::fg::dtype_name(dtype),                 \
               " is not supported on CUDA (float32, bfloat16 and float64 are)"); \
  }

#define FG_CUDA_DISPATCH_ALL(dtype, name, ...)                         \
  switch (dtype) {                                                     \
    FG_CUDA_CASE(::fg::DType::Float32, float, __VA_ARGS__)             \
    FG_CUDA_CASE(::fg::DType::Float64, double, __VA_ARGS__)            \
    FG_CUDA_CASE(::fg::DType::BFloat16, ::fg::cuda::bf16, __VA_ARGS__) \
    FG_CUDA_CASE(::fg::DType::Float16, ::fg::cuda::f16, __VA_ARGS__)   \
    FG_CUDA_CASE(::fg::DType::Int32, int32_t, __VA_ARGS__)             \
    FG_CUDA_CASE(::fg::DType::Int64, int64_t, __VA_ARGS__)             \
    FG_CUDA_CASE(::fg::DType::UInt8, uint8_t, __VA_ARGS__)             \
    FG_CUDA_CASE(::fg::DType::Bool, bool, __VA_ARGS__)                 \
    default:                                                           \
      FG_CHECK(false, name, ": unknown dtype");                        \
  }

namespace fg::cuda::math {

// float and double overloads with the accurate (non-intrinsic) functions, so
// results stay within an ulp or two of the CPU's.
__device__ __forceinline__ float exp(float x) { return ::expf(x); }
__device__ __forceinline__ double exp(double x) { return ::exp(x); }
__device__ __forceinline__ float log(float x) { return ::logf(x); }
__device__ __forceinline__ double log(double x) { return ::log(x); }
__device__ __forceinline__ float sqrt(float x) { return ::sqrtf(x); }
__device__ __forceinline__ double sqrt(double x) { return ::sqrt(x); }
__device__ __forceinline__ float tanh(float x) { return ::tanhf(x); }
__device__ __forceinline__ double tanh(double x) { return ::tanh(x); }
__device__ __forceinline__ float erf(float x) { return ::erff(x); }
__device__ __forceinline__ double erf(double x) { return ::erf(x); }
__device__ __forceinline__ float pow(float x, float y) { return ::powf(x, y); }
__device__ __forceinline__ double pow(double x, double y) { return ::pow(x, y); }
__device__ __forceinline__ float abs(float x) { return ::fabsf(x); }
__device__ __forceinline__ double abs(double x) { return ::fabs(x); }
#if defined(FGMOE_CUDA_EMULATION)
// The host's <cmath> declares isnan in std only.
__device__ __forceinline__ bool isnan(float x) { return std::isnan(x); }
__device__ __forceinline__ bool isnan(double x) { return std::isnan(x); }
#else
__device__ __forceinline__ bool isnan(float x) { return ::isnan(x); }
__device__ __forceinline__ bool isnan(double x) { return ::isnan(x); }
#endif

}  // namespace fg::cuda::math
