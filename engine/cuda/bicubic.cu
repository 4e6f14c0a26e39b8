// Bicubic resize of (N, C, H, W) planes with PyTorch's semantics: the checks
// and the launch of the kernel in bicubic_kernels.cuh.
#include "engine/cuda/bicubic_kernels.cuh"
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernels.h"

namespace fg::cuda {

using namespace bicubic_detail;

void bicubic_resize(const Tensor& x, const Tensor& out, bool align_corners) {
  FG_CHECK(x.dim() == 4 && out.dim() == 4 && x.is_contiguous() && out.is_contiguous(),
           "bicubic_resize: needs contiguous (N, C, H, W) tensors");
  FG_CHECK(x.dtype() == out.dtype(), "bicubic_resize: dtypes differ");
  FG_CHECK(x.size(0) == out.size(0) && x.size(1) == out.size(1),
           "bicubic_resize: batch and channels must match");
  if (out.numel() == 0) return;
  FG_CHECK(x.numel() > 0, "bicubic_resize: empty input");
  const int64_t planes = x.size(0) * x.size(1);
  FG_CUDA_DISPATCH_FLOATING(x.dtype(), "bicubic_resize", [&] {
    bicubic_kernel<scalar_t><<<grid_for(out.numel(), kThreads), kThreads, 0, stream()>>>(
        static_cast<const scalar_t*>(x.data_ptr()), static_cast<scalar_t*>(out.data_ptr()), planes,
        x.size(2), x.size(3), out.size(2), out.size(3), align_corners);
  });
  FG_CUDA_LAUNCH_CHECK("bicubic_resize");
}

}  // namespace fg::cuda
