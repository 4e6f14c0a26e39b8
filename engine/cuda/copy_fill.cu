// Copy with dtype conversion, fill and where over strided tensors, with the CPU
// backend's conversion rules (engine/cpu/elementwise.cpp).
#include <cstring>

#include "engine/cuda/elementwise.cuh"
#include "engine/cuda/kernels.h"

namespace fg::cuda {

namespace {

// Copies and selections that do not look at values move bit patterns of the
// element's size.
template <class F>
void dispatch_element_size(size_t size, const char* op, F f) {
  switch (size) {
    case 1:
      f(uint8_t{});
      break;
    case 2:
      f(uint16_t{});
      break;
    case 4:
      f(uint32_t{});
      break;
    case 8:
      f(uint64_t{});
      break;
    default:
      FG_CHECK(false, op, ": unsupported element size ", size);
  }
}

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

// Fast paths for the conversions a mixed-precision step does many times.
template <class To, class From>
bool try_convert_fast(const Tensor& src, const Tensor& dst) {
  if (src.dtype() != DTypeOf<From>::value || dst.dtype() != DTypeOf<To>::value) return false;
  using DevTo = std::conditional_t<std::is_same_v<To, BFloat16>, bf16, To>;
  using DevFrom = std::conditional_t<std::is_same_v<From, BFloat16>, bf16, From>;
  launch_map1<DevTo, DevFrom>("copy", src, dst, Convert<DevTo, DevFrom>{});
  return true;
}

template <class T>
T host_value(double v) {
  if constexpr (std::is_same_v<T, BFloat16> || std::is_same_v<T, Float16>) {
    return T(static_cast<float>(v));
  } else if constexpr (std::is_same_v<T, bool>) {
    return v != 0.0;
  } else {
    return static_cast<T>(v);
  }
}

}  // namespace

void copy(const Tensor& src, const Tensor& dst) {
  FG_CHECK(src.shape() == dst.shape(), "copy: shapes ", shape_str(src.shape()), " and ",
           shape_str(dst.shape()), " differ");
  if (dst.numel() == 0) return;
  if (src.dtype() == dst.dtype()) {
    if (src.is_contiguous() && dst.is_contiguous()) {
      FG_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(),
                                    static_cast<size_t>(dst.numel()) * dst.element_size(),
                                    cudaMemcpyDeviceToDevice, stream()));
      return;
    }
    dispatch_element_size(dst.element_size(), "copy", [&](auto tag) {
      using U = decltype(tag);
      launch_map1<U, U>("copy", src, dst, Identity<U>{});
    });
    return;
  }
  if (try_convert_fast<BFloat16, float>(src, dst) || try_convert_fast<float, BFloat16>(src, dst) ||
      try_convert_fast<double, float>(src, dst) || try_convert_fast<float, double>(src, dst))
    return;
  const auto ix = make_indexer<2>(dst.shape(), {&dst, &src});
  convert_strided<<<launch_grid(ix.numel), kElementwiseThreads, 0, stream()>>>(
      dst.data_ptr(), dst.dtype(), src.data_ptr(), src.dtype(), ix);
  FG_CUDA_LAUNCH_CHECK("copy");
}

void fill(const Tensor& dst, double value) {
  if (dst.numel() == 0) return;
  // The value's bit pattern in dst's dtype, converted on the host as the CPU does.
  uint64_t bits = 0;
  FG_DISPATCH_ALL(dst.dtype(), "fill", [&] {
    const scalar_t v = host_value<scalar_t>(value);
    std::memcpy(&bits, &v, sizeof(v));
  });
  dispatch_element_size(dst.element_size(), "fill", [&](auto tag) {
    using U = decltype(tag);
    launch_map0<U>("fill", dst, Constant<U>{static_cast<U>(bits)});
  });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  FG_CHECK(cond.dtype() == DType::Bool, "where: condition must be bool");
  FG_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), "where: dtypes differ");
  FG_CHECK(cond.shape() == out.shape() && a.shape() == out.shape() && b.shape() == out.shape(),
           "where: operands must be broadcast to the output's shape");
  dispatch_element_size(out.element_size(), "where", [&](auto tag) {
    using U = decltype(tag);
    launch_map3<U, bool, U, U>("where", cond, a, b, out, Select<U>{});
  });
}

}  // namespace fg::cuda
