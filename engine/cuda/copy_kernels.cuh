// The functors and the kernel behind copy, fill and where (copy_fill.cu),
// with the CPU backend's conversion rules (engine/cpu/elementwise.cpp): the
// typed conversions of the fast paths (run by the elementwise map kernels),
// and a strided copy between any two dtypes chosen at run time.
//
// Written against the CUDA subset of the tests' host emulation, which compiles
// this header for the host; copy_fill.cu holds the checks and the launches.
#pragma once

#include <cstdint>
#include <type_traits>

#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernel_header.cuh"
#include "engine/cuda/strided_indexer.h"
#include "engine/dtype.h"

namespace fg::cuda::copy_detail {

// The functors go with the kernels: a kernel instantiated with one is named
// apart between the two builds.
FG_KERNELS_BEGIN

template <class T>
struct Identity {
  __device__ T operator()(T v) const { return v; }
};

template <class To, class From>
struct Convert {
  __device__ To operator()(From v) const { return convert<To>(v); }
};

template <class T>
struct Constant {
  T value;
  __device__ T operator()() const { return value; }
};

template <class T>
struct Select {
  __device__ T operator()(bool c, T a, T b) const { return c ? a : b; }
};

// ---- conversion between any two dtypes chosen at run time ----
// A value is carried as int64 when its source is integral (or bool) and as
// double when it is floating; both hold every source value exactly, and each
// destination converts from it as the CPU's convert<To, From> does.
struct Scalar {
  bool integral;
  int64_t i;
  double f;
};

__device__ __forceinline__ Scalar load_scalar(const void* base, int64_t index, DType type) {
  Scalar s{false, 0, 0.0};
  switch (type) {
    case DType::Float32:
      s.f = static_cast<const float*>(base)[index];
      break;
    case DType::Float64:
      s.f = static_cast<const double*>(base)[index];
      break;
    case DType::BFloat16:
      s.f = __bfloat162float(static_cast<const bf16*>(base)[index]);
      break;
    case DType::Float16:
      s.f = __half2float(static_cast<const f16*>(base)[index]);
      break;
    case DType::Int32:
      s.integral = true;
      s.i = static_cast<const int32_t*>(base)[index];
      break;
    case DType::Int64:
      s.integral = true;
      s.i = static_cast<const int64_t*>(base)[index];
      break;
    case DType::UInt8:
      s.integral = true;
      s.i = static_cast<const uint8_t*>(base)[index];
      break;
    case DType::Bool:
      s.integral = true;
      s.i = static_cast<const bool*>(base)[index] ? 1 : 0;
      break;
  }
  return s;
}

template <class To>
__device__ __forceinline__ To from_scalar(const Scalar& s) {
  if constexpr (std::is_same_v<To, bool>) {
    return s.integral ? s.i != 0 : s.f != 0.0;
  } else if constexpr (std::is_same_v<To, bf16> || std::is_same_v<To, f16>) {
    // CPU: To(static_cast<float>(v)) from the source type.
    const float v = s.integral ? static_cast<float>(s.i) : static_cast<float>(s.f);
    return convert<To>(v);
  } else {
    return s.integral ? static_cast<To>(s.i) : static_cast<To>(s.f);
  }
}

__device__ __forceinline__ void store_scalar(void* base, int64_t index, DType type,
                                             const Scalar& s) {
  switch (type) {
    case DType::Float32:
      static_cast<float*>(base)[index] = from_scalar<float>(s);
      break;
    case DType::Float64:
      static_cast<double*>(base)[index] = from_scalar<double>(s);
      break;
    case DType::BFloat16:
      static_cast<bf16*>(base)[index] = from_scalar<bf16>(s);
      break;
    case DType::Float16:
      static_cast<f16*>(base)[index] = from_scalar<f16>(s);
      break;
    case DType::Int32:
      static_cast<int32_t*>(base)[index] = from_scalar<int32_t>(s);
      break;
    case DType::Int64:
      static_cast<int64_t*>(base)[index] = from_scalar<int64_t>(s);
      break;
    case DType::UInt8:
      static_cast<uint8_t*>(base)[index] = from_scalar<uint8_t>(s);
      break;
    case DType::Bool:
      static_cast<bool*>(base)[index] = from_scalar<bool>(s);
      break;
  }
}

__global__ void convert_strided(void* out, DType out_type, const void* in, DType in_type,
                                StridedIndexer<2> ix) {
  for (int64_t i = global_thread(); i < ix.numel; i += grid_threads()) {
    int64_t off[2];
    ix.offsets(i, off);
    store_scalar(out, off[0], out_type, load_scalar(in, off[1], in_type));
  }
}

FG_KERNELS_END

}  // namespace fg::cuda::copy_detail
