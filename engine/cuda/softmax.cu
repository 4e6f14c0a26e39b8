// Softmax and log-softmax on CUDA: checks, dtype dispatch and the launches of
// the kernels in softmax_kernels.cuh.
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernels.h"
#include "engine/cuda/softmax_kernels.cuh"

namespace fg::cuda {

namespace {

using namespace softmax_detail;

dim3 column_grid(int64_t outer, int64_t inner) {
  FG_CHECK(ceil_div(inner, kColumnWidth) <= INT32_MAX, "softmax: inner size ", inner, " too large");
  return column_launch_grid(outer, inner);
}

template <class T, bool Log>
void softmax_launch(const T* x, T* y, int64_t outer, int64_t n, int64_t inner) {
  if (inner == 1) {
    const RowLaunch launch = row_launch(outer, n);
    if (!launch.block_per_row) {
      softmax_rows_warp<T, Log><<<launch.grid, launch.threads, 0, stream()>>>(x, y, outer, n);
    } else {
      softmax_rows_block<T, Log><<<launch.grid, launch.threads, 0, stream()>>>(x, y, outer, n);
    }
  } else {
    softmax_columns<T, Log>
        <<<column_grid(outer, inner), dim3(kColumnWidth, kColumnDepth), 0, stream()>>>(x, y, outer,
                                                                                       n, inner);
  }
  FG_CUDA_LAUNCH_CHECK(Log ? "log_softmax" : "softmax");
}

template <class T, bool Log>
void softmax_backward_launch(const T* y, const T* g, T* gx, int64_t outer, int64_t n,
                             int64_t inner) {
  if (inner == 1) {
    const RowLaunch launch = row_launch(outer, n);
    if (!launch.block_per_row) {
      softmax_backward_rows_warp<T, Log>
          <<<launch.grid, launch.threads, 0, stream()>>>(y, g, gx, outer, n);
    } else {
      softmax_backward_rows_block<T, Log>
          <<<launch.grid, launch.threads, 0, stream()>>>(y, g, gx, outer, n);
    }
  } else {
    softmax_backward_columns<T, Log>
        <<<column_grid(outer, inner), dim3(kColumnWidth, kColumnDepth), 0, stream()>>>(
            y, g, gx, outer, n, inner);
  }
  FG_CUDA_LAUNCH_CHECK(Log ? "log_softmax backward" : "softmax backward");
}

}  // namespace

void softmax(const Tensor& x, const Tensor& out, int64_t outer, int64_t n, int64_t inner,
             bool log) {
  FG_CHECK(x.is_contiguous() && out.is_contiguous() && x.dtype() == out.dtype(),
           "softmax: needs contiguous tensors of one dtype");
  FG_CHECK(x.numel() == outer * n * inner, "softmax: sizes do not match the tensor");
  if (x.numel() == 0) return;
  FG_CUDA_DISPATCH_FLOATING(x.dtype(), "softmax", [&] {
    const auto* xp = static_cast<const scalar_t*>(x.data_ptr());
    auto* yp = static_cast<scalar_t*>(out.data_ptr());
    if (log)
      softmax_launch<scalar_t, true>(xp, yp, outer, n, inner);
    else
      softmax_launch<scalar_t, false>(xp, yp, outer, n, inner);
  });
}

void softmax_backward(const Tensor& y, const Tensor& grad, const Tensor& grad_input, int64_t outer,
                      int64_t n, int64_t inner, bool log) {
  FG_CHECK(y.is_contiguous() && grad.is_contiguous() && grad_input.is_contiguous(),
           "softmax backward: needs contiguous tensors");
  FG_CHECK(y.dtype() == grad.dtype() && y.dtype() == grad_input.dtype(),
           "softmax backward: dtypes differ (", dtype_name(y.dtype()), ", ",
           dtype_name(grad.dtype()), ", ", dtype_name(grad_input.dtype()), ")");
  if (y.numel() == 0) return;
  FG_CUDA_DISPATCH_FLOATING(y.dtype(), "softmax backward", [&] {
    const auto* yp = static_cast<const scalar_t*>(y.data_ptr());
    const auto* gp = static_cast<const scalar_t*>(grad.data_ptr());
    auto* gxp = static_cast<scalar_t*>(grad_input.data_ptr());
    if (log)
      softmax_backward_launch<scalar_t, true>(yp, gp, gxp, outer, n, inner);
    else
      softmax_backward_launch<scalar_t, false>(yp, gp, gxp, outer, n, inner);
  });
}

}  // namespace fg::cuda
