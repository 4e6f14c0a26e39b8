// Copy with dtype conversion, fill and where over strided tensors, with the CPU
// backend's conversion rules (engine/cpu/elementwise.cpp): the checks, the
// choice of path and the launches; the functors and the any-to-any kernel are
// in copy_kernels.cuh.
#include <cstring>

#include "engine/cuda/copy_kernels.cuh"
#include "engine/cuda/elementwise.cuh"
#include "engine/cuda/kernels.h"

namespace fg::cuda {

using namespace copy_detail;

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

// Fast paths for the conversions a mixed-precision step does many times.
template <class To, class From>
bool try_convert_fast(const Tensor& src, const Tensor& dst) {
  if (src.dtype() != DTypeOf<From>::value || dst.dtype() != DTypeOf<To>::value) return false;
  using DevTo = std::conditional_t<std::is_same_v<To, BFloat16>, bf16, To>;
  using DevFrom = std::conditional_t<std::is_same_v<From, BFloat16>, bf16, From>;
  launch_map<DevTo, DevFrom>("copy", Convert<DevTo, DevFrom>{}, dst, src);
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
      launch_map<U, U>("copy", Identity<U>{}, dst, src);
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
    launch_map<U>("fill", Constant<U>{static_cast<U>(bits)}, dst);
  });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  FG_CHECK(cond.dtype() == DType::Bool, "where: condition must be bool");
  FG_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), "where: dtypes differ");
  FG_CHECK(cond.shape() == out.shape() && a.shape() == out.shape() && b.shape() == out.shape(),
           "where: operands must be broadcast to the output's shape");
  dispatch_element_size(out.element_size(), "where", [&](auto tag) {
    using U = decltype(tag);
    launch_map<U, bool, U, U>("where", Select<U>{}, out, cond, a, b);
  });
}

}  // namespace fg::cuda
