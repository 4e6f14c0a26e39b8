// Dropout without a mask tensor on CUDA: checks, dtype dispatch and the
// launches of the kernels in dropout_kernels.cuh.
#include <initializer_list>

#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/dropout_kernels.cuh"
#include "engine/cuda/kernels.h"

namespace fg::cuda {

namespace {

using namespace dropout_detail;

template <class T>
bool all_aligned(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (!is_aligned<4>(static_cast<const T*>(p))) return false;
  return true;
}

dim3 grid_of(int64_t n) { return dim3(static_cast<unsigned>(grid_for((n + 3) / 4, kThreads))); }

// dst = (Relu ? max(src, 0) : src) times the draw's keep factor; also plain
// dropout's backward (src the gradient).
template <class T, bool Relu>
void launch_dropout(const T* src, T* dst, int64_t n, const DropoutArgs& a) {
  dropout_kernel<T, Relu><<<grid_of(n), kThreads, 0, stream()>>>(
      src, dst, n, a.seed, a.offset, a.offset_base, static_cast<float>(a.p), a.scale<compute_t<T>>(),
      all_aligned<T>({src, dst}));
}

}  // namespace

void dropout(const Tensor& x, const Tensor& out, const DropoutArgs& a) {
  FG_CHECK(x.is_contiguous() && out.is_contiguous() && x.dtype() == out.dtype() &&
               x.numel() == out.numel(),
           "dropout: needs contiguous tensors of one dtype and size");
  const int64_t n = x.numel();
  if (n == 0) return;
  FG_CUDA_DISPATCH_FLOATING(x.dtype(), "dropout", [&] {
    const auto* src = static_cast<const scalar_t*>(x.data_ptr());
    auto* dst = static_cast<scalar_t*>(out.data_ptr());
    if (a.relu)
      launch_dropout<scalar_t, true>(src, dst, n, a);
    else
      launch_dropout<scalar_t, false>(src, dst, n, a);
  });
  FG_CUDA_LAUNCH_CHECK(a.relu ? "relu_dropout" : "dropout");
}

void dropout_backward(const Tensor& grad, const Tensor& out, const Tensor& grad_input,
                      const DropoutArgs& a) {
  FG_CHECK(grad.is_contiguous() && grad_input.is_contiguous() &&
               grad.dtype() == grad_input.dtype() && grad.numel() == grad_input.numel(),
           "dropout backward: needs contiguous tensors of one dtype and size");
  FG_CHECK(!a.relu || (out.defined() && out.is_contiguous() && out.dtype() == grad.dtype() &&
                       out.numel() == grad.numel()),
           "relu_dropout backward: needs the forward's output, contiguous, of the gradient's "
           "dtype and size");
  const int64_t n = grad.numel();
  if (n == 0) return;
  FG_CUDA_DISPATCH_FLOATING(grad.dtype(), "dropout backward", [&] {
    const auto* g = static_cast<const scalar_t*>(grad.data_ptr());
    auto* gx = static_cast<scalar_t*>(grad_input.data_ptr());
    if (a.relu) {
      const auto* y = static_cast<const scalar_t*>(out.data_ptr());
      dropout_backward_by_output_kernel<scalar_t><<<grid_of(n), kThreads, 0, stream()>>>(
          g, y, gx, n, a.scale<compute_t<scalar_t>>(), all_aligned<scalar_t>({g, y, gx}));
    } else {
      launch_dropout<scalar_t, false>(g, gx, n, a);  // the same draw applied to the gradient
    }
  });
  FG_CUDA_LAUNCH_CHECK(a.relu ? "relu_dropout backward" : "dropout backward");
}

}  // namespace fg::cuda
