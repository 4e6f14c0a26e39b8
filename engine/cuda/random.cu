// Uniform, normal and dropout-mask draws on CUDA: the checks and the launches
// of the kernels in random_kernels.cuh (the CPU's Philox stream, element by
// element).
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernels.h"
#include "engine/cuda/random_kernels.cuh"

namespace fg::cuda {

using namespace random_detail;

void uniform(const Tensor& out, uint64_t seed, uint64_t offset, double low, double high) {
  FG_CHECK(out.is_contiguous(), "uniform: needs a contiguous tensor");
  const int64_t n = out.numel();
  if (n == 0) return;
  FG_CUDA_DISPATCH_FLOATING(out.dtype(), "uniform", [&] {
    uniform_kernel<scalar_t><<<grid_for(philox_blocks(n), 256), 256, 0, stream()>>>(
        static_cast<scalar_t*>(out.data_ptr()), n, seed, offset, low, high);
  });
  FG_CUDA_LAUNCH_CHECK("uniform");
}

void normal(const Tensor& out, uint64_t seed, uint64_t offset, double mean, double std) {
  FG_CHECK(out.is_contiguous(), "normal: needs a contiguous tensor");
  const int64_t n = out.numel();
  if (n == 0) return;
  FG_CUDA_DISPATCH_FLOATING(out.dtype(), "normal", [&] {
    normal_kernel<scalar_t><<<grid_for(philox_blocks(n), 256), 256, 0, stream()>>>(
        static_cast<scalar_t*>(out.data_ptr()), n, seed, offset, mean, std);
  });
  FG_CUDA_LAUNCH_CHECK("normal");
}

void dropout_mask(const Tensor& mask, double p, uint64_t seed, uint64_t offset) {
  FG_CHECK(mask.is_contiguous(), "dropout: needs a contiguous mask");
  const int64_t n = mask.numel();
  if (n == 0) return;
  const float threshold = static_cast<float>(p);
  FG_CUDA_DISPATCH_FLOATING(mask.dtype(), "dropout", [&] {
    // The scale rounded from double to the mask's type, as the CPU does
    // (bfloat16 through float).
    scalar_t scale;
    if constexpr (std::is_same_v<scalar_t, double>)
      scale = 1.0 / (1.0 - p);
    else
      scale = convert<scalar_t>(static_cast<float>(1.0 / (1.0 - p)));
    dropout_mask_kernel<scalar_t><<<grid_for(philox_blocks(n), 256), 256, 0, stream()>>>(
        static_cast<scalar_t*>(mask.data_ptr()), n, seed, offset, threshold, scale);
  });
  FG_CUDA_LAUNCH_CHECK("dropout");
}

}  // namespace fg::cuda
