// Gradient clipping's multi-tensor passes on CUDA: checks, the launch plan and
// the launches of the kernels in multi_tensor_kernels.cuh.
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernels.h"
#include "engine/cuda/multi_tensor_kernels.cuh"

namespace fg::cuda {

namespace {

using namespace multi_tensor_detail;

constexpr int64_t kChunk = 65536;

void check_floats(const std::vector<Tensor>& xs, const char* name) {
  for (size_t i = 0; i < xs.size(); ++i)
    FG_CHECK(xs[i].is_contiguous() && xs[i].dtype() == DType::Float32 && xs[i].device().is_cuda(),
             name, ": tensor ", i, " of shape ", shape_str(xs[i].shape()),
             " must be a contiguous float32 CUDA tensor");
}

// Calls launch(batch, blocks, first_block) for each launch of the plan over xs.
template <class F>
void for_each_launch(const std::vector<Tensor>& xs, F launch) {
  std::vector<int64_t> numels;
  numels.reserve(xs.size());
  for (const Tensor& x : xs) numels.push_back(x.numel());
  int64_t first_block = 0;
  for (const MultiTensorLaunch& plan :
       plan_multi_tensor_launches(numels, kMaxTensors, kMaxBlocks, kChunk)) {
    const FloatBatch batch = make_batch(
        plan, [&](size_t i) { return static_cast<float*>(xs[i].data_ptr()); },
        [&](size_t i) { return xs[i].numel(); });
    const int blocks = static_cast<int>(plan.block_tensor.size());
    launch(batch, blocks, first_block);
    first_block += blocks;
  }
}

}  // namespace

void sum_squares_many(const std::vector<Tensor>& xs, const Tensor& out) {
  const char* name = "sum_squares_many";
  check_floats(xs, name);
  FG_CHECK(out.numel() == 1 && out.dtype() == DType::Float32 && out.device().is_cuda(), name,
           ": the result must be one float32 value on the GPU");
  int64_t chunks = 0;
  for (const Tensor& x : xs) chunks += (x.numel() + kChunk - 1) / kChunk;
  DeviceBuffer partials(static_cast<size_t>(std::max<int64_t>(chunks, 1)) * sizeof(double));
  double* partial = partials.as<double>();
  for_each_launch(xs, [&](const FloatBatch& batch, int blocks, int64_t first_block) {
    sum_squares_partials<<<blocks, kThreads, 0, stream()>>>(batch, kChunk, partial + first_block);
    FG_CUDA_LAUNCH_CHECK(name);
  });
  sum_partials<<<1, 256, 0, stream()>>>(partial, chunks, static_cast<float*>(out.data_ptr()));
  FG_CUDA_LAUNCH_CHECK(name);
}

void scale_many(const std::vector<Tensor>& xs, const Tensor& factor) {
  const char* name = "scale_many";
  check_floats(xs, name);
  FG_CHECK(factor.numel() == 1 && factor.dtype() == DType::Float32 && factor.device().is_cuda(),
           name, ": the factor must be one float32 value on the GPU");
  const float* f = static_cast<const float*>(factor.data_ptr());
  for_each_launch(xs, [&](const FloatBatch& batch, int blocks, int64_t) {
    scale_chunks<<<blocks, kThreads, 0, stream()>>>(batch, kChunk, f);
    FG_CUDA_LAUNCH_CHECK(name);
  });
}

}  // namespace fg::cuda
